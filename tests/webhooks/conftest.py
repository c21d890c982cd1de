"""Webhook test helpers: a real HTTP receiver on 127.0.0.1 that checks our signatures, and a
runtime that may deliver to loopback (HONGYAN_WEBHOOK_ALLOW_PRIVATE)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from hongyan.webhooks import service
from hongyan.webhooks.signing import HEADER, verify_signature
from tests.conftest import migrated


@pytest.fixture
def runtime(bare_runtime: Runtime) -> Runtime:
    """The shared runtime, migrated, allowed to deliver to loopback receivers."""
    migrated(bare_runtime)
    bare_runtime.settings = bare_runtime.settings.model_copy(update={"webhook_allow_private": True})
    return bare_runtime


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next status of ``script`` (then ``default``), and records
    every request with whether its signature verified against ``secret`` at ``now()``."""

    now: Callable[[], datetime]
    secret: str = ""
    script: list[int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        ok = verify_signature(self.secret, headers.get(HEADER.lower(), ""), body, self.now())
        with self.lock:
            self.received.append(Received(path, headers, body, ok))
            return self.script.pop(0) if self.script else self.default


@pytest.fixture
def receiver(runtime: Runtime) -> Iterator[Receiver]:
    rec = Receiver(now=runtime.clock.now)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = rec.answer(self.path, headers, body)
            reply = b"ok" if status < 300 else b"receiver says no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/sms"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tenant(runtime: Runtime, slug: str = "tea") -> int:
    with runtime.engine.begin() as conn:
        return tenants.create_tenant(conn, runtime.clock, slug=slug, name=slug).id


def add_endpoint(
    runtime: Runtime, tenant_id: int, url: str, events: list[str] | None = None
) -> service.Created:
    with runtime.engine.begin() as conn:
        return service.create(
            conn,
            runtime.clock,
            runtime.keyring,
            service.UrlPolicy.from_settings(runtime.settings),
            tenant_id,
            url=url,
            events=events or list(service.DEFAULT_EVENTS),
            actor="test",
        )
