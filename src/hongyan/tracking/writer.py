"""The standalone redirector's database process: lookups and click commits off the event loop.

``hongyan redirector`` answers HTTP on one core. Everything it asks of the database (the links
of codes missing from its cache, the group commit of its clicks) is done by a child process of
its own (``python -m hongyan.tracking.writer FD``) over a socket pair: the redirector sends a
batch (a list of codes, or of click rows) and awaits its answer; the child runs each batch in
one of :data:`~hongyan.tracking.clicks.WRITERS` threads, each on its own connection, and answers
once the batch is committed. So the driver's work, the ``COPY`` rows and the commits' waits use
another core instead of taking turns with the requests for the redirector's one (measured: a
click cost the redirector 124 µs with them in its own threads, on a core it did not share).

Frames are a 4-byte length and a pickle (both ends are this code, started together: the socket
pair is never exposed). A click is answered only after its batch's commit, as before, so a
crash of either process loses no answered click: the redirector killed, the child sees the
socket close, finishes the batches it holds (committed clicks nobody was told about are still
clicks) and exits; the child killed, the redirector fails the requests waiting on it (503: not
claimed as stored) and starts another child for the next batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger("hongyan.redirector.writer")

_HEAD = 4
MAX_FRAME = 256 * 1024 * 1024


class WriterGone(RuntimeError):
    """The database process is not there (it died, or was never started)."""


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEAD, "big") + body


class RemoteWriter:
    """The redirector's end: ``await call(kind, payload)`` runs ``kind`` (``load`` or
    ``store``) in the child and returns its result. The child is started on first use and
    again after it died."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._starting: asyncio.Lock | None = None
        self._closing = False

    async def _ensure(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            ours, theirs = socket.socketpair()
            self._proc = subprocess.Popen(  # noqa: S603 (our own module, our own interpreter)
                [sys.executable, "-m", "hongyan.tracking.writer", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=os.environ.copy(),
            )
            theirs.close()
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(self._answers(reader))
            return writer

    async def _answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(_HEAD)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                call_id, ok, result = pickle.loads(body)  # noqa: S301 (our own child's frames)
                future = self._calls.pop(call_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(result)
                else:
                    future.set_exception(RuntimeError(f"the click writer failed: {result}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            calls, self._calls = self._calls, {}
            for future in calls.values():
                if not future.done():
                    future.set_exception(WriterGone("the click writer process stopped"))
            if not self._closing and self._proc is not None and self._proc.poll() is None:
                log.warning("the click writer closed its socket; stopping it")
                self._proc.terminate()

    async def start(self) -> None:
        """Start the child now (at the server's startup) rather than on the first click."""
        await self._ensure()

    async def call(self, kind: str, payload: Any) -> Any:
        writer = await self._ensure()
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        writer.write(_frame((call_id, kind, payload)))
        return await future

    async def close(self) -> None:
        """Stop the child once it has answered what it holds."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            if self._reader_task is not None:
                await asyncio.gather(self._reader_task, return_exceptions=True)
        proc = self._proc
        if proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, _reap, proc)
        self._proc = None


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
