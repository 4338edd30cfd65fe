"""Starting and stopping the two servers under test, each fresh, each on its own port and dir.

Both sides get identical treatment (same flags, same file-descriptor limit, same readiness
probe) so that any difference in the figures belongs to the servers, not to the harness.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import vm_rss_kb
from bench.proto import HOST, Client

# Ports are taken from below the kernel's ephemeral range and never reused in one run, so a
# fresh server never meets TIME_WAIT leftovers of the previous one's client sockets.
_PORT_FIRST = 21000
_PORT_LAST = 31999
_next_port = _PORT_FIRST + (os.getpid() * 37) % 1000
WANTED_NOFILE = 65536


@dataclass(frozen=True)
class ServerKind:
    """How to launch one implementation; ``argv`` gets ``-l/-p`` and extra flags appended."""

    name: str
    argv: tuple[str, ...]


def beanstalkd_kind() -> ServerKind | None:
    path = shutil.which("beanstalkd") or (
        "/usr/bin/beanstalkd" if os.path.exists("/usr/bin/beanstalkd") else None
    )
    return ServerKind("beanstalkd", (path,)) if path else None


def beanq_kind() -> ServerKind:
    return ServerKind("beanq", (sys.executable, "-m", "beanq"))


def free_port() -> int:
    """Next port in our private range that nothing listens on."""
    global _next_port
    for _ in range(_PORT_LAST - _PORT_FIRST):
        port = _next_port
        _next_port = _PORT_FIRST if _next_port >= _PORT_LAST else _next_port + 1
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in the benchmark range")


def raise_nofile(wanted: int = WANTED_NOFILE) -> int:
    """Raise this process's RLIMIT_NOFILE as far as allowed; return the soft limit reached.

    Children started afterwards inherit it, which is how both servers get the same limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """Runs in the child between fork and exec.

    Own process group, so a Ctrl-C reaches the harness (which then stops the server in
    order) rather than killing servers mid-measurement; the kernel kills the server if the
    harness itself dies, so no run leaves a daemon behind; and the same high fd limit for
    both servers.
    """
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    raise_nofile()


@dataclass
class Server:
    """One running server process with its port, temp dir and log file."""

    kind: ServerKind
    flags: tuple[str, ...] = ()
    binlog: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    tmpdir: Path | None = None
    start_ns: int = 0
    startup_s: float = 0.0
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def name(self) -> str:
        return self.kind.name

    def start(self, ready_timeout: float = 60.0) -> Server:
        """Exec the server and wait for its first answered ``stats`` (the start-up time)."""
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.kind.name}-"))
        self.port = free_port()
        self.argv = [*self.kind.argv, "-l", HOST, "-p", str(self.port)]
        if self.binlog:
            binlog_dir = self.tmpdir / "binlog"
            binlog_dir.mkdir()
            self.argv += ["-b", str(binlog_dir)]
        self.argv += list(self.flags)
        self._launch()
        try:
            self.startup_s = wait_answering(self.port, self.start_ns, self.proc, ready_timeout)
        except (OSError, RuntimeError, TimeoutError) as e:
            tail = self.log_tail(8)
            self.stop()
            raise RuntimeError(f"{self.name} failed to start: {e}\n{tail}".rstrip()) from e
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, ready_timeout: float = 120.0) -> float:
        """Stop and exec again on the same port and dir (binlog replay); return start-up s."""
        self._terminate()
        self._launch()
        try:
            self.startup_s = wait_answering(self.port, self.start_ns, self.proc, ready_timeout)
        except (OSError, RuntimeError, TimeoutError) as e:
            tail = self.log_tail(8)
            raise RuntimeError(f"{self.name} failed to restart: {e}\n{tail}".rstrip()) from e
        return self.startup_s

    def _launch(self) -> None:
        assert self.tmpdir is not None
        log = open(self.tmpdir / "server.log", "ab")  # noqa: SIM115 - lives as long as proc
        self.start_ns = time.monotonic_ns()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_child_setup,
                cwd=self.tmpdir,
            )
        finally:
            log.close()

    def log_tail(self, lines: int = 15) -> str:
        if self.tmpdir is None:
            return ""
        try:
            text = (self.tmpdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_kb(self) -> int:
        return vm_rss_kb(self.pid)

    def binlog_bytes(self) -> int:
        if self.tmpdir is None:
            return 0
        return sum(p.stat().st_size for p in (self.tmpdir / "binlog").glob("*") if p.is_file())

    def crash_report(self) -> str:
        """Exit status (if it exited within 0.5 s) and the log tail, to explain a failure."""
        status = "still running"
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = f"exit status {self.proc.wait(timeout=0.5)}"
        tail = self.log_tail(8)
        return f"{self.name} {status}" + (f"; log:\n{tail}" if tail else "")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _terminate(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; always reaps the child."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        try:
            self._terminate()
        finally:
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None


def wait_answering(
    port: int, start_ns: int, proc: subprocess.Popen[bytes] | None, timeout: float
) -> float:
    """Seconds from ``start_ns`` (just before exec) to the first complete ``stats`` reply.

    Connection refused is retried every 2 ms; a server that binds early but replays a binlog
    before serving is measured until it really answers, not until it accepts.
    """
    deadline = start_ns + int(timeout * 1e9)
    last: Exception | None = None
    while time.monotonic_ns() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} during start-up")
        try:
            left = max(0.05, (deadline - time.monotonic_ns()) / 1e9)
            with Client(port, timeout=left) as c:
                c.stats()
            return (time.monotonic_ns() - start_ns) / 1e9
        except (ConnectionRefusedError, ConnectionResetError) as e:
            last = e
            time.sleep(0.002)
    raise TimeoutError(f"server on port {port} did not answer within {timeout}s ({last})")


@contextlib.contextmanager
def running(
    kind: ServerKind, flags: tuple[str, ...] = (), binlog: bool = False
) -> Iterator[Server]:
    server = Server(kind, flags=flags, binlog=binlog)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def probe(kind: ServerKind, timeout: float = 20.0) -> str | None:
    """None if ``kind`` starts and answers ``stats``; otherwise why not."""
    server = Server(kind)
    try:
        server.start(ready_timeout=timeout)
    except (OSError, RuntimeError, TimeoutError) as e:
        return str(e)
    finally:
        server.stop()
    return None
