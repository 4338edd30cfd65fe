"""The binlog through real server processes: flags, locking, a really full disk, stats.

Also home of ``Wire``, the minimal blocking client the binlog tests use (raw protocol, so a
test sees exactly what the server said).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT, free_port, reference_binary, spawn_beanq, spawn_beanstalkd

_WITH_BODY = (b"OK", b"FOUND", b"RESERVED")


class Wire:
    """One blocking connection speaking the beanstalkd protocol."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def send(self, line: bytes, body: bytes | None = None) -> None:
        self.sock.sendall(line + b"\r\n" + (b"" if body is None else body + b"\r\n"))

    def reply(self) -> tuple[bytes, bytes | None]:
        line = self._line()
        if line.split(b" ", 1)[0] in _WITH_BODY:
            return line, self._exactly(int(line.rsplit(b" ", 1)[1]))
        return line, None

    def cmd(self, line: bytes, body: bytes | None = None) -> tuple[bytes, bytes | None]:
        self.send(line, body)
        return self.reply()

    def put(self, body: bytes, pri: int = 0, delay: int = 0, ttr: int = 60) -> int:
        line, _ = self.cmd(b"put %d %d %d %d" % (pri, delay, ttr, len(body)), body)
        assert line.startswith(b"INSERTED "), line
        return int(line.split()[1])

    def ok(self, line: bytes, expect: bytes) -> None:
        got, _ = self.cmd(line)
        assert got == expect, (line, got)

    def stats(self, line: bytes = b"stats") -> dict[str, str]:
        head, body = self.cmd(line)
        assert head.startswith(b"OK") and body is not None, (line, head)
        return _yaml(body)

    def stats_job(self, job_id: int) -> dict[str, str] | None:
        head, body = self.cmd(b"stats-job %d" % job_id)
        if head == b"NOT_FOUND":
            return None
        assert body is not None, head
        return _yaml(body)

    def peek(self, job_id: int) -> bytes | None:
        head, body = self.cmd(b"peek %d" % job_id)
        return None if head == b"NOT_FOUND" else body


def _yaml(body: bytes) -> dict[str, str]:
    out = {}
    for line in body.decode().splitlines()[1:]:
        key, _, value = line.partition(": ")
        out[key] = value.strip().strip('"')
    return out


def jobs_of(wire: Wire, ids: range) -> dict[int, dict[str, str]]:
    """stats-job (plus the body, as ``body``) of every job in ``ids`` that exists."""
    out = {}
    for job_id in ids:
        info = wire.stats_job(job_id)
        if info is not None:
            body = wire.peek(job_id)
            info["body"] = repr(body)
            out[job_id] = info
    return out


def run_beanq(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    """Run beanq to completion (for start-up failures)."""
    argv = [sys.executable, "-m", "beanq", "-l", "127.0.0.1", "-p", str(free_port()), *args]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


# --- locking ---------------------------------------------------------------------------------


def test_a_second_daemon_on_the_same_directory_exits_like_beanstalkd(tmp_path: Path) -> None:
    with spawn_beanq("-b", str(tmp_path)):
        done = run_beanq("-b", str(tmp_path))
    assert done.returncode == 10
    assert f"failed to lock wal dir {tmp_path}" in done.stderr


def test_a_missing_directory_exits_like_beanstalkd(tmp_path: Path) -> None:
    done = run_beanq("-b", str(tmp_path / "missing"))
    assert done.returncode == 10
    assert "failed to lock wal dir" in done.stderr


@pytest.mark.reference
def test_beanq_and_beanstalkd_exclude_each_other(tmp_path: Path) -> None:
    binary = reference_binary()
    with spawn_beanstalkd("-b", str(tmp_path)):
        done = run_beanq("-b", str(tmp_path))
        assert done.returncode == 10, done.stderr
    with spawn_beanq("-b", str(tmp_path)):
        port = str(free_port())
        ref = subprocess.run(
            [binary, "-l", "127.0.0.1", "-p", port, "-b", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert ref.returncode == 10
        assert "failed to lock wal dir" in ref.stderr


# --- flags -----------------------------------------------------------------------------------


def test_never_fsync_small_segments_and_restart(tmp_path: Path) -> None:
    """``-F -s 65536``: many segments, superseded ones deleted, everything back after kill -9."""
    body = b"b" * 1000
    with spawn_beanq("-b", str(tmp_path), "-F", "-s", "65536") as (host, port, proc):
        with Wire(host, port) as w:
            ids = [w.put(body, pri=i) for i in range(300)]
            for job_id in ids[:200]:
                w.ok(b"delete %d" % job_id, b"DELETED")
            stats = w.stats()
            assert stats["binlog-max-size"] == "65536"
            assert int(stats["binlog-current-index"]) > 3
            assert int(stats["binlog-records-written"]) >= 500
            assert int(stats["binlog-oldest-index"]) > 1  # the first segments are gone
            info = w.stats_job(ids[-1])
            assert info is not None and info["file"] == stats["binlog-current-index"]
        proc.kill()
        proc.wait()
        files = [f for f in tmp_path.iterdir() if f.name.startswith("binlog.")]
        assert sum(f.stat().st_size for f in files) < 3 * 100 * 1100 + 65536 * 2
    with spawn_beanq("-b", str(tmp_path)) as (host, port, _), Wire(host, port) as w:
        assert w.stats()["current-jobs-ready"] == "100"
        for job_id in ids[200:]:
            info = w.stats_job(job_id)
            assert info is not None and info["pri"] == str(ids.index(job_id))
        served = []  # by priority (their put order here), every one of them
        for _ in ids[200:]:
            line, got = w.cmd(b"reserve-with-timeout 0")
            assert line.startswith(b"RESERVED ") and got == body, line
            served.append(int(line.split()[1]))
        assert served == ids[200:]
        assert w.put(b"next") == ids[-1] + 1


# --- a really full disk -----------------------------------------------------------------------


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_filesystem(tmp_path: Path) -> None:
    """On a 1 MiB filesystem: puts get OUT_OF_MEMORY once it is full, no job leaks, deletes
    work, puts work again once space is back, and a kill -9 loses nothing acknowledged."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    with tiny_filesystem(tmp_path / "mnt", "1m") as mnt:
        body = b"f" * 4000
        with spawn_beanq("-b", str(mnt), "-s", "131072", "-f", "0") as (host, port, proc):
            with Wire(host, port) as w:
                ids: list[int] = []
                refused = None
                for _ in range(400):
                    line, _ = w.cmd(b"put 0 0 60 %d" % len(body), body)
                    if line == b"OUT_OF_MEMORY":
                        refused = len(ids)
                        break
                    assert line.startswith(b"INSERTED"), line
                    ids.append(int(line.split()[1]))
                assert refused is not None and 50 < refused < 300, refused
                assert w.stats()["current-jobs-ready"] == str(len(ids))
                assert w.peek(ids[-1] + 1) is None  # the refused put left nothing behind
                assert w.cmd(b"put 0 0 60 %d" % len(body), body)[0] == b"OUT_OF_MEMORY"
                # a worker can still take jobs and delete them
                for _ in range(len(ids) // 2):
                    line, _ = w.cmd(b"reserve-with-timeout 0")
                    assert line.startswith(b"RESERVED"), line
                    w.ok(b"delete %s" % line.split()[1], b"DELETED")
                kept = set(ids[len(ids) // 2 :])
                # space is back: puts work again
                deadline = time.monotonic() + 10
                while True:
                    line, _ = w.cmd(b"put 1 0 60 %d" % len(body), body)
                    if line.startswith(b"INSERTED"):
                        kept.add(int(line.split()[1]))
                        break
                    assert time.monotonic() < deadline, "space never came back"
                    time.sleep(0.05)
            proc.kill()
            proc.wait()
            assert "Traceback" not in proc.output()
        with spawn_beanq("-b", str(mnt), "-s", "131072") as (host, port, proc):
            with Wire(host, port) as w:
                assert set(jobs_of(w, range(1, max(kept) + 2))) == kept
            assert "corrupt" not in proc.output()


# --- a failing fsync --------------------------------------------------------------------------

FAILING_FSYNC = """
import os
_fsync = os.fsync
def fsync(fd):
    if os.path.exists({flag!r}):
        raise OSError(5, "Input/output error (injected)")
    return _fsync(fd)
os.fsync = fsync
"""


def test_with_f0_no_reply_goes_out_while_fsync_fails(tmp_path: Path) -> None:
    """-f 0 promises a reply only once the record is on disk: while fsync fails, a put waits
    (the failure is logged, and retried), and it is answered once an fsync succeeds."""
    from tests.test_hardening import spawn_patched

    flag = tmp_path / "fail-fsync"
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    code = FAILING_FSYNC.format(flag=str(flag))
    with spawn_patched(code, "-b", str(binlog), "-f", "0") as (host, port, proc):
        with Wire(host, port, timeout=5) as wire:
            assert wire.put(b"before") == 1
            flag.touch()
            wire.send(b"put 0 0 60 6", b"during")
            wire.sock.settimeout(0.6)
            with pytest.raises(TimeoutError):
                wire.reply()  # nothing is on disk, so nothing is promised
            wire.sock.settimeout(5)
            flag.unlink()
            started = time.monotonic()
            assert wire.reply() == (b"INSERTED 2", None)
            assert time.monotonic() - started < 2.0
        time.sleep(0.1)
        assert "binlog: fsync failed: Input/output error (injected)" in proc.output()
        assert proc.poll() is None


# --- the periodic fsync (-f MS) -----------------------------------------------------------------

COUNTING_FSYNC = """
import os, time
_fsync = os.fsync
def fsync(fd):
    with open({log!r}, "a") as f:
        f.write("%f\\n" % time.monotonic())
    return _fsync(fd)
os.fsync = fsync
"""


def test_f_ms_syncs_after_the_last_write_and_at_most_every_ms(tmp_path: Path) -> None:
    """-f MS fsyncs what was written at most every MS ms while writes go on, once more after
    the last write of a burst (a lone put is durable within about MS ms), and never while
    nothing is written."""
    from tests.test_hardening import spawn_patched

    log = tmp_path / "fsyncs"
    binlog = tmp_path / "binlog"
    binlog.mkdir()

    def fsyncs() -> list[float]:
        return [float(x) for x in log.read_text().split()] if log.exists() else []

    code = COUNTING_FSYNC.format(log=str(log))
    with spawn_patched(code, "-b", str(binlog), "-f", "200") as (host, port, proc):
        with Wire(host, port, timeout=5) as wire:
            time.sleep(0.5)
            settled = len(fsyncs())  # (start-up makes the replayed directory durable)
            time.sleep(0.5)
            assert len(fsyncs()) == settled  # nothing written, nothing synced
            assert wire.put(b"lone") == 1
            deadline = time.monotonic() + 5
            while len(fsyncs()) == settled and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(fsyncs()) > settled  # the last write of a burst is synced
            time.sleep(0.6)
            before = fsyncs()
            started = time.monotonic()
            while time.monotonic() - started < 1.0:  # a burst of 1 s of puts
                wire.put(b"burst")
            time.sleep(0.5)
            during = fsyncs()[len(before) :]
        assert 1 <= len(during) <= 1.0 / 0.2 + 2
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert all(gap >= 0.15 for gap in gaps), gaps  # at most every 200 ms (with slack)
        assert proc.poll() is None
