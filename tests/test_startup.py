"""The real process's start-up: listening early on a busy machine, the binlog lock before the
port, and a herd of clients arriving while descriptors are scarce."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beanq import protocol as p
from tests.servers import REPO_ROOT, ServerProcess, beanq_argv, free_port, wait_until_accepting
from tests.test_process import ask


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


@contextlib.contextmanager
def cpu_hogs() -> Iterator[None]:
    """One busy process per core, as a load test running beside the server would be."""
    stop = multiprocessing.get_context("fork").Event()
    hogs = [
        multiprocessing.get_context("fork").Process(target=_spin, args=(stop,), daemon=True)
        for _ in range(os.cpu_count() or 2)
    ]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(0.2)  # let them take the cores
        yield
    finally:
        stop.set()
        for hog in hogs:
            hog.join(5)
            if hog.is_alive():
                hog.kill()


def connect_as_test_harness(argv: list[str], port: int) -> bool:
    """Spawn the server and connect 0.1 s later, once, as greenstalk's own test suite does.
    True if the connection was accepted (by the kernel: the socket was listening)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = ServerProcess(argv, Path(tmp) / "log")
        try:
            time.sleep(0.1)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    return ask(sock, b"list-tube-used\r\n") == p.Reply("USING", ("default",))
            except ConnectionRefusedError:
                return False
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "both-cores-busy"])
def test_listening_within_a_test_harness_delay(busy: bool) -> None:
    """A harness that spawns the server and connects 0.1 s later is never refused, on an idle
    machine or with a hog on every core (before: refused in 12-15 of 44 greenstalk tests)."""
    with cpu_hogs() if busy else contextlib.nullcontext():
        results = [
            connect_as_test_harness(beanq_argv("127.0.0.1", port), port)
            for port in [free_port() for _ in range(8)]
        ]
    assert all(results), results


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
    heavy = {"trio", "beanq.server", "attrs"}
    if not binlog:
        heavy |= {"logging", "beanq.binlog", "beanq.dispatch", "beanq.tubes", "beanq.protocol"}
    assert not heavy & modules, sorted(heavy & modules)


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


def test_first_answer_with_an_empty_binlog_within_150_ms(tmp_path: Path) -> None:
    from tests.test_process import BEANQ, time_to_first_answer

    exe = Path(sys.executable).with_name("beanq")
    argv = [str(exe)] if exe.exists() else BEANQ
    timings = []
    for i in range(5):
        directory = tmp_path / str(i)
        directory.mkdir()
        port = free_port()
        timings.append(time_to_first_answer([*argv, "-p", str(port), "-b", str(directory)], port))
    assert min(timings) < 0.150, timings


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
