"""Spawning real server processes for tests: beanq itself and the reference beanstalkd.

Every helper here listens on loopback only (127.0.0.1 or ::1), bounds every wait, and kills the
process it started when the ``with`` block ends, whatever happened inside it. The server's
stdout and stderr go to a temporary file, so a failure message can show what the server said
(``ServerProcess.output()``), and a chatty server can never block on a full pipe.

    with spawn_beanq("-z", "100") as (host, port, proc):
        ...

``reference_binary()`` finds beanstalkd (``$BEANSTALKD``, then ``$PATH``, then the usual
places). If it is missing the calling test is skipped, unless ``BEANQ_REQUIRE_REFERENCE=1`` is
set (as CI does), in which case the test fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

LOOPBACK_HOSTS = ("127.0.0.1", "::1")
REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_REFERENCE_ENV = "BEANQ_REQUIRE_REFERENCE"
REFERENCE_PATH_ENV = "BEANSTALKD"
DEFAULT_STARTUP_TIMEOUT = 15.0
DEFAULT_STOP_TIMEOUT = 5.0
_BIND_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """The server process exited, or never accepted connections, before the deadline."""


class ServerProcess(subprocess.Popen[bytes]):
    """A ``Popen`` whose stdout and stderr are captured in a temporary file."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            super().__init__(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
            )

    def output(self, limit: int = 8000) -> str:
        """What the process wrote to stdout/stderr so far (the last ``limit`` characters)."""
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError as exc:
            return f"<cannot read server output: {exc}>"
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return text

    def describe(self) -> str:
        status = "running" if self.poll() is None else f"exited with status {self.returncode}"
        output = self.output().rstrip() or "<no output>"
        return f"{' '.join(self.argv)}\n({status}) output:\n{output}"


def _check_loopback(host: str) -> None:
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"tests only listen on loopback, not {host!r}")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on the loopback address ``host`` a moment ago."""
    _check_loopback(host)
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_accepting(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on ``host:port``.

    Raises ``ServerStartError`` if ``proc`` (when given) exits first, or when ``timeout``
    seconds pass. The probe connection sends ``quit`` and waits (briefly) for the server to
    close it, so that once this returns the probe no longer counts in ``current-connections``;
    it does count, once, in ``total-connections``.
    """
    _check_loopback(host)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"server exited with status {proc.returncode} before listening")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerStartError(f"nothing accepted connections on {host}:{port} in {timeout}s")
        try:
            sock = socket.create_connection((host, port), timeout=min(1.0, remaining))
        except OSError:
            time.sleep(0.01)
            continue
        with sock:
            _quit_probe(sock, deadline)
        return


def wait_until_settled(proc: ServerProcess, timeout: float = 30.0) -> None:
    """Wait until a beanq started with ``-V`` has finished starting (trio imported and
    running): before that its memory still grows by trio's, whatever the test does."""
    deadline = time.monotonic() + timeout
    while "trio is up" not in proc.output():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServerStartError(f"beanq never finished starting: {proc.describe()}")
        time.sleep(0.02)


def _quit_probe(sock: socket.socket, deadline: float) -> None:
    """Ask the server to close the probe connection and wait (bounded) until it has."""
    try:
        sock.sendall(b"quit\r\n")
        sock.settimeout(max(0.01, min(2.0, deadline - time.monotonic())))
        while sock.recv(4096):
            pass
    except OSError:
        pass  # closed, reset or slow: the port accepts connections, which is what we needed


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate ``proc`` and reap it; SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=DEFAULT_STOP_TIMEOUT)


@contextlib.contextmanager
def _spawn(
    argv_for_port: Callable[[str, int], list[str]],
    host: str,
    port: int | None,
    startup_timeout: float,
    stop_timeout: float,
) -> Iterator[tuple[str, int, ServerProcess]]:
    _check_loopback(host)
    with tempfile.TemporaryDirectory(prefix="beanq-test-server-") as tmp:
        attempts = 1 if port is not None else _BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else free_port(host)
            log_path = Path(tmp) / f"server-{attempt}.log"
            proc = ServerProcess(argv_for_port(host, chosen), log_path)
            try:
                try:
                    wait_until_accepting(host, chosen, startup_timeout, proc)
                except ServerStartError as exc:
                    output = proc.output()
                    # Another process grabbed the port between free_port() and bind(): retry.
                    if (
                        proc.poll() is not None
                        and "in use" in output.lower()
                        and attempt < attempts
                    ):
                        continue
                    raise ServerStartError(f"{exc}: {proc.describe()}") from None
                yield host, chosen, proc
                return
            finally:
                _stop(proc, stop_timeout)
        raise AssertionError("unreachable")  # pragma: no cover


def reference_binary() -> str:
    """Path of the reference beanstalkd; skips the test (or fails it, in CI) if it is missing."""
    candidates = [
        os.environ.get(REFERENCE_PATH_ENV),
        shutil.which("beanstalkd"),
        "/usr/bin/beanstalkd",
        "/usr/local/bin/beanstalkd",
        "/usr/sbin/beanstalkd",
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    skip_or_fail(
        "the reference beanstalkd binary was not found "
        f"(install beanstalkd, or set {REFERENCE_PATH_ENV}=/path/to/beanstalkd)",
        REQUIRE_REFERENCE_ENV,
    )


def skip_or_fail(message: str, require_env: str) -> NoReturn:
    """Skip the calling test because something it needs is not installed, or fail it when the
    environment variable ``require_env`` is set (CI sets it: there a missing tool is a broken
    install, and a skip would hide it)."""
    if os.environ.get(require_env, "") not in ("", "0"):
        pytest.fail(f"{message}, and {require_env} is set", pytrace=False)
    pytest.skip(message)


def beanq_argv(host: str, port: int, *args: str) -> list[str]:
    """The command line that starts beanq listening on ``host:port``."""
    return [sys.executable, "-m", "beanq", "-l", host, "-p", str(port), *args]


def spawn_beanq(
    *args: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> contextlib.AbstractContextManager[tuple[str, int, ServerProcess]]:
    """Start ``python -m beanq -l HOST -p PORT *args``; yields ``(host, port, process)``.

    Raises ``ServerStartError`` (with the server's output) if it does not come up. On exit the
    server gets SIGTERM, then SIGKILL if it is still running ``stop_timeout`` seconds later.
    """
    return _spawn(lambda h, p: beanq_argv(h, p, *args), host, port, startup_timeout, stop_timeout)


def spawn_beanstalkd(
    *args: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> contextlib.AbstractContextManager[tuple[str, int, ServerProcess]]:
    """Start the reference ``beanstalkd -l HOST -p PORT *args``; yields ``(host, port, process)``.

    Skips (or fails, see ``reference_binary``) if beanstalkd is not installed.
    """
    binary = reference_binary()
    return _spawn(
        lambda h, p: [binary, "-l", h, "-p", str(p), *args],
        host,
        port,
        startup_timeout,
        stop_timeout,
    )
