"""The dispatcher process loop: sends what is queued, survives the carrier going away."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.dispatch import outbox, service
from hongyan.dispatch.outbox import NewMessage
from hongyan.errors import ConfigurationError
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants

CREDS = {"hongyan": "pw-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parse_smpp_url() -> None:
    spec = service.parse_smpp_url("smpp://hong%40yan:p%3Aw@127.0.0.1:2776")
    assert (spec.name, spec.kind, spec.secrets["password"]) == ("smpp", "smpp", "p:w")
    assert dict(spec.config) == {"host": "127.0.0.1", "port": 2776, "system_id": "hong@yan"}
    for bad in ["http://a:b@h:1", "smpp://h:1", "smpp://user@"]:
        with pytest.raises(ConfigurationError):
            service.parse_smpp_url(bad)


def test_loop_delivers_and_reconnects(runtime: Runtime) -> None:
    from hongyan.clock import SystemClock

    runtime.clock = SystemClock()  # the loop runs in real time
    with runtime.engine.begin() as conn:
        t = tenants.create_tenant(conn, runtime.clock, slug="tea", name="tea").id

    def put(text: str) -> int:
        with runtime.engine.begin() as conn:
            return outbox.enqueue(
                conn,
                runtime.clock,
                runtime.keyring,
                t,
                NewMessage("+8613812345678", text),
                max_parts=6,
            )[0]

    def state(mid: int) -> str:
        with runtime.engine.connect() as conn:
            return str(outbox.get(conn, t, mid)["state"])

    port = _free_port()
    cfg = service.parse_smpp_url(f"smpp://hongyan:pw-1@127.0.0.1:{port}")

    async def until(cond, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
        # Generous: on a loaded machine the reconnect and the receipt take their time; what is
        # tested is that they happen, not how fast.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cond():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("condition not reached")

    async def scenario() -> None:
        stop = asyncio.Event()
        first = put("one")
        loop = asyncio.create_task(service.run(runtime, stop, extra=[cfg], idle=0.05))
        await asyncio.sleep(0.3)  # no carrier yet: the loop keeps trying
        smsc = SandboxSmsc(SandboxConfig(port=port, credentials=CREDS))
        await smsc.start()
        await until(lambda: state(first) == "delivered")
        await smsc.stop()  # the carrier goes away
        second = put("two")
        await asyncio.sleep(0.3)
        smsc = SandboxSmsc(SandboxConfig(port=port, credentials=CREDS))
        await smsc.start()
        await until(lambda: state(second) == "delivered")
        stop.set()
        await asyncio.wait_for(loop, 10)
        await smsc.stop()

    asyncio.run(asyncio.wait_for(scenario(), 120))
