"""Many idle or blocked connections, held open by the harness's main process.

Used for the memory-per-connection figure and for the flat-cost scenario (tubes kept alive
by watchers, reservers blocked on another tube). Connects go out in small batches so the
servers' accept backlogs never overflow, which would stall on 1 s SYN retransmits.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time

from bench.proto import HOST, Client, ProtocolError


def open_idle(port: int, n: int, timeout: float = 60.0, batch: int = 200) -> list[socket.socket]:
    """Open ``n`` TCP connections (handshake done); the caller closes them."""
    deadline = time.monotonic() + timeout
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            pending: dict[int, socket.socket] = {}
            ep = select.epoll()
            try:
                for _ in range(min(batch, n - len(socks))):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    rc = s.connect_ex((HOST, port))
                    if rc not in (0, errno.EINPROGRESS):
                        s.close()
                        raise OSError(rc, f"connect: {errno.errorcode.get(rc, rc)}")
                    pending[s.fileno()] = s
                    ep.register(s.fileno(), select.EPOLLOUT)
                while pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"opened {len(socks)} of {n} connections in {timeout}s")
                    for fd, _ in ep.poll(min(left, 1.0)):
                        s = pending.pop(fd)
                        ep.unregister(fd)
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            s.close()
                            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
                        socks.append(s)
            finally:
                ep.close()
                for s in pending.values():
                    s.close()
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


def send_and_expect(socks: list[socket.socket], command: bytes, lines: int, timeout: float) -> None:
    """Send ``command`` on every socket, then read ``lines`` reply lines from each.

    Used where the last command never answers (a blocked ``reserve``): the lines we wait for
    are those of the commands before it.
    """
    for s in socks:
        s.setblocking(True)
        s.sendall(command)
    deadline = time.monotonic() + timeout
    for s in socks:
        buf = b""
        while buf.count(b"\r\n") < lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from a held connection")
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                raise ProtocolError("server closed a held connection")
            buf += chunk
        if b"WATCHING" not in buf and b"USING" not in buf:
            raise ProtocolError(f"unexpected reply on a held connection: {buf[:80]!r}")


def wait_stat(
    port: int, key: str, want: int, tube: str | None = None, timeout: float = 30.0
) -> int:
    """Poll ``stats`` (or ``stats-tube``) until ``key`` reaches ``want``; return its value."""
    deadline = time.monotonic() + timeout
    value = -1
    with Client(port, timeout=timeout) as c:
        while time.monotonic() < deadline:
            value = int(c.stats(tube).get(key, -1))
            if value >= want:
                return value
            time.sleep(0.05)
    raise TimeoutError(f"{key} stayed at {value}, wanted {want}")


class TubeWatchers:
    """A few connections that together watch ``tubes`` tubes, keeping them all alive."""

    def __init__(self, port: int, tubes: int, conns: int = 10, prefix: str = "flat") -> None:
        self.clients: list[Client] = []
        try:
            per = -(-tubes // conns)
            for k in range(conns):
                names = range(k * per, min(tubes, (k + 1) * per))
                if not names:
                    break
                c = Client(port, timeout=60.0)
                self.clients.append(c)
                c.expect_all(
                    [b"watch %s-%d\r\n" % (prefix.encode(), i) for i in names], b"WATCHING"
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(OSError):
                c.close()
        self.clients.clear()
