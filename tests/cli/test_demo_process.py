"""`hongyan demo` as a newcomer runs it: console, API, sandbox and dispatcher in one process,
and the demo's messages reach final states through the sandbox over real SMPP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.cli.test_serve import _free_port


def test_demo_sends_through_the_sandbox(tmp_path: Path) -> None:
    port, smpp_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(HONGYAN_VAR_DIR=str(tmp_path / "var"), HONGYAN_SANDBOX_PORT=str(smpp_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hongyan.cli", "demo", "--port", str(port), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["url"].endswith(f":{port}/login") and info["password"]
        headers = {"Authorization": f"Bearer {info['api_key_note']}"}
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 40
        states: dict[int, str] = {}
        while time.monotonic() < deadline:
            try:
                states = {
                    i: httpx.get(f"{base}/messages/{i}", headers=headers, timeout=2).json()["state"]
                    for i in (1, 2, 3)
                }
            except (httpx.TransportError, KeyError):
                states = {}
            if states and all(
                s in ("delivered", "undelivered", "expired") for s in states.values()
            ):
                break
            time.sleep(0.3)
        assert states.get(3) == "undelivered", states  # the sandbox's 空号
        assert all(s in ("delivered", "undelivered", "expired") for s in states.values()), states
        shown = httpx.get(f"{base}/messages/3", headers=headers, timeout=2).json()
        assert shown["reason"] == "invalid_number" and shown["to"] == "139****0000"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
