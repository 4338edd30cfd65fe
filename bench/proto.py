"""Just enough of the beanstalkd text protocol for the harness's control connections.

The hot path in ``loadgen`` has its own inlined framing; this module serves the slow,
blocking side (stats probes, tube setup, idle connection holders) where clarity matters
more than speed. Every call has a timeout so a wedged server cannot hang the benchmark.
"""

from __future__ import annotations

import socket
import time

HOST = "127.0.0.1"
# Replies that carry a body after the header line: "<WORD> ... <bytes>\r\n<body>\r\n".
BODY_REPLIES = (b"RESERVED", b"FOUND", b"OK")


class ProtocolError(Exception):
    """The server said something the harness did not expect."""


def put_command(body: bytes, pri: int = 1024, delay: int = 0, ttr: int = 60) -> bytes:
    return b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body)


def make_body(size: int) -> bytes:
    """A printable body without CR or LF, so a framing bug shows up as a parse error."""
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size // len(pattern) + 1))[:size]


def split_replies(buf: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Cut complete replies off ``buf``: returns ([(header line, body)], rest)."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    n = len(buf)
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        line = buf[pos:eol]
        if line.startswith(BODY_REPLIES):
            size = int(line.rsplit(b" ", 1)[1])
            end = eol + 2 + size
            if end + 2 > n:
                break
            out.append((line, buf[eol + 2 : end]))
            pos = end + 2
        else:
            out.append((line, b""))
            pos = eol + 2
    return out, buf[pos:]


class Client:
    """A blocking connection with per-call deadlines, for setup and probes."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_replies(self, count: int) -> list[tuple[bytes, bytes]]:
        """Read exactly ``count`` replies, within the client's timeout overall."""
        deadline = time.monotonic() + self.timeout
        got: list[tuple[bytes, bytes]] = []
        while True:
            replies, self._buf = split_replies(self._buf)
            got.extend(replies)
            if len(got) >= count:
                if len(got) > count:
                    raise ProtocolError(f"more replies than requests: {got[count:][:3]!r}")
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {self.timeout}s for {count} replies, got {len(got)}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ProtocolError("server closed the connection")
            self._buf += chunk

    def call(self, command: bytes) -> tuple[bytes, bytes]:
        self.send(command)
        return self.read_replies(1)[0]

    def expect_all(self, commands: list[bytes], prefix: bytes) -> None:
        """Send ``commands`` pipelined and insist every reply starts with ``prefix``."""
        if not commands:
            return
        self.send(b"".join(commands))
        for line, _ in self.read_replies(len(commands)):
            if not line.startswith(prefix):
                raise ProtocolError(f"expected {prefix!r}, got {line!r}")

    def stats(self, tube: str | None = None) -> dict[str, str]:
        command = b"stats\r\n" if tube is None else b"stats-tube %s\r\n" % tube.encode()
        line, body = self.call(command)
        if not line.startswith(b"OK"):
            raise ProtocolError(f"stats: {line!r}")
        return parse_yaml_dict(body)


def parse_yaml_dict(body: bytes) -> dict[str, str]:
    """beanstalkd's stats bodies are flat ``key: value`` YAML; no YAML library needed."""
    out: dict[str, str] = {}
    for raw in body.decode("utf-8", "replace").splitlines():
        if ":" in raw and not raw.startswith("---"):
            key, _, value = raw.partition(":")
            out[key.strip()] = value.strip()
    return out
