"""The real ``beanq`` process: start-up time, flags, signals, listeners."""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from beanq import protocol as p
from tests.servers import free_port, spawn_beanq

ROOT = Path(__file__).resolve().parent.parent
BEANQ = [sys.executable, "-m", "beanq"]


def ask(sock: socket.socket, data: bytes) -> p.Reply:
    sock.sendall(data)
    reader = p.ReplyReader()
    sock.settimeout(5)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError
        replies = reader.feed(chunk)
        if replies:
            return replies[0]


def test_version_and_help_exit_zero() -> None:
    out = subprocess.run([*BEANQ, "-v"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("beanq ")
    out = subprocess.run([*BEANQ, "-h"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "-b DIR" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-x"], "unknown flag: -x"),
        (["-p"], "flag requires an argument: -p"),
        (["-z", "abc"], "invalid size: abc"),
        (["stray"], "unknown argument: stray"),
        (["--yaml", "1.14"], "--yaml takes 1.13 or 1.12, not 1.14"),
        (["--yaml"], "flag requires an argument: --yaml"),
    ],
)
def test_bad_flags_exit_5_like_beanstalkd(args: list[str], message: str) -> None:
    out = subprocess.run([*BEANQ, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 5
    assert message in out.stderr


def test_port_in_use_exits_111() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run(
            [*BEANQ, "-l", "127.0.0.1", "-p", str(port)], capture_output=True, timeout=30
        )
    assert out.returncode == 111


def test_combined_flags_and_max_job_size() -> None:
    port = free_port()
    with (
        spawn_beanq("-VVz10", port=port) as (host, _, _proc),
        socket.create_connection((host, port)) as sock,
    ):
        assert ask(sock, b"put 0 0 1 11\r\n" + b"x" * 11 + b"\r\n") == p.Reply("JOB_TOO_BIG")
        assert ask(sock, b"put 0 0 1 10\r\n" + b"x" * 10 + b"\r\n").word == "INSERTED"
        stats = p.parse_yaml_dict(ask(sock, b"stats\r\n").body or b"")
        assert stats["max-job-size"] == 10


def test_sigterm_shuts_down_cleanly_and_releases_clients() -> None:
    with spawn_beanq("-V") as (host, port, proc):
        sock = socket.create_connection((host, port))
        ask(sock, b"list-tubes\r\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        sock.settimeout(5)
        assert sock.recv(10) == b""
        sock.close()
        assert "accept" in proc.output()  # -V logs connections


def test_sigusr1_enters_drain_mode() -> None:
    with spawn_beanq() as (host, port, proc), socket.create_connection((host, port)) as sock:
        assert ask(sock, b"put 0 0 1 1\r\nx\r\n").word == "INSERTED"
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while ask(sock, b"put 0 0 1 1\r\nx\r\n") != p.Reply("DRAINING"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stats = p.parse_yaml_dict(ask(sock, b"stats\r\n").body or b"")
        assert stats["draining"] is True
        assert ask(sock, b"reserve-with-timeout 0\r\n").word == "RESERVED"


def test_unix_socket_listener() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "beanq.sock")
        proc = subprocess.Popen([*BEANQ, "-l", f"unix:{path}"], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            with socket.socket(socket.AF_UNIX) as sock:
                while True:  # the path appears at bind, a moment before it listens
                    try:
                        sock.connect(path)
                        break
                    except (FileNotFoundError, ConnectionRefusedError):
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                assert ask(sock, b"put 0 0 1 2\r\nhi\r\n") == p.Reply("INSERTED", ("1",))
        finally:
            proc.terminate()
            proc.wait(10)
            assert proc.stderr is not None
            proc.stderr.close()


def test_systemd_socket_activation() -> None:
    """With LISTEN_FDS/LISTEN_PID, beanq serves the inherited socket and ignores -p."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    script = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); "
        "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.execv(sys.executable, [sys.executable, '-m', 'beanq', '-p', '1'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(listener.fileno())], pass_fds=[listener.fileno()]
    )
    listener.close()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask(sock, b"list-tube-used\r\n") == p.Reply("USING", ("default",))
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


PURE_MODULES = ["protocol.py", "tubes.py", "dispatch.py"]
FORBIDDEN = {"trio", "socket", "select", "selectors", "os", "time", "threading", "asyncio"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_io(module: str) -> None:
    """The codec, the engine and the dispatcher never touch sockets, files, clocks or trio."""
    tree = ast.parse((ROOT / "beanq" / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, imported & FORBIDDEN


def test_only_server_imports_trio_and_sockets() -> None:
    for path in (ROOT / "beanq").glob("*.py"):
        if path.name == "server.py":
            continue
        source = path.read_text()
        assert "import trio" not in source, path
        assert "import socket" not in source, path


def test_optional_limits_bound_connections_and_jobs() -> None:
    with spawn_beanq("--max-connections", "2", "--max-jobs=1") as (host, port, _proc):
        a = socket.create_connection((host, port))
        b = socket.create_connection((host, port))
        assert ask(a, b"put 0 0 1 1\r\nx\r\n").word == "INSERTED"
        assert ask(b, b"put 0 0 1 1\r\ny\r\n") == p.Reply("OUT_OF_MEMORY")
        with socket.create_connection((host, port)) as c:
            c.settimeout(5)
            assert c.recv(10) == b""  # over the limit: closed at once
        assert ask(a, b"delete 1\r\n") == p.Reply("DELETED")
        assert ask(b, b"put 0 0 1 1\r\ny\r\n").word == "INSERTED"
        a.close()
        b.close()


def test_descriptor_exhaustion_is_survived() -> None:
    """With a tiny RLIMIT_NOFILE, accepts fail; beanq logs once, pauses accepting, keeps
    serving the connections it has, and accepts again when descriptors come back."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

    port = free_port()
    proc = subprocess.Popen([*BEANQ, "-p", str(port)], stderr=subprocess.PIPE, preexec_fn=limit)
    try:
        first = None
        deadline = time.monotonic() + 10
        while first is None:
            try:
                first = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert ask(first, b"list-tube-used\r\n").word == "USING"
        time.sleep(0.5)  # start-up finished: trio holds the few descriptors it needs
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        time.sleep(0.5)
        assert ask(first, b"put 0 0 1 1\r\nx\r\n").word == "INSERTED"
        for sock in extra:
            sock.close()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
            assert ask(late, b"peek 1\r\n").word == "FOUND"
        first.close()
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    assert log.count("pausing accepts") >= 1
    assert log.count("pausing accepts") < 20  # once per burst, not once per attempt


def test_sigterm_after_a_holder_quit_still_exits_promptly() -> None:
    with spawn_beanq() as (host, port, proc):
        holder = socket.create_connection((host, port))
        waiter = socket.create_connection((host, port))
        assert ask(holder, b"put 0 0 100 1\r\nx\r\n").word == "INSERTED"
        assert ask(holder, b"reserve\r\n").word == "RESERVED"
        waiter.sendall(b"reserve\r\n")
        holder.sendall(b"quit\r\n")
        waiter.settimeout(5)
        assert waiter.recv(100).startswith(b"RESERVED 1 1")
        holder.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        waiter.close()


def _sleeps(pid: int) -> int:
    """How often the process's main thread has gone to sleep (its voluntary switches)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.parametrize("http", [False, True], ids=["plain", "http"])
def test_an_idle_server_sleeps(http: bool) -> None:
    """Idle, with a client connected and a tube paused for a minute, the loop waits for its
    next deadline: it used to wake every 50 ms to let trio look for signals (~20 sleeps a
    second, 0.5 % of a core doing nothing). Signals still act at once (SIGUSR1 below)."""
    args = ("--http", f"127.0.0.1:{free_port()}") if http else ()
    with spawn_beanq(*args) as (host, port, proc), socket.create_connection((host, port)) as sock:
        assert ask(sock, b"pause-tube default 60\r\n") == p.Reply("PAUSED")
        time.sleep(1.0)  # (start-up's threads done, the memory check after input made)
        before = _sleeps(proc.pid)
        time.sleep(2.0)
        assert _sleeps(proc.pid) - before <= 4
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        assert ask(sock, b"put 0 0 1 1\r\nx\r\n") == p.Reply("DRAINING")
