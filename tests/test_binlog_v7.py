"""Migration: beanq on a directory written by the real beanstalkd 1.12 (binlog format 7).

Each test drives a real beanstalkd with ``-b DIR``, kills it (kill -9: the binlog as it stands),
and then compares what beanq makes of DIR with what beanstalkd itself makes of a copy of DIR,
job by job over the protocol; or, where beanstalkd's replay is known to lose jobs, with what
beanstalkd had before it was killed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.servers import ServerProcess, spawn_beanq, spawn_beanstalkd
from tests.test_binlog_wire import Wire, jobs_of

pytestmark = pytest.mark.reference

COMPARED = ("tube", "state", "pri", "delay", "ttr", "reserves", "timeouts", "releases")
COMPARED += ("buries", "kicks", "body")


def _kill(proc: ServerProcess) -> None:
    proc.kill()
    proc.wait()


def _same_jobs(got: dict[int, dict[str, str]], want: dict[int, dict[str, str]]) -> None:
    assert sorted(got) == sorted(want)
    for job_id, info in want.items():
        mine = got[job_id]
        assert {k: mine[k] for k in COMPARED} == {k: info[k] for k in COMPARED}, job_id
        assert abs(int(mine["time-left"]) - int(info["time-left"])) <= 2, job_id
        assert abs(int(mine["age"]) - int(info["age"])) <= 2, job_id


def _drive(w: Wire) -> int:
    """Every kind of change beanstalkd logs, in three tubes. Returns the highest id."""
    w.ok(b"use alpha", b"USING alpha")
    one = w.put(b"one", pri=10)
    w.put(b"two, delayed", pri=20, delay=3600)
    w.ok(b"use default", b"USING default")
    three = w.put(b"three", pri=30)
    four = w.put(b"", pri=40)
    five = w.put(bytes(range(256)) + b"\r\n", pri=50)
    w.ok(b"watch alpha", b"WATCHING 2")
    assert w.cmd(b"reserve-job %d" % one)[0].startswith(b"RESERVED %d " % one)
    w.ok(b"bury %d 1234" % one, b"BURIED")
    assert w.cmd(b"reserve-job %d" % three)[0].startswith(b"RESERVED %d " % three)
    w.ok(b"release %d 7 0" % three, b"RELEASED")
    assert w.cmd(b"reserve-job %d" % three)[0].startswith(b"RESERVED %d " % three)
    w.ok(b"release %d 8 1800" % three, b"RELEASED")
    assert w.cmd(b"reserve-job %d" % four)[0].startswith(b"RESERVED %d " % four)
    w.ok(b"delete %d" % four, b"DELETED")
    w.ok(b"kick-job %d" % one, b"KICKED")
    assert w.cmd(b"reserve-job %d" % one)[0].startswith(b"RESERVED %d " % one)
    w.ok(b"bury %d 99" % one, b"BURIED")
    assert w.cmd(b"reserve-job %d" % five)[0].startswith(b"RESERVED %d " % five)  # kept
    w.ok(b"use gamma", b"USING gamma")
    last = 0
    for i in range(40):
        last = w.put(b"gamma %d" % i, pri=i)
    for job_id in range(last - 39, last, 3):
        w.ok(b"delete %d" % job_id, b"DELETED")
    return last


def test_beanq_reads_a_beanstalkd_binlog_as_beanstalkd_does(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    with spawn_beanstalkd("-b", str(wal)) as (host, port, proc), Wire(host, port) as w:
        last = _drive(w)
        live = jobs_of(w, range(1, last + 5))
        _kill(proc)
    copy = tmp_path / "copy"
    shutil.copytree(wal, copy)
    with spawn_beanstalkd("-b", str(copy)) as (host, port, _), Wire(host, port) as w:
        reference = jobs_of(w, range(1, last + 5))
    with spawn_beanq("-b", str(wal)) as (host, port, proc), Wire(host, port) as w:
        imported = jobs_of(w, range(1, last + 5))
        assert w.put(b"after") == last + 1  # ids go on
        assert "corrupt" not in proc.output()
    # beanstalkd's replay buries buried jobs again, counting one more bury each restart
    # (bury_job increments bury_ct even when replaying); beanq keeps the true count.
    for info in reference.values():
        if info["state"] == "buried":
            info["buries"] = str(int(info["buries"]) - 1)
    _same_jobs(imported, reference)
    assert imported[1]["buries"] == live[1]["buries"] == "2"
    assert len(imported) > 30


def test_beanq_keeps_what_beanstalkds_replay_throws_away(tmp_path: Path) -> None:
    """A body of exactly the size limit makes beanstalkd 1.12 drop that job and the rest of
    its binlog file at replay; beanq keeps them all."""
    wal = tmp_path / "wal"
    wal.mkdir()
    with spawn_beanstalkd("-b", str(wal), "-z", "100") as (host, port, proc), Wire(host, port) as w:
        w.put(b"before")
        w.put(b"x" * 100)  # exactly -z: accepted
        for i in range(5):
            w.put(b"after %d" % i, pri=i, delay=100 * i)
        assert w.cmd(b"reserve-job 1")[0].startswith(b"RESERVED 1 ")
        w.ok(b"bury 1 5", b"BURIED")
        live = jobs_of(w, range(1, 10))
        _kill(proc)
    copy = tmp_path / "copy"
    shutil.copytree(wal, copy)
    with (
        spawn_beanstalkd("-b", str(copy), "-z", "100") as (host, port, proc),
        Wire(host, port) as w,
    ):
        assert len(jobs_of(w, range(1, 10))) < len(live)  # the reference loses jobs
    with spawn_beanq("-b", str(wal), "-z", "100") as (host, port, _), Wire(host, port) as w:
        _same_jobs(jobs_of(w, range(1, 10)), live)


def test_imported_jobs_move_to_beanq_segments_and_the_old_files_go(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    with spawn_beanstalkd("-b", str(wal)) as (host, port, proc), Wire(host, port) as w:
        last = _drive(w)
        live = jobs_of(w, range(1, last + 1))
        _kill(proc)
    old = {f.name for f in wal.iterdir() if f.name.startswith("binlog.")}
    with spawn_beanq("-b", str(wal), "-s", "65536") as (host, port, _), Wire(host, port) as w:
        for _ in range(20):  # a little activity: compaction moves the imported jobs
            w.ok(b"delete %d" % w.put(b"churn"), b"DELETED")
        deadline = time.monotonic() + 5
        while old & {f.name for f in wal.iterdir()}:
            assert time.monotonic() < deadline, "the beanstalkd files were never migrated"
            w.ok(b"delete %d" % w.put(b"churn"), b"DELETED")
            time.sleep(0.05)
        stats = w.stats()
        assert int(stats["binlog-records-migrated"]) >= len(live) - 1
        migrated = jobs_of(w, range(1, last + 1))
    with spawn_beanq("-b", str(wal)) as (host, port, _), Wire(host, port) as w:
        again = jobs_of(w, range(1, last + 1))
    _same_jobs(again, migrated)
    reserved = [k for k, v in live.items() if v["state"] == "reserved"]
    for job_id in reserved:
        live[job_id]["state"] = "ready"  # reserved jobs come back ready
        live[job_id]["time-left"] = "0"
    assert set(again) == set(live)
    for job_id, info in live.items():
        assert again[job_id]["tube"] == info["tube"]
        assert again[job_id]["body"] == info["body"]


def test_a_torn_beanstalkd_file_keeps_everything_before_the_tear(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    with spawn_beanstalkd("-b", str(wal)) as (host, port, proc), Wire(host, port) as w:
        ids = [w.put(b"job %d" % i, pri=i) for i in range(10)]
        _kill(proc)
    path = wal / "binlog.1"
    data = path.read_bytes().rstrip(b"\0")
    path.write_bytes(data[:-3])  # the last record loses its last bytes
    with spawn_beanq("-b", str(wal)) as (host, port, proc), Wire(host, port) as w:
        got = jobs_of(w, range(1, 12))
        assert "binlog.1:" in proc.output()  # reported, with the offset
    assert sorted(got) == ids[:-1]
