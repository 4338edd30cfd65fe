"""The binlog in-process: an engine and a ``Binlog`` driven by hand on a fake clock.

"Restart" closes the binlog cleanly and replays the directory into a new engine. "Crash"
copies the directory as it is at that moment (every byte handed to the OS is there, nothing
else happened: no close, no sync, garbage not yet unlinked) and replays the copy, which is what
a ``kill -9`` leaves behind.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beanq import binlog as bl
from beanq import protocol as p
from beanq.dispatch import HostInfo, Hub
from beanq.tubes import Engine, Job, State

WALL0 = 1_700_000_000.0
SMALL = 4096  # the smallest segment size: a dozen records each


class Rig:
    """An engine, its binlog, one session and a clock (monotonic ``now`` and ``wall``)."""

    def __init__(
        self,
        path: Path,
        *,
        segment_size: int = 1 << 20,
        fsync: bool = True,
        now: float = 500.0,
        wall: float = WALL0,
    ) -> None:
        self.path = path
        self.segment_size = segment_size
        self.fsync = fsync
        self.now = now
        self.wall = wall
        self.engine = Engine(now)
        self.engine.wall_offset = wall - now  # (as the server sets it: schedules' clock)
        self.log = bl.Binlog.open(str(path), segment_size=segment_size, fsync=fsync)
        self.log.replay(self.engine, now, wall)
        self.engine.room = self.log.can_put  # (a schedule's put promises its room, as a put)
        self.s = self.engine.connect()

    # driving the engine, each step written to the binlog like the server does
    def flush(self) -> None:
        changes = self.engine.changes[:]
        self.engine.changes.clear()
        ops, self.engine.ops = self.engine.ops, []
        self.log.write(changes, self.now, self.wall, ops)

    def put(
        self, body: bytes, pri: int = 0, delay: int = 0, ttr: int = 60, tube: bytes = b"default"
    ) -> Job:
        self.engine.use(self.s, tube)
        assert self.log.can_put(len(body))
        job = self.engine.put(self.s, pri, delay, ttr, body, self.now)
        self.flush()
        return job

    def reserve(self, job_id: int | None = None) -> Job:
        if job_id is None:
            self.engine.watch(self.s, b"default")
            got = self.engine.reserve(self.s, 0, self.now)
        else:
            got = self.engine.reserve_job(self.s, job_id, self.now)
        assert isinstance(got, Job)
        self.flush()
        return got

    def release(self, job_id: int, pri: int, delay: int = 0) -> None:
        assert self.engine.release(self.s, job_id, pri, delay, self.now)
        self.flush()

    def bury(self, job_id: int, pri: int) -> None:
        assert self.engine.bury(self.s, job_id, pri)
        self.flush()

    def kick(self, job_id: int) -> None:
        assert self.engine.kick_job(job_id, self.now)
        self.flush()

    def delete(self, job_id: int) -> None:
        assert self.engine.delete(self.s, job_id)
        self.flush()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds
        self.engine.tick(self.now)
        self.flush()

    # ending
    def restart(self, *, later: float = 0.0, **kwargs: object) -> Rig:
        """Close cleanly, then replay, ``later`` seconds later (another monotonic epoch)."""
        self.log.sync()
        self.log.close()
        return self._reopen(self.path, later, kwargs)

    def crash(self, *, later: float = 0.0, **kwargs: object) -> Rig:
        """Replay a copy of the directory as it is now (the process died here)."""
        copy = self.path.with_name(self.path.name + f"-crash{random.randrange(1 << 30)}")
        shutil.copytree(self.path, copy)
        return self._reopen(copy, later, kwargs)

    def _reopen(self, path: Path, later: float, kwargs: dict[str, object]) -> Rig:
        options: dict[str, object] = {
            "segment_size": self.segment_size,
            "fsync": self.fsync,
            "now": 90_000.0 + self.now,  # a new boot: the monotonic clock is unrelated
            "wall": self.wall + later,
        }
        options.update(kwargs)
        return Rig(path, **options)  # type: ignore[arg-type]

    def close(self) -> None:
        self.log.close()

    def disk(self) -> int:
        """Bytes in the directory's binlog files (preallocated room included)."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.name.startswith("binlog."))


def view(engine: Engine, now: float) -> dict[int, tuple[object, ...]]:
    """Everything about each job that must survive a restart (reserved reads as ready)."""
    out: dict[int, tuple[object, ...]] = {}
    for jid, job in engine.jobs.items():
        state = State.READY if job.state is State.RESERVED else job.state
        left = round(job.deadline - now) if state is State.DELAYED else None
        out[jid] = (
            job.tube.name,
            state,
            job.pri,
            job.body,
            job.delay,
            job.ttr,
            job.reserves,
            job.timeouts,
            job.releases,
            job.buries,
            job.kicks,
            left,
            round(now - job.created),
        )
    return out


def buried_order(engine: Engine) -> dict[bytes, list[int]]:
    return {t.name: list(t.buried) for t in engine.tubes.values() if t.buried}


def same_state(a: Rig, b: Rig) -> None:
    assert view(b.engine, b.now) == view(a.engine, a.now)
    assert buried_order(b.engine) == buried_order(a.engine)
    assert b.engine.next_id >= a.engine.next_id
    assert b.engine.body_bytes == a.engine.body_bytes  # (what the server weighs bursts by)
    refs_agree(b)
    heaps_hold_their_jobs(b.engine)


def heaps_hold_their_jobs(engine: Engine) -> None:
    """Each ready or delayed job's entry is in its tube's heap (the same object: the engine
    tells live entries from stale ones by identity), and each heap is a heap."""
    for job in engine.jobs.values():
        heap = {State.READY: job.tube.ready, State.DELAYED: job.tube.delayed}.get(job.state)
        if heap is not None:
            assert any(entry is job.entry for entry in heap), job
    for tube in engine.tubes.values():
        for heap in (tube.ready, tube.delayed):
            keys = [entry[:2] for entry in heap]
            assert all(keys[(i - 1) // 2] <= keys[i] for i in range(1, len(keys))), tube


def refs_agree(r: Rig) -> None:
    """Replay counts segment references as it reads; they must be what the table says."""
    want: Counter[int] = Counter()
    for job in r.engine.jobs.values():
        m = job.logged
        if not m:  # a change not written yet
            continue
        want[m >> 32] += 1
        want[m & 0xFFFFFFFF] += 1
    got = {seg.seq: seg.refs for seg in r.log._segments.values() if seg.refs}
    assert got == +want


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path / "wal")
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _wal_dir(tmp_path: Path) -> None:
    (tmp_path / "wal").mkdir()


def _close_all(*rigs: Rig) -> None:
    for r in rigs:
        r.close()


# --- what survives a restart -----------------------------------------------------------------


def test_every_state_priority_counter_and_tube_survives(rig: Rig) -> None:
    a = rig.put(b"plain", pri=5)
    b = rig.put(b"other tube", pri=7, tube=b"emails")
    c = rig.put(b"delayed", pri=9, delay=3600)
    d = rig.put(b"to release", pri=100)
    e = rig.put(b"to bury", pri=200)
    f = rig.put(b"reserved at crash", pri=300)
    g = rig.put(b"deleted", pri=1)
    h = rig.put(b"\x00binary\r\nbody\xff", pri=2**32 - 1, ttr=1)
    rig.reserve(d.id)
    rig.release(d.id, pri=42)  # beanstalkd forgets this priority
    rig.reserve(d.id)
    rig.release(d.id, pri=43, delay=600)
    rig.reserve(e.id)
    rig.bury(e.id, pri=44)
    rig.kick(e.id)
    rig.reserve(e.id)
    rig.bury(e.id, pri=45)
    rig.reserve(c.id)  # reserve-job of a delayed job: beanstalkd does not log it
    rig.release(c.id, pri=10, delay=7200)
    rig.reserve(f.id)
    rig.delete(g.id)
    rig.advance(5)
    after = rig.restart()
    same_state(rig, after)
    jobs = after.engine.jobs
    assert g.id not in jobs
    assert jobs[a.id].state is State.READY
    assert jobs[b.id].tube.name == b"emails"
    assert (jobs[c.id].state, jobs[c.id].pri, jobs[c.id].reserves) == (State.DELAYED, 10, 1)
    assert (jobs[d.id].pri, jobs[d.id].releases, jobs[d.id].delay) == (43, 2, 600)
    assert (jobs[e.id].state, jobs[e.id].pri, jobs[e.id].buries, jobs[e.id].kicks) == (
        State.BURIED,
        45,
        2,
        1,
    )
    assert (jobs[f.id].state, jobs[f.id].reserves) == (State.READY, 1)
    assert (jobs[h.id].body, jobs[h.id].pri, jobs[h.id].ttr) == (h.body, 2**32 - 1, 1)
    assert after.engine.ready_count == 4
    assert after.engine.delayed_count == 2
    assert after.engine.buried_count == 1
    assert after.engine.urgent_count == 3  # a, b and f (h's priority is not urgent)
    assert after.engine.next_id == h.id + 1
    after.close()


def test_timeouts_and_delay_promotions_are_logged(rig: Rig) -> None:
    job = rig.put(b"x", ttr=2)
    late = rig.put(b"y", delay=3)
    rig.reserve(job.id)
    rig.advance(10)  # TTR runs out: back to ready, timeouts 1; the delayed job became ready
    after = rig.crash()
    assert after.engine.jobs[job.id].timeouts == 1
    assert after.engine.jobs[late.id].state is State.READY
    same_state(rig, after)
    after.close()


def test_delays_keep_their_wall_clock_deadline(rig: Rig) -> None:
    job = rig.put(b"later", delay=100)
    rig.advance(10)
    after = rig.restart(later=30)  # down for 30 s: 60 s left
    assert after.engine.job_time_left(after.engine.jobs[job.id], after.now) in (59, 60)
    again = after.restart(later=200)  # past the deadline: ready at once
    assert again.engine.jobs[job.id].state is State.READY
    assert round(again.now - again.engine.jobs[job.id].created) == 10 + 30 + 200
    again.close()


def test_ids_continue_past_the_highest_ever_seen(rig: Rig) -> None:
    for i in range(5):
        rig.put(b"%d" % i)
    rig.delete(5)
    rig.delete(4)
    after = rig.restart()
    assert after.engine.next_id == 6
    # put and deleted within one batch: never written, yet its id must not come back
    assert after.log.can_put(1)
    job = after.engine.put(after.s, 0, 0, 60, b"z", after.now)
    assert after.engine.delete(after.s, job.id)
    after.flush()
    again = after.crash()
    assert again.engine.next_id == job.id + 1
    _close_all(after, again)


def test_buried_jobs_come_back_in_the_order_they_were_buried(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    jobs = [rig.put(b"job %d" % i) for i in range(6)]
    for i in (3, 0, 5, 1):
        rig.reserve(jobs[i].id)
        rig.bury(jobs[i].id, pri=i)
    for _ in range(300):  # churn until the buried jobs have been rewritten by compaction
        rig.reserve(jobs[2].id)
        rig.release(jobs[2].id, pri=1, delay=10)
    assert rig.log.records_migrated > 0
    expected = [jobs[i].id for i in (3, 0, 5, 1)]
    assert buried_order(rig.engine)[b"default"] == expected
    after = rig.restart()
    assert buried_order(after.engine)[b"default"] == expected
    same_state(rig, after)
    after.close()


@pytest.mark.parametrize("pris", [[5, 5, 7, 9], [9, 1, 7, 1, 0, 3]], ids=["in-order", "shuffled"])
def test_replayed_jobs_are_served_by_priority_then_id(rig: Rig, pris: list[int]) -> None:
    """Ready jobs come back in (pri, id) order whether or not they were put in that order
    (replay skips building the heap when they were), delayed ones when their time comes."""
    jobs = [rig.put(b"job %d" % i, pri=pri) for i, pri in enumerate(pris)]
    later = rig.put(b"delayed", pri=0, delay=100)
    after = rig.restart()
    served = []
    for _ in jobs:
        served.append(after.reserve().id)
        after.delete(served[-1])
    assert served == [j.id for j in sorted(jobs, key=lambda j: (j.pri, j.id))]
    after.advance(101)
    assert after.reserve().id == later.id
    after.close()


U32_ = st.integers(0, 2**32 - 1)


@given(
    pri=U32_,
    jid=st.integers(1, 2**63 - 1),
    delay=U32_,
    ttr=U32_,
    stamp=st.integers(0, 2**63 - 1),
    created=st.floats(0, 1e9),
    offset=st.floats(-1e9, 2e9),
    counters=st.just([0] * 5) | st.lists(st.integers(0, 2**33), min_size=5, max_size=5),
    state=st.sampled_from([State.READY, State.RESERVED, State.BURIED, State.DELAYED]),
)
def test_a_record_holds_the_fields_of_the_job_it_records(
    pri: int,
    jid: int,
    delay: int,
    ttr: int,
    stamp: int,
    created: float,
    offset: float,
    counters: list[int],
    state: State,
) -> None:
    """Every record is packed field by field, except the commonest (a ready job with no
    counters yet), which is packed with its zeros as padding: the bytes must be the same."""
    engine = Engine(0.0)
    job = engine.put(engine.connect(), 0, 0, 1, b"body", created)
    job.id, job.pri, job.delay, job.ttr = jid, pri, delay, ttr
    job.state = state
    job.deadline = created + 5
    job.reserves, job.timeouts, job.releases, job.buries, job.kicks = counters
    disk = {State.READY: 1, State.RESERVED: 2, State.BURIED: 3, State.DELAYED: 4}[state]
    expected = bl.REC.pack(
        bl.REC_MAGIC,
        0,
        91,
        pri,
        jid,
        stamp,
        job.deadline + offset if state is State.DELAYED else 0.0,
        created + offset,
        delay,
        ttr,
        *(c & 0xFFFFFFFF for c in counters),
        disk,
        7,
        0,
    )
    assert bl._rec_header(job, 91, stamp, offset, 7) == expected


@given(
    tube=st.binary(min_size=1, max_size=bl.MAX_TUBE + 20),
    body=st.binary(max_size=300),
    stamp=st.integers(0, 2**63 - 1),
    offset=st.floats(-1e9, 2e9),
    counters=st.just([0] * 5) | st.lists(st.integers(0, 2**33), min_size=5, max_size=5),
    state=st.sampled_from([State.READY, State.RESERVED, State.BURIED, State.DELAYED]),
)
def test_a_full_record_is_its_header_its_tube_and_its_body(
    tube: bytes,
    body: bytes,
    stamp: int,
    offset: float,
    counters: list[int],
    state: State,
) -> None:
    """A put's record is packed with its tube in one go: the bytes must be those of the
    general layout, for every tube length (the longest ones take the general path)."""
    engine = Engine(0.0)
    session = engine.connect()
    engine.use(session, tube)
    job = engine.put(session, 7, 3, 60, body, 12.5)
    job.state = state
    job.deadline = 20.0
    job.reserves, job.timeouts, job.releases, job.buries, job.kicks = counters
    header = bl._rec_header(job, bl.HS + len(tube) + len(body), stamp, offset, len(tube))
    parts: list[bytes] = []
    bl._record(parts, job, stamp, offset)
    assert b"".join(parts) == header + tube + body
    short: list[bytes] = []
    bl._record(short, job, stamp, offset, full=False)
    assert short == [bl._rec_header(job, bl.HS, stamp, offset, 0)]


def test_reserved_jobs_come_back_ready_with_their_reserve_counted(rig: Rig) -> None:
    job = rig.put(b"x", pri=3)
    rig.reserve()
    after = rig.crash()
    got = after.engine.jobs[job.id]
    assert (got.state, got.reserves, got.pri) == (State.READY, 1, 3)
    assert after.engine.reserved_count == 0
    assert after.engine.ready_count == 1
    after.close()


def test_replay_of_an_empty_directory_and_of_an_empty_log(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal")
    assert rig.engine.jobs == {}
    again = rig.restart()
    assert again.engine.jobs == {}
    assert again.engine.next_id == 1
    again.close()


# --- torn and corrupt data ---------------------------------------------------------------------


def _last_frame(r: Rig, action: str) -> tuple[Path, int, int, dict[int, tuple[object, ...]]]:
    """Run ``action`` last; return its frame's file, start and end, and the state before."""
    if action == "release":
        r.reserve(2)
    start = r.log._current().used
    seq = r.log._current().seq
    before = view(r.engine, r.now)
    if action == "put":
        r.put(b"the last job", pri=77)
    else:
        r.release(2, pri=99)
    return r.path / f"binlog.{seq}", start, r.log._current().used, before


def _small_log(tmp_path: Path, name: str) -> Rig:
    wal = tmp_path / name
    wal.mkdir()
    r = Rig(wal)
    for i in range(3):
        r.put(b"job %d" % i, pri=i)
    return r


@pytest.mark.parametrize("action", ["put", "release"])
@pytest.mark.parametrize("damage", ["truncate", "zeros", "flip"])
def test_damage_at_every_byte_of_the_last_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, action: str, damage: str
) -> None:
    """Cut the file (or zero its tail, or flip one byte) at every offset of the last frame:
    the damaged frame alone is dropped (its records are checked by its checksum, the frame's
    header included), and reported with its file and offset."""
    rig = _small_log(tmp_path, "orig")
    path, start, end, before = _last_frame(rig, action)
    intact = view(rig.engine, rig.now)
    assert intact != before
    rig.log.sync()
    pristine = path.read_bytes()
    record_start = start + bl.FRAME.size
    for k in range(start, end):
        data = bytearray(pristine)
        if damage == "truncate":
            data = data[:k]
        elif damage == "zeros":
            data[k:end] = bytes(end - k)
        else:
            data[k] ^= 0xFF
        wal = tmp_path / f"case-{k}"
        shutil.copytree(rig.path, wal)
        (wal / path.name).write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="beanq"):
            after = Rig(wal, now=rig.now, wall=rig.wall)
        got = view(after.engine, after.now)
        after.close()
        shutil.rmtree(wal)
        lost_record = True
        if damage == "zeros" and not any(pristine[k:end]):
            lost_record = False  # those bytes were zeros already: nothing changed
        if k == start and damage != "flip":
            assert got == before, k  # cut exactly between frames: nothing damaged
            continue
        assert got == (before if lost_record else intact), (damage, k)
        if lost_record:
            where = {f"{path.name}:{start}:", f"{path.name}:{record_start}:"}
            assert any(w in caplog.text for w in where), (k, caplog.text)
    rig.close()


def _with_checked_records(data: bytes) -> bytes:
    """A segment as beanq wrote it before records were checked by their frame alone: each
    record with its own magic and checksum (the frames' checksums made anew)."""
    out = bytearray(data)
    p = bl.SEG_HEADER.size
    while out.startswith(bl.FRAME_MAGIC, p):
        _, length, _ = bl.FRAME.unpack_from(out, p)
        q, end = p + bl.FS, p + bl.FS + length
        while q < end:
            (rec_length,) = struct.unpack_from("<I", out, q + 8)
            out[q : q + 4] = bl.REC_MAGIC_CHECKED
            struct.pack_into("<I", out, q + 4, zlib.crc32(out[q + 8 : q + rec_length]))
            q += rec_length
        bl.FRAME.pack_into(out, p, bl.FRAME_MAGIC, length, zlib.crc32(out[p + bl.FS : end]))
        p = end
    return bytes(out)


@pytest.mark.parametrize("records", ["frame-checked", "self-checked"])
def test_a_corrupt_record_in_the_middle_loses_only_its_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, records: str
) -> None:
    """A frame is the unit of integrity: damage in one of its records loses the frame's
    records, and nothing before or after it. Records that carry their own checksum (as
    beanq wrote them before 2026-12-07) are salvaged one by one instead."""
    rig = Rig(tmp_path / "wal")
    first = rig.put(b"first")
    engine = rig.engine
    batch = []
    for i in range(5):  # five puts in one frame
        assert rig.log.can_put(8)
        batch.append(engine.put(rig.s, 0, 0, 60, b"batch %02d" % i, rig.now))
    rig.flush()
    last = rig.put(b"last")
    rig.log.sync()
    seq = rig.log._current().seq
    path = rig.path / f"binlog.{seq}"
    data = bytearray(path.read_bytes())
    if records == "self-checked":
        data = bytearray(_with_checked_records(bytes(data)))
        path.write_bytes(bytes(data))
        assert set(rig.crash().engine.jobs) == {first.id, last.id} | {j.id for j in batch}
    victim = data.find(b"batch 02")
    data[victim] ^= 0x01
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="beanq"):
        after = rig.crash()
    lost = {batch[2].id} if records == "self-checked" else {j.id for j in batch}
    assert set(after.engine.jobs) == {first.id, last.id} | {j.id for j in batch} - lost
    assert f"binlog.{seq}:" in caplog.text
    _close_all(rig, after)


def test_damage_in_an_old_segment_keeps_later_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    jobs = [rig.put(b"job %03d" % i) for i in range(150)]  # several segments
    seqs = sorted(int(f.name.split(".")[1]) for f in rig.path.glob("binlog.*"))
    assert len(seqs) >= 3
    first = rig.path / f"binlog.{seqs[0]}"
    data = bytearray(first.read_bytes())
    data[200] ^= 0xFF  # inside the first frames
    first.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="beanq"):
        after = rig.crash()
    lost = {j.id for j in jobs} - set(after.engine.jobs)
    assert len(lost) == 1
    assert jobs[-1].id in after.engine.jobs
    assert f"binlog.{seqs[0]}:" in caplog.text
    _close_all(rig, after)


# --- space ---------------------------------------------------------------------------------------


class FaultyDisk:
    """Makes a binlog's disk full (no new blocks) or failing (writes fail), through its
    ``allocate`` and ``pwrite``."""

    def __init__(self, log: bl.Binlog) -> None:
        self.full = False
        self.failing = 0  # the next N writes fail with EIO
        self._allocate, self._pwrite = log.allocate, log.pwrite
        log.allocate, log.pwrite = self.allocate, self.pwrite

    def allocate(self, fd: int, offset: int, length: int) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._allocate(fd, offset, length)

    def pwrite(self, fd: int, parts: list[bytes], offset: int) -> int:
        if self.failing:
            self.failing -= 1
            # half of it reaches the file, as a torn write would
            data = b"".join(parts)
            os.pwrite(fd, data[: len(data) // 2], offset)
            raise OSError(errno.EIO, "Input/output error")
        return self._pwrite(fd, parts, offset)


def _hub(engine: Engine, log: bl.Binlog) -> Hub:
    host = HostInfo("test", 1, "host", "os", "x86_64", "0" * 16, lambda: (0.0, 0.0))
    return Hub(engine, host, binlog_stats=log.stats, job_file=log.job_file, can_put=log.can_put)


def test_full_disk_refuses_puts_whole_keeps_deletes_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    log = rig.log
    disk = FaultyDisk(log)
    hub = _hub(rig.engine, log)
    conn = hub.open()

    def send(data: bytes) -> bytes:
        conn.receive(data, rig.now)
        rig.flush()
        out = b"".join(conn.out)
        conn.out.clear()
        return out

    for i in range(10):
        assert send(b"put 0 0 60 100\r\n%s\r\n" % (b"%03d" % i * 34)[:100]).startswith(b"INSERTED")
    disk.full = True
    replies = [send(b"put 0 0 60 100\r\n%s\r\n" % (b"y" * 100)) for _ in range(200)]
    refused = [r for r in replies if r == p.OUT_OF_MEMORY]
    assert refused, "the disk never filled up"
    assert replies.index(refused[0]) + len(refused) == len(replies)  # refused from then on
    accepted = [int(r.split()[1]) for r in replies if r.startswith(b"INSERTED")]
    refused_id = max(accepted, default=10) + 1
    assert send(b"peek %d\r\n" % refused_id) == p.NOT_FOUND  # nothing half-made
    assert not log.stalled
    # every existing job can be deleted on the full disk
    ids = sorted(rig.engine.jobs)
    for jid in ids[:-2]:
        assert send(b"delete %d\r\n" % jid) == p.DELETED
    assert not log.stalled
    # state changes use the headroom; past it they wait in memory, and say so
    with caplog.at_level(logging.ERROR, logger="beanq"):
        for _ in range(80):
            reply = send(b"reserve-with-timeout 0\r\n")
            assert reply.startswith(b"RESERVED"), reply
            assert send(b"release %s 5 0\r\n" % reply.split()[1]) == p.RELEASED
    assert "no space" in caplog.text.lower() or "no room" in caplog.text.lower()
    disk.full = False
    assert send(b"put 0 0 60 3\r\nnew\r\n").startswith(b"INSERTED")
    assert not log.stalled
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="beanq"):
        after = rig.restart()
    assert not caplog.records  # nothing torn or corrupt
    same_state(rig, after)
    after.close()


def test_failed_writes_are_logged_kept_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path / "wal")
    log = rig.log
    disk = FaultyDisk(log)
    a = rig.put(b"a")
    disk.failing = 1
    with caplog.at_level(logging.ERROR, logger="beanq"):
        b = rig.put(b"b")
        rig.reserve(a.id)
        rig.bury(a.id, pri=9)
    assert "Input/output error" in caplog.text
    assert not log.stalled  # the next writes went through, with the failed one
    crashed = rig.crash()
    same_state(rig, crashed)
    disk.failing = 10**6
    rig.delete(b.id)
    assert log.stalled
    crashed_while_failing = rig.crash()
    assert set(crashed_while_failing.engine.jobs) == {a.id, b.id}  # the delete is not on disk
    disk.failing = 0
    rig.advance(1)
    assert not log.stalled
    after = rig.restart()
    same_state(rig, after)
    _close_all(crashed, crashed_while_failing, after)


# --- compaction: disk use stays bounded ---------------------------------------------------------


def _live_bytes(engine: Engine) -> int:
    return sum(bl.HS + len(j.tube.name) + len(j.body) for j in engine.jobs.values())


def _bounded(rig: Rig, worst: list[int]) -> None:
    if rig.fsync:
        rig.log.sync()
    used = rig.disk()
    worst[0] = max(worst[0], used)
    assert used <= 3 * _live_bytes(rig.engine) + rig.segment_size, used


@pytest.mark.parametrize("fsync", [True, False])
def test_622_one_job_released_with_delay_thousands_of_times(tmp_path: Path, fsync: bool) -> None:
    rig = Rig(tmp_path / "wal", segment_size=16384, fsync=fsync)
    job = rig.put(b"j" * 100)
    worst = [0]
    for i in range(3000):
        rig.reserve(job.id)
        rig.release(job.id, pri=i % 7, delay=1000)
        _bounded(rig, worst)
    assert rig.log.stats().current_index > 20  # it went through many segments
    after = rig.restart()
    same_state(rig, after)
    assert after.engine.jobs[job.id].releases == 3000
    after.close()


def test_622_buried_and_kicked_over_and_over(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=16384)
    jobs = [rig.put(b"b" * 50) for _ in range(3)]
    worst = [0]
    for i in range(1500):
        job = jobs[i % 3]
        rig.reserve(job.id)
        rig.bury(job.id, pri=i)
        rig.kick(job.id)
        _bounded(rig, worst)
    after = rig.restart()
    same_state(rig, after)
    after.close()


def test_long_lived_delayed_jobs_among_heavy_churn(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=16384)
    keep = [rig.put(b"k" * 200, delay=10**6) for _ in range(10)]
    worst = [0]
    for i in range(3000):
        job = rig.put(b"c" * 150)
        rig.reserve()
        rig.delete(job.id)
        if i % 10 == 0:
            _bounded(rig, worst)
    after = rig.crash()
    same_state(rig, after)
    assert all(after.engine.jobs[k.id].state is State.DELAYED for k in keep)
    _close_all(rig, after)


# --- a random walk, checked against crashes ------------------------------------------------------


def random_change(rig: Rig, rnd: random.Random, op: float) -> None:
    """One step of a random walk on a random job (``op``: the step's draw, 0.3 and up),
    then maybe time passing and a sync."""
    jobs = rig.engine.jobs
    jid = rnd.choice(list(jobs))
    job = jobs[jid]
    if op < 0.45:
        rig.delete(jid)
    elif job.state is State.RESERVED:
        if op < 0.7:
            rig.release(jid, pri=rnd.randrange(2000), delay=rnd.choice([0, 0, 300]))
        else:
            rig.bury(jid, pri=rnd.randrange(2000))
    elif job.state in (State.BURIED, State.DELAYED) and op < 0.6:
        rig.kick(jid)
    else:
        rig.reserve(jid)
    if rnd.random() < 0.05:
        rig.advance(rnd.choice([1, 400]))
    if rnd.random() < 0.2:
        rig.log.sync()


def test_random_operations_survive_crashes_at_any_point(tmp_path: Path) -> None:
    """Random puts, reserves, releases, buries, kicks and deletes on 4 KiB segments, with
    compaction, syncs and segment deletion going on; every so often the directory is
    copied as it stands and replayed: the copy must hold exactly the engine's state."""
    rnd = random.Random(622)
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    tubes = [b"default", b"a", b"bb"]
    for step in range(2500):
        jobs = rig.engine.jobs
        op = rnd.random()
        if op < 0.3 or not jobs:
            body = b"%d" % step * rnd.randrange(1, 20)
            delay = rnd.choice([0, 0, 0, 500])
            rig.put(body, pri=rnd.randrange(2000), tube=rnd.choice(tubes), delay=delay)
            continue
        random_change(rig, rnd, op)
        if step % 250 == 249:
            crashed = rig.crash()
            same_state(rig, crashed)
            crashed.close()
    assert rig.log.records_migrated > 0
    after = rig.restart()
    same_state(rig, after)
    after.close()


def test_sync_from_another_thread_while_writing(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    stop = threading.Event()
    errors: list[BaseException] = []

    def syncer() -> None:
        try:
            while not stop.wait(0.0005):  # group commit: one fsync after another
                rig.log.sync()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    try:
        for i in range(1500):
            job = rig.put(b"x" * (i % 50))
            if i % 3:
                rig.reserve(job.id)
                rig.release(job.id, pri=1, delay=i % 2 * 100)
            if i % 4 == 0:
                rig.delete(job.id)
    finally:
        stop.set()
        thread.join()
    assert not errors
    after = rig.restart()
    same_state(rig, after)
    after.close()


# --- stats, files, locking ------------------------------------------------------------------------


def test_stats_and_job_file(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    stats = rig.log.stats()
    assert (stats.oldest_index, stats.current_index, stats.records_written) == (1, 1, 0)
    assert stats.max_size == SMALL
    jobs = [rig.put(b"%d" % i * 40) for i in range(40)]
    stats = rig.log.stats()
    assert stats.records_written == 40
    assert stats.current_index > 1
    assert rig.log.job_file(jobs[-1]) == stats.current_index
    assert rig.log.job_file(jobs[0]) == stats.oldest_index == 1
    rig.reserve(jobs[0].id)
    assert rig.log.job_file(jobs[0]) == stats.current_index
    hub = _hub(rig.engine, rig.log)
    body = hub.stats_job_body(jobs[0], rig.now)
    assert b"file: %d\n" % stats.current_index in body
    assert b"binlog-records-written: 41\n" in hub.stats_body(rig.now)
    rig.close()


def test_a_second_binlog_on_the_same_directory_is_refused(rig: Rig) -> None:
    with pytest.raises(bl.BinlogError) as info:
        bl.Binlog.open(str(rig.path))
    assert info.value.code == 10
    assert str(info.value) == f"failed to lock wal dir {rig.path}"


def test_a_missing_directory_is_refused_like_beanstalkd(tmp_path: Path) -> None:
    with pytest.raises(bl.BinlogError) as info:
        bl.Binlog.open(str(tmp_path / "nope"))
    assert info.value.code == 10


def test_superseded_segments_are_deleted(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    jobs = [rig.put(b"x" * 60) for _ in range(100)]
    for job in jobs:
        rig.delete(job.id)
    rig.log.sync()
    files = sorted(f.name for f in rig.path.glob("binlog.*"))
    assert files == [f"binlog.{rig.log.stats().current_index}"]
    rig.close()


@pytest.mark.parametrize("fsync", [True, False])
def test_full_segments_give_back_their_preallocated_room(tmp_path: Path, fsync: bool) -> None:
    """A segment that stops being current is cut back to what it holds: by the next sync
    (on the fsync thread, not in the loop), or by the next write without fsync (-F)."""
    rig = Rig(tmp_path / "wal", segment_size=SMALL, fsync=fsync)
    for _ in range(60):
        rig.put(b"x" * 100)
    if fsync:
        rig.log.sync()
    else:
        rig.put(b"x" * 100)
    current = f"binlog.{rig.log.stats().current_index}"
    old = [f for f in rig.path.glob("binlog.*") if f.name != current]
    assert len(old) >= 3
    for f in old:
        data = f.read_bytes()
        assert len(data) == len(data.rstrip(b"\0")), f.name  # no zeroed room left at the end
    rig.close()


def test_deleted_jobs_stay_deleted_while_their_full_record_exists(tmp_path: Path) -> None:
    """A job's tombstone must outlive its full record: here the victim's full record sits in
    the first segment, kept by long-lived jobs, while the segment with its tombstone would
    otherwise be garbage as soon as the churn after it has died."""
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    keep = [rig.put(b"k" * 900) for _ in range(3)]
    victim = rig.put(b"victim")
    while rig.log.stats().current_index == 1:
        keep.append(rig.put(b"f" * 900))
    keep += [rig.put(b"g" * 900) for _ in range(10)]  # enough live data: no compaction
    last = rig.log.stats().current_index
    while rig.log.stats().current_index == last:  # a segment with nothing live in it
        rig.delete(rig.put(b"c" * 40).id)
    tomb = rig.log.stats().current_index
    rig.delete(victim.id)
    for _ in range(300):  # churn: segments that die right after they are written
        rig.delete(rig.put(b"c" * 40).id)
    assert rig.log.stats().current_index > tomb + 2
    rig.log.sync()
    first = rig.path / "binlog.1"
    assert first.exists()  # the long-lived jobs keep it, with the victim's full record
    crashed = rig.crash()
    assert victim.id not in crashed.engine.jobs
    after = rig.restart()
    assert victim.id not in after.engine.jobs
    assert all(k.id in after.engine.jobs for k in keep)
    _close_all(crashed, after)


def test_compaction_finds_jobs_after_the_engine_rebuilt_its_table(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=16384)
    rig.engine.jobs = dict(rig.engine.jobs)  # as Engine.shrink() does
    job = rig.put(b"j" * 100)
    for i in range(1000):
        rig.reserve(job.id)
        rig.release(job.id, pri=i % 3, delay=100)
    rig.log.sync()
    assert rig.disk() <= 3 * _live_bytes(rig.engine) + 16384
    rig.close()


def test_jobs_bigger_than_a_segment(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    big = [rig.put(bytes([i]) * (5 * SMALL + i), pri=i) for i in range(5)]
    small = rig.put(b"small")
    rig.delete(big[1].id)
    after = rig.crash()
    same_state(rig, after)
    assert after.engine.jobs[big[4].id].body == bytes([4]) * (5 * SMALL + 4)
    assert small.id in after.engine.jobs
    _close_all(rig, after)


def test_a_beanstalkd_format_5_file(tmp_path: Path) -> None:
    """beanstalkd 1.4.4 to 1.10 wrote format 5: size_t name lengths, times in microseconds."""
    from beanq import binlog_v7 as v7

    def full(jid: int, pri: int, body: bytes, state: int, delay_us: int = 0) -> bytes:
        created = int(WALL0 * 1e6)
        rec = v7.JOBREC5.pack(
            jid,
            pri,
            delay_us,
            60_000_000,
            len(body) + 2,
            created,
            created + delay_us,
            1,
            0,
            2,
            0,
            0,
            state,
        )
        return v7.NAMELEN5.pack(4) + b"tube" + rec + body + b"\r\n"

    def short(jid: int, state: int) -> bytes:
        rec = v7.JOBREC5.pack(jid, 5, 0, 60_000_000, 0, 0, 0, 0, 0, 0, 0, 0, state)
        return v7.NAMELEN5.pack(0) + rec

    data = v7.VERSION.pack(5) + full(1, 10, b"one", v7.READY) + full(2, 20, b"two", v7.BURIED)
    data += full(3, 30, b"three", v7.DELAYED, delay_us=100_000_000) + short(1, v7.INVALID)
    (tmp_path / "wal" / "binlog.7").write_bytes(data)
    rig = Rig(tmp_path / "wal")
    jobs = rig.engine.jobs
    assert sorted(jobs) == [2, 3]
    assert (jobs[2].tube.name, jobs[2].body, jobs[2].state, jobs[2].pri) == (
        b"tube",
        b"two",
        State.BURIED,
        20,
    )
    assert (jobs[2].reserves, jobs[2].releases, jobs[2].ttr) == (1, 2, 60)
    assert (jobs[3].state, jobs[3].delay) == (State.DELAYED, 100)
    assert rig.engine.job_time_left(jobs[3], rig.now) in (99, 100)
    assert rig.log.stats().current_index == 8
    rig.close()
