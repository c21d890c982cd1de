"""The standalone redirector's database process: lookups and click commits off the event loop.

``hongyan redirector`` answers HTTP on one core. Everything it asks of the database (the links
of codes missing from its cache, the group commit of its clicks) is done by a child process of
its own (``python -m hongyan.tracking.writer FD``) over a socket pair: the redirector sends a
batch (a list of codes, or of click rows) and awaits its answer; the child runs each batch in
one of ``WRITERS + 1`` threads, each on its own connection, and answers once the batch is
committed. So the driver's work, the ``COPY`` rows and the commits' waits use another core
instead of taking turns with the requests for the redirector's one (measured: a click cost
the redirector 124 µs with them in its own threads, on a core it did not share).

Frames are a 4-byte length and a pickle (both ends are this code, started together: the socket
pair is never exposed). A click is answered only after its batch's commit, as before, so a
crash of either process loses no answered click. The child runs in a session of its own and
ignores SIGINT and SIGTERM: it stops when the redirector's socket closes, after the batches it
holds (committed clicks nobody was told about are still clicks). The child killed, the
redirector fails the requests waiting on it (503: not claimed as stored) and starts another
child for the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger("hongyan.redirector.writer")

_HEAD = 4
MAX_FRAME = 256 * 1024 * 1024
CALL_TIMEOUT = 30.0  # seconds a batch may take before its requests answer 503
STARTUP_TIMEOUT = 60.0
RESTART_EVERY = 1.0


class WriterGone(RuntimeError):
    """The database process is not there (it died, or was never started)."""


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEAD, "big") + body


@dataclass
class _Child:
    """One child process and the calls sent to it: a child that dies fails only its own."""

    proc: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter
    calls: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None


class RemoteWriter:
    """The redirector's end: ``await call(kind, payload)`` runs ``kind`` (``load`` or
    ``store``) in the child and returns its result. The child is started at the server's
    startup and again after it died (at most once a second)."""

    def __init__(self, timeout: float = CALL_TIMEOUT) -> None:
        self.timeout = timeout
        self._child: _Child | None = None
        self._ids = itertools.count(1)
        self._starting: asyncio.Lock | None = None
        self._closing = False
        self._last_start = 0.0
        self._gone: list[subprocess.Popen[bytes]] = []  # dead children not yet waited for

    def _live(self) -> _Child | None:
        child = self._child
        if child is not None and not child.writer.is_closing():
            return child
        return None

    async def _ensure(self) -> _Child:
        child = self._live()
        if child is not None:
            return child
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            child = self._live()
            if child is not None:
                return child
            if self._closing:
                raise WriterGone("the redirector is stopping")
            self._reap_gone()
            wait = self._last_start + RESTART_EVERY - time.monotonic()
            if wait > 0:  # a child that dies at once is not restarted in a tight loop
                await asyncio.sleep(wait)
            self._last_start = time.monotonic()
            ours, theirs = socket.socketpair()
            try:
                proc = subprocess.Popen(  # noqa: S603 (our own module, our own interpreter)
                    [sys.executable, "-m", "hongyan.tracking.writer", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    env=os.environ.copy(),
                    # Its own session: a Ctrl-C or a SIGTERM to the redirector's process group
                    # does not stop it mid-batch; it stops when the redirector's socket closes.
                    start_new_session=True,
                )
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            try:
                reader, writer = await asyncio.open_unix_connection(sock=ours)
            except BaseException:
                ours.close()
                proc.kill()
                self._gone.append(proc)
                raise
            child = _Child(proc, writer)
            child.reader = asyncio.get_running_loop().create_task(self._answers(child, reader))
            self._child = child
            return child

    async def _answers(self, child: _Child, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(_HEAD)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                call_id, ok, result = pickle.loads(body)  # noqa: S301 (our own child's frames)
                future = child.calls.pop(call_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(result)
                else:
                    future.set_exception(RuntimeError(f"the click writer failed: {result}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            child.writer.close()
            if self._child is child:
                self._child = None
            calls, child.calls = child.calls, {}
            for future in calls.values():
                if not future.done():
                    future.set_exception(WriterGone("the click writer process stopped"))
            code = child.proc.poll()
            if not self._closing:
                if code is None:  # it ignores SIGTERM (see main)
                    log.warning("the click writer closed its socket; stopping it")
                    child.proc.kill()
                else:
                    log.warning("the click writer process exited with %s", code)
                self._gone.append(child.proc)

    def _reap_gone(self) -> None:
        self._gone = [p for p in self._gone if p.poll() is None]

    async def start(self) -> None:
        """Start the child at the server's startup and wait until it answers: a child that
        cannot open the database fails the startup rather than every click."""
        await asyncio.wait_for(self.call("ping", None), timeout=STARTUP_TIMEOUT)

    async def call(self, kind: str, payload: Any) -> Any:
        child = await self._ensure()
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child.calls[call_id] = future
        child.writer.write(_frame((call_id, kind, payload)))
        try:
            # A database that hangs fails the batch (its requests answer 503; the child may
            # still commit it later: a stored click nobody was told about) instead of
            # holding every click behind it.
            return await asyncio.wait_for(asyncio.shield(future), timeout=self.timeout)
        finally:
            child.calls.pop(call_id, None)

    async def close(self) -> None:
        """Stop the child once it has answered what it holds: the end of our side of the
        socket tells it to finish; its answers still arrive until it closes."""
        self._closing = True
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError, RuntimeError):
                child.writer.write_eof()
            if child.reader is not None:
                await asyncio.gather(child.reader, return_exceptions=True)
            await asyncio.get_running_loop().run_in_executor(None, _reap, child.proc)
        for proc in self._gone:
            await asyncio.get_running_loop().run_in_executor(None, _reap, proc)
        self._child, self._gone = None, []


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the child -------------------------------------------------------------------------------


def _handle(engine: Engine, kind: str, payload: Any) -> Any:
    from hongyan.tracking.clicks import store_rows
    from hongyan.tracking.redirector import load_links

    if kind == "ping":
        return True
    if kind == "load":
        return {code: info.as_tuple() for code, info in load_links(engine, payload).items()}
    if kind == "store":
        store_rows(engine, payload)
        return None
    raise ValueError(f"unknown request {kind!r}")


def serve(engine: Engine, sock: socket.socket, threads: int) -> None:
    """Answer the redirector's batches until it closes the socket, then finish and return."""
    lock = threading.Lock()
    stream = sock.makefile("rb")

    def work(call_id: int, kind: str, payload: Any) -> None:
        try:
            reply = (call_id, True, _handle(engine, kind, payload))
        except Exception as exc:  # answered as a failure: the requests get 503
            log.exception("a %s batch failed", kind)
            reply = (call_id, False, f"{type(exc).__name__}: {exc}")
        try:
            with lock:
                sock.sendall(_frame(reply))
        except OSError:
            pass  # the redirector is gone; what was committed stays committed

    with ThreadPoolExecutor(threads, thread_name_prefix="click-writer") as pool:
        while True:
            head = stream.read(_HEAD)
            if len(head) < _HEAD:
                break
            size = int.from_bytes(head, "big")
            if size > MAX_FRAME:
                raise ValueError("a frame larger than any batch")
            body = stream.read(size)
            if len(body) < size:
                break
            call_id, kind, payload = pickle.loads(body)  # noqa: S301 (our own parent's frames)
            pool.submit(work, call_id, kind, payload)


def main(argv: list[str]) -> None:
    from hongyan.logs import configure as configure_logs
    from hongyan.runtime import Runtime
    from hongyan.settings import get_settings
    from hongyan.tracking.clicks import WRITERS

    sock = socket.socket(fileno=int(argv[1]))
    # Stopped by the end of the redirector's socket, after the batches it holds, not by a
    # signal mid-commit (it runs in a session of its own; these only reach it if sent to it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logs()
    settings = get_settings()
    runtime = Runtime.create(settings, generate_secrets=settings.env != "production")
    try:
        serve(runtime.engine, sock, WRITERS + 1)  # the commits, and a lookup beside them
    finally:
        sock.close()
        runtime.close()


if __name__ == "__main__":
    main(sys.argv)
