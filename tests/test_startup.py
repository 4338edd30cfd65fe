"""The real process's start-up: listening early on a busy machine, the binlog lock before the
port, and a herd of clients arriving while descriptors are scarce."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from beanq import protocol as p
from bench.hogs import cpu_hogs
from tests.servers import REPO_ROOT, ServerProcess, beanq_argv, free_port, wait_until_accepting
from tests.test_process import ask

MINIMAL_LISTENER = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
time.sleep(30)
"""


def time_to_listen(argv: list[str], port: int) -> float:
    """Seconds from exec until a connection to ``port`` is accepted by the kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = ServerProcess(argv, Path(tmp) / "log")
        try:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    return time.perf_counter() - start
                except ConnectionRefusedError:
                    assert proc.poll() is None, proc.describe()
                    assert time.perf_counter() - start < 30, proc.describe()
                    time.sleep(0.0005)
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "both-cores-busy"])
def test_time_to_listen_is_the_interpreters_own_start_up(busy: bool) -> None:
    """Harnesses connect ~0.1 s after spawning the server, and before that beanq listened
    118-127 ms after exec on a busy machine. Now it listens about when a five-line Python
    listener does: compared in the same run, alternately, idle and with a hog on every core,
    so the machine's speed cancels out (the absolute figures are in ``make bench``)."""
    bare: list[float] = []
    beanq: list[float] = []
    with cpu_hogs() if busy else contextlib.nullcontext():
        for _ in range(7):
            port = free_port()
            bare.append(time_to_listen([sys.executable, "-c", MINIMAL_LISTENER, str(port)], port))
            port = free_port()
            beanq.append(time_to_listen(beanq_argv("127.0.0.1", port), port))
    assert statistics.median(beanq) < 1.5 * statistics.median(bare) + 0.010, (beanq, bare)


LISTEN_SPY = """
import json, sys
from beanq import cli, listener
real_listen = listener.listen
def spy(sock):
    print(json.dumps(sorted(sys.modules)), flush=True)
    real_listen(sock)
    raise SystemExit(0)
listener.listen = spy
cli.main(sys.argv[1:])
"""


@pytest.mark.parametrize("binlog", [False, True], ids=["memory", "binlog"])
def test_nothing_heavy_is_imported_before_listening(binlog: bool, tmp_path: Path) -> None:
    """Time to listen is the interpreter's own start-up: neither trio nor the server, engine
    or logging are imported by then. With -b the binlog module (and the engine types it
    reads) comes first, by design: its lock is taken before listening."""
    args = ["-l", "127.0.0.1", "-p", str(free_port())]
    if binlog:
        args += ["-b", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-c", LISTEN_SPY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr
    modules = set(json.loads(out.stdout.splitlines()[0]))
    assert "beanq.listener" in modules
    heavy = {"trio", "beanq.server", "attrs", "beanq.schedules", "cronsim", "zoneinfo"}
    if not binlog:
        heavy |= {"logging", "beanq.binlog", "beanq.dispatch", "beanq.tubes", "beanq.protocol"}
    assert not heavy & modules, sorted(heavy & modules)
    # setuptools' editable import hook (pathlib, urllib, fnmatch: ~17 ms of every start), which
    # any plain `pip install -e .` in the venv brings back; the Makefile writes plain paths
    assert not [m for m in modules if m.startswith("__editable__")]


def test_locked_directory_exits_10_without_ever_accepting(tmp_path: Path) -> None:
    """A second daemon on a directory another one holds fails before it listens: every
    connection attempt meanwhile is refused, none is accepted and dropped."""
    first_port, second_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        first = ServerProcess(
            beanq_argv("127.0.0.1", first_port, "-b", str(tmp_path)), Path(tmp) / "a"
        )
        try:
            wait_until_accepting("127.0.0.1", first_port, 15, first)
            accepted = 0
            done = threading.Event()

            def knock() -> None:
                nonlocal accepted
                while not done.is_set():
                    try:
                        socket.create_connection(("127.0.0.1", second_port), timeout=1).close()
                        accepted += 1
                    except OSError:
                        pass

            knocker = threading.Thread(target=knock)
            knocker.start()
            try:
                started = time.monotonic()
                second = subprocess.run(
                    beanq_argv("127.0.0.1", second_port, "-b", str(tmp_path)),
                    capture_output=True,
                    text=True,
                    timeout=30,
                    cwd=REPO_ROOT,
                )
                elapsed = time.monotonic() - started
            finally:
                done.set()
                knocker.join(5)
            assert second.returncode == 10, second.stderr
            assert "failed to lock wal dir" in second.stderr
            assert accepted == 0
            assert elapsed < 5
            with socket.create_connection(("127.0.0.1", first_port), timeout=5) as sock:
                assert ask(sock, b"list-tube-used\r\n") == p.Reply("USING", ("default",))
        finally:
            first.terminate()
            first.wait(10)


FD_LIMIT = 48


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.mark.parametrize("binlog", [False, True], ids=["memory", "binlog"])
def test_descriptors_running_out_during_start_up(binlog: bool, tmp_path: Path) -> None:
    """Clients hammer the port from before the daemon starts, under a hard descriptor limit
    of 48: the daemon must live through trio taking over (which needs descriptors of its own)
    and serve everybody once the herd lets go. Before, trio's start-up died of EMFILE."""
    port = free_port()
    args = ["-b", str(tmp_path)] if binlog else []
    held: list[socket.socket] = []
    stop = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
            except OSError:
                time.sleep(0.001)
                continue
            with lock:
                held.append(sock)
                if len(held) > 400:
                    held.pop(0).close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "err", "wb") as stderr:
        proc = subprocess.Popen(
            beanq_argv("127.0.0.1", port, *args),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_low_fd_limit,
            cwd=REPO_ROOT,
        )
        try:
            time.sleep(2.0)  # trio is up by now, even on a busy machine
            alive = proc.poll() is None
            stop.set()
            for thread in threads:
                thread.join(5)
            with lock:
                for sock in held:
                    sock.close()
                held.clear()
            err = (Path(tmp) / "err").read_text()
            assert alive, f"beanq died (status {proc.returncode}):\n{err[-3000:]}"
            deadline = time.monotonic() + 10
            while True:  # the closed herd drains from the backlog
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                        reply = ask(sock, b"put 0 0 60 2\r\nhi\r\n")
                        break
                except (OSError, EOFError):
                    assert time.monotonic() < deadline, err
                    time.sleep(0.05)
            assert reply.word == "INSERTED", reply
            assert proc.poll() is None
            assert "Traceback" not in (Path(tmp) / "err").read_text()
        finally:
            stop.set()
            proc.terminate()
            assert proc.wait(10) == 0
