"""`hongyan sandbox` runs a real SMSC that the ESME client can bind to and send through."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hongyan.channels.base import Inbound
from hongyan.channels.sandbox.smsc import read_record, reassemble_record
from hongyan.channels.smpp.client import Report, SmppClient, SmppConfig, SmppError
from hongyan.cli.main import app

LONG_TEXT = "【鸿雁茶饮】" + "春季新品上市，会员专享八折优惠，欢迎到店品尝。" * 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sandbox(port: int, *options: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HONGYAN_SANDBOX_PASSWORD": "pw-123"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hongyan.cli", "sandbox", "--port", str(port), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("sandbox did not start") from None
            time.sleep(0.1)


def _client(port: int, reports: list[Report], inbound: list[Inbound]) -> SmppClient:
    async def on_report(r: Report) -> None:
        reports.append(r)

    async def on_inbound(m: Inbound) -> None:
        inbound.append(m)

    return SmppClient(
        SmppConfig("127.0.0.1", port, "hongyan", "pw-123", source_addr="10690"),
        on_report=on_report,
        on_inbound=on_inbound,
    )


async def _until(cond: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_sandbox_command_serves_smpp() -> None:
    port = _free_port()
    proc = _start_sandbox(
        port,
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
    )
    try:

        async def scenario() -> list[Report]:
            reports: list[Report] = []
            client = _client(port, reports, [])
            await client.connect()
            await client.submit("+8613812345678", "【鸿雁茶饮】您好")
            await client.submit("+8613900000000", "【鸿雁茶饮】您好")
            await _until(lambda: len(reports) == 2, 5)
            await client.close()
            return reports

        reports = asyncio.run(asyncio.wait_for(scenario(), 15))
        assert sorted(r.stat for r in reports) == ["DELIVRD", "UNDELIV"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sandbox_record_can_be_read_by_another_process_even_after_a_kill(
    tmp_path: Path,
) -> None:
    record = tmp_path / "carrier.jsonl"
    port = _free_port()
    proc = _start_sandbox(
        port,
        "--receipt-delay",
        "0",
        "--no-receipt",
        "0",
        "--delivered",
        "1",
        "--undeliverable",
        "0",
        "--expired",
        "0",
        "--rejected",
        "0",
        "--record",
        str(record),
        "--reply-rate",
        "1",
        "--reply-text",
        "退订",
        "--late-rate",
        "1",
        "--late-delay",
        "0.05",
    )
    try:
        reports: list[Report] = []
        inbound: list[Inbound] = []

        async def scenario() -> list[str]:
            client = _client(port, reports, inbound)
            await client.connect()
            ids = await client.submit("+8613812345678", "Hello")
            ids += await client.submit("+8613812345679", LONG_TEXT)
            await _until(lambda: len(reports) == 3 and len(inbound) == 2)
            await client.close()
            return ids

        ids = asyncio.run(asyncio.wait_for(scenario(), 20))
        rows = read_record(record)  # the sandbox is still running
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert read_record(record) == rows  # everything was on disk already
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert [r["message_id"] for r in rows if r["kind"] == "submit"] == ids
    assert [m.text for m in reassemble_record(rows)] == ["Hello", LONG_TEXT]
    assert sorted(r["message_id"] for r in rows if r["kind"] == "receipt") == sorted(
        r.message_id for r in reports
    )
    replies = [r for r in rows if r["kind"] == "reply"]
    assert sorted(r["source"] for r in replies) == ["8613812345678", "8613812345679"]
    assert {r["text"] for r in replies} == {m.text for m in inbound} == {"退订"}
    assert sorted(m.source for m in inbound) == ["+8613812345678", "+8613812345679"]
    late = [r["message_id"] for r in rows if r["kind"] == "fault" and r["fault"] == "late"]
    assert sorted(late) == sorted(ids)


def test_sandbox_command_refuses_with_the_configured_status() -> None:
    port = _free_port()
    proc = _start_sandbox(port, "--error-rate", "1", "--error-status", "0x45")
    try:

        async def scenario() -> None:
            client = _client(port, [], [])
            await client.connect()
            with pytest.raises(SmppError) as err:
                await client.submit("+8613812345678", "hi")
            assert err.value.status == 0x45 and not err.value.transient
            await client.close()

        asyncio.run(asyncio.wait_for(scenario(), 15))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--late-rate", "2"], 1, "late_rate"),
        (["--drop-every", "1"], 1, "drop_every"),
        (["--malformed-kind", "noise"], 1, "malformed_kind"),
        (["--error-status", "0"], 1, "error_status"),
        (["--error-status", "zz"], 2, "not a number"),
        (["--record", "{tmp}/missing/dir/record.jsonl"], 1, "cannot open the record file"),
    ],
)
def test_sandbox_command_bad_options_are_clear_errors(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["sandbox", "--port", str(_free_port()), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (tmp_path / "missing").exists()
