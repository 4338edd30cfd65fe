"""Fixtures for the client tests: real servers (beanq and the reference beanstalkd), an
in-process beanq on memory streams for trio's autojump clock, and a scripted fake server for
replies no real server can be made to send."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from beanq.dispatch import HostInfo, Hub
from beanq.server import StreamServer
from beanq.tubes import Engine
from tests.servers import ServerProcess, spawn_beanq, spawn_beanstalkd

KINDS = ("beanq", "beanstalkd")
_tube_numbers = itertools.count()


@attrs.frozen
class Server:
    kind: str
    host: str
    port: int
    proc: ServerProcess

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, tube: str) -> str:
        return f"beanstalk://{self.host}:{self.port}/{tube}"


@pytest.fixture(scope="session")
def beanq_server() -> Iterator[Server]:
    with spawn_beanq() as (host, port, proc):
        yield Server("beanq", host, port, proc)


@pytest.fixture(scope="session")
def beanstalkd_server() -> Iterator[Server]:
    with spawn_beanstalkd() as (host, port, proc):
        yield Server("beanstalkd", host, port, proc)


@pytest.fixture(scope="module")
def daemons() -> Iterator[list[str]]:
    """Two beanq processes for a module's pool tests: their addresses."""
    with contextlib.ExitStack() as stack:
        addresses = []
        for _ in range(2):
            host, port, _proc = stack.enter_context(spawn_beanq())
            addresses.append(f"{host}:{port}")
        yield addresses


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> Server:
    """Each test that takes ``server`` runs against beanq and against beanstalkd (skipped when
    beanstalkd is missing, failed instead in CI)."""
    result: Server = request.getfixturevalue(f"{request.param}_server")
    return result


@pytest.fixture
def tube(request: pytest.FixtureRequest) -> str:
    """A tube no other test touches, so tests can share one server process."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:150].strip("-")
    return f"t{next(_tube_numbers)}-{os.getpid()}-{stem}"


# --- in-process beanq on memory streams -----------------------------------------------------

HOST = HostInfo("test", 1, "host", "os", "arch", "0" * 16, lambda: (0.0, 0.0))


@attrs.define
class MemoryServer:
    """beanq's engine served over trio memory streams: connect() is a client ``connector``."""

    hub: Hub
    server: StreamServer
    nursery: trio.Nursery
    connections: int = 0

    async def connect(self) -> trio.abc.Stream:
        client, served = trio.testing.memory_stream_pair()
        self.connections += 1
        self.nursery.start_soon(self.server.handle, served)
        return client


@asynccontextmanager
async def memory_server() -> AsyncIterator[MemoryServer]:
    hub = Hub(Engine(trio.current_time()), HOST)
    server = StreamServer(hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run_timers)
        yield MemoryServer(hub, server, nursery)
        nursery.cancel_scope.cancel()


# --- a scripted fake server -----------------------------------------------------------------


@attrs.define
class FakeServer:
    """Accepts connections on loopback; for each command it receives it sends the next scripted
    answer (``None``: close the connection instead). Records the command lines it received."""

    answers: list[bytes | None]
    sock: socket.socket
    received: list[bytes] = attrs.Factory(list)
    connections: int = 0
    active: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return (host, port)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.active = conn
            with conn:
                self._talk(conn)
            self.active = None

    def _talk(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if line.startswith(b"put "):
                    size = int(line.split()[-1])
                    while len(buffer) < size + 2:
                        more = conn.recv(65536)
                        if not more:
                            return
                        buffer += more
                    buffer = buffer[size + 2 :]
                self.received.append(line)
                answer = self.answers.pop(0) if self.answers else None
                if answer is None:
                    return
                conn.sendall(answer)

    def stop(self) -> None:
        # shutdown() wakes a thread blocked in accept() or recv(); close() alone does not.
        for sock in (self.sock, self.active):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@contextlib.contextmanager
def fake_server(*answers: bytes | None) -> Iterator[FakeServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    fake = FakeServer(list(answers), sock)
    thread = threading.Thread(target=fake.serve, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stop()
        thread.join(5)
        assert not thread.is_alive()
