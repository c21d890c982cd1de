"""`hongyan serve` as a real process: migrate, start, answer /api/v1/health over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.sqlite_only
def test_serve_answers_health(tmp_path: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(HONGYAN_VAR_DIR=str(tmp_path / "var"), HONGYAN_DATABASE_URL=database_url)
    cli = [sys.executable, "-m", "hongyan.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = _free_port()
    proc = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("hongyan serve did not start")
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5)
        assert "/api/v1/health" in r.json()["paths"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
