"""`hongyan sandbox` runs a real SMSC that the ESME client can bind to and send through."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

from hongyan.channels.smpp.client import Report, SmppClient, SmppConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sandbox_command_serves_smpp() -> None:
    port = _free_port()
    env = {**os.environ, "HONGYAN_SANDBOX_PASSWORD": "pw-123"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hongyan.cli",
            "sandbox",
            "--port",
            str(port),
            "--receipt-delay",
            "0",
            "--delivered",
            "1",
            "--undeliverable",
            "0",
            "--expired",
            "0",
            "--rejected",
            "0",
            "--no-receipt",
            "0",
            "--invalid",
            "8613900000000",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "sandbox did not start"
                time.sleep(0.1)

        async def scenario() -> list[Report]:
            reports: list[Report] = []

            async def on_report(r: Report) -> None:
                reports.append(r)

            client = SmppClient(
                SmppConfig("127.0.0.1", port, "hongyan", "pw-123"), on_report=on_report
            )
            await client.connect()
            await client.submit("+8613812345678", "【鸿雁茶饮】您好")
            await client.submit("+8613900000000", "【鸿雁茶饮】您好")
            for _ in range(500):
                if len(reports) == 2:
                    break
                await asyncio.sleep(0.01)
            await client.close()
            return reports

        reports = asyncio.run(asyncio.wait_for(scenario(), 15))
        assert sorted(r.stat for r in reports) == ["DELIVRD", "UNDELIV"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
