"""Schedules in the binlog (issue 17): their records replay exactly after a crash or a restart,
each new segment carries them all (so compaction and unlinking never lose or revive one), and
after downtime the catch-up policy applies to the times missed, never to a time already fired.

Uses test_binlog's rig: an engine and a ``Binlog`` driven by hand; "crash" replays a copy of
the directory as a kill -9 leaves it, "restart" closes cleanly first.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest

from beanq import binlog as bl
from beanq import schedules
from beanq.schedules import Schedule
from tests.test_binlog import SMALL, WALL0, Rig, same_state


@pytest.fixture(autouse=True)
def _wal_dir(tmp_path: Path) -> None:
    (tmp_path / "wal").mkdir()


def add(rig: Rig, name: str, **definition: Any) -> Schedule:
    sched = schedules.parse(name.encode(), json.dumps(definition).encode(), rig.wall)
    rig.engine.schedule_book().add(rig.engine, sched, rig.now)
    rig.flush()
    return sched


def book(rig: Rig) -> dict[bytes, dict[str, Any]]:
    b = rig.engine.schedules
    return {} if b is None else {n: s.to_dict() for n, s in b.by_name.items()}


def armed(rig: Rig) -> dict[bytes, float]:
    """Each schedule's timer, on the wall clock (so that two boots compare)."""
    b = rig.engine.schedules
    assert b is not None
    out = {}
    for name, s in b.by_name.items():
        if s.paused:
            assert s.entry is None
            continue
        assert s.entry is not None and s.entry in rig.engine.timers
        out[name] = s.entry[0] + rig.engine.wall_offset
    return out


def step(rig: Rig, seconds: float) -> None:
    """Time passes in one-second ticks, as the server's loop would wake."""
    for _ in range(int(seconds)):
        rig.advance(1.0)


@pytest.mark.parametrize("how", ["crash", "restart"])
def test_schedules_and_their_state_replay_exactly(tmp_path: Path, how: str) -> None:
    rig = Rig(tmp_path / "wal")
    add(rig, "every", tube="a", every=10, body_b64="AAEC/w==", pri=3, ttr=9, delay=2)
    add(rig, "cron", tube="b", cron="*/1 * * * *", tz="Europe/Paris", overlap="allow")
    add(rig, "paused", tube="c", every=5)
    add(rig, "gone", tube="c", every=5)
    step(rig, 125)
    b = rig.engine.schedule_book()
    b.pause(rig.engine, b"paused")
    b.remove(rig.engine, b"gone")
    rig.flush()
    assert b.by_name[b"every"].fired == 1 and b.by_name[b"every"].skipped == 11
    assert b.by_name[b"cron"].fired == 2
    other = rig.crash() if how == "crash" else rig.restart()
    assert book(other) == book(rig)
    assert armed(other) == pytest.approx(armed(rig))
    same_state(rig, other)
    # the overlap rule holds across the restart: the job "every" put is still alive
    step(other, 10)
    assert other.engine.schedule_book().by_name[b"every"].skipped == 12
    other.close()


def test_segments_holding_only_superseded_schedule_records_go(tmp_path: Path) -> None:
    """Jobs churn through many small segments; the ones holding the schedules' first records
    are unlinked once later snapshots are complete, and replay still finds every schedule
    (and not the removed one)."""
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    add(rig, "kept", tube="t", every=3600)
    add(rig, "removed", tube="t", every=3600)
    first = min(rig.log._segments)
    rig.engine.schedule_book().remove(rig.engine, b"removed")
    rig.flush()
    for i in range(300):
        job = rig.put(b"x" * 100)
        if i % 2:
            rig.delete(job.id)
    rig.log.sync()
    assert first not in rig.log._segments  # (its records live only in the snapshots now)
    other = rig.crash()
    assert set(book(other)) == {b"kept"}
    assert book(other) == book(rig)
    same_state(rig, other)
    other.close()


def test_a_server_without_schedules_writes_no_schedule_record(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    for _ in range(100):
        rig.put(b"y" * 100)
    for path in (tmp_path / "wal").iterdir():
        data = path.read_bytes()
        assert b'"snap"' not in data and b'"set"' not in data
    assert rig.engine.schedules is None
    rig.close()


@pytest.mark.parametrize(
    ("catchup", "fired", "missed"), [("none", 0, 60), ("one", 1, 59), ("all", 60, 0)]
)
def test_catchup_applies_to_times_missed_while_down(
    tmp_path: Path, catchup: str, fired: int, missed: int
) -> None:
    rig = Rig(tmp_path / "wal")
    add(rig, "m", tube="t", every=60, start=WALL0 + 30, catchup=catchup, overlap="allow")
    step(rig, 31)  # the time at +30 fires
    assert rig.engine.schedule_book().by_name[b"m"].fired == 1
    other = rig.crash(later=3600)  # down for an hour: 60 times pass, the newest 1 s ago
    other.advance(0.5)
    s = other.engine.schedule_book().by_name[b"m"]
    assert (s.fired - 1, s.missed) == (fired, missed)
    assert len(other.engine.jobs) == 1 + fired
    assert s.next_fire == WALL0 + 30 + 61 * 60
    again = other.crash()  # and the catch-up is durable: replaying it fires nothing more
    again.advance(0.5)
    assert book(again) == book(other)
    assert len(again.engine.jobs) == 1 + fired
    for r in (rig, other, again):
        r.close()


def test_a_crash_between_a_fire_and_its_jobs_record_never_fires_that_time_again(
    tmp_path: Path,
) -> None:
    """The schedule's record is written before the job's put: if the process dies in between,
    the job is lost but the time is not fired twice."""
    rig = Rig(tmp_path / "wal")
    add(rig, "m", tube="t", every=60, start=WALL0 + 10, catchup="all")
    rig.now += 10
    rig.wall += 10
    rig.engine.tick(rig.now)
    (at, kind, payload), *_ = rig.engine.ops
    assert at == 0 and len(rig.engine.changes) == 1
    rig.log.write([], rig.now, rig.wall, [(0, kind, payload)])  # the record, not the put
    other = rig.crash()
    other.advance(0.5)
    s = other.engine.schedule_book().by_name[b"m"]
    assert (s.fired, s.last_fire, s.next_fire) == (1, WALL0 + 10, WALL0 + 70)
    assert other.engine.jobs == {}
    assert s.last_job_id == 1 and other.engine.next_id == 2  # (its id is not reused)
    rig.close()
    other.close()


def test_schedule_records_are_salvaged_like_job_records(tmp_path: Path) -> None:
    """A D_SCHEDULE record with a checksum of its own passes the per-record check that
    salvage applies to damaged frames (one checked by its frame alone cannot be vouched for)."""
    data = b"".join(bl._schedule_record(b'{"rm":"x"}', 5))
    assert bl._record_ok(data, memoryview(data), 0, len(data)) == 0
    checked = bl.REC_MAGIC_CHECKED + zlib.crc32(data[8:]).to_bytes(4, "little") + data[8:]
    assert bl._record_ok(checked, memoryview(checked), 0, len(checked)) == len(checked)


def test_a_schedule_that_no_longer_parses_is_dropped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A zone that left the time-zone database must not stop the server from starting."""
    rig = Rig(tmp_path / "wal")
    add(rig, "ok", tube="t", every=60)
    bad = add(rig, "zone", tube="t", cron="0 * * * *", tz="Europe/Paris")
    bad.trigger.tz = "Mars/Olympus"  # (as if tzdata had lost it: the next record says so)
    bad.head = None  # (its record's JSON is made once: made again)
    rig.engine.schedule_book().pause(rig.engine, b"zone")
    rig.flush()
    other = rig.crash()
    assert set(book(other)) == {b"ok"}
    assert "schedule zone cannot be restored" in caplog.text
    rig.close()
    other.close()


def test_many_fires_in_one_tick_span_segments_and_replay(tmp_path: Path) -> None:
    """A tick's fire records share frames; when they fill a small segment, the rest goes on in
    the next one (after its snapshot), and replay agrees."""
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    for i in range(60):
        add(rig, f"s{i:02d}", tube="t", every=1, overlap="allow", body="x" * 20)
    first = max(rig.log._segments)
    for _ in range(3):
        rig.advance(1.0)
    assert max(rig.log._segments) > first + 2  # (the fires filled segments)
    b = rig.engine.schedule_book()
    assert all(s.fired == 3 for s in b.by_name.values())
    other = rig.crash()
    assert book(other) == book(rig)
    same_state(rig, other)
    rig.close()
    other.close()


def many(rig: Rig, n: int, every: float = 1.0) -> None:
    """``n`` interval schedules spread over ``every`` seconds, each fire a put."""
    b = rig.engine.schedule_book()
    for i in range(n):
        d = {"tube": "t", "every": every, "start": rig.wall + every * i / n, "overlap": "allow"}
        b.add(rig.engine, schedules.from_dict(b"s%04d" % i, d, rig.wall), rig.now)
    rig.flush()


def frames_written(rig: Rig) -> list[int]:
    """Sizes of the writes the binlog makes from now on."""
    sizes: list[int] = []
    pwrite = rig.log.pwrite

    def spy(fd: int, parts: list[bytes], offset: int) -> int:
        sizes.append(sum(len(p) for p in parts))
        return pwrite(fd, parts, offset)

    rig.log.pwrite = spy
    return sizes


def test_no_write_carries_the_whole_snapshot(tmp_path: Path) -> None:
    """A new segment's snapshot of 1,000 schedules (~250 KB) goes out in parts over the
    writes that follow, each part a bounded share (the whole of it in one write stalled the
    server's loop at each new segment); segments before the last complete snapshot go."""
    rig = Rig(tmp_path / "wal", segment_size=1 << 20)
    many(rig, 1000)
    sizes = frames_written(rig)
    first = min(rig.log._segments)
    for _ in range(100):  # 1,000 fires a second for 10 s, in 0.1 s ticks: segments roll
        rig.advance(0.1)
        for job_id in list(rig.engine.jobs):
            rig.delete(job_id)
    rig.log.sync()
    assert max(rig.log._segments) - first >= 2
    assert max(sizes) < 64 << 10  # (the largest write: a tick's fires, or a part)
    assert first not in rig.log._segments  # (a later snapshot was complete, then synced)
    other = rig.crash()
    assert book(other) == book(rig)
    same_state(rig, other)
    rig.close()
    other.close()


def test_a_crash_anywhere_in_a_snapshot_replays_exactly(tmp_path: Path) -> None:
    """kill -9 after any write while snapshots are under way (parts written, not all; a
    schedule removed, added, paused, fired between parts; segments unlinked as they go):
    replay finds every schedule as it was, none that was removed."""
    rig = Rig(tmp_path / "wal", segment_size=16 << 10)
    many(rig, 150, every=2.0)
    b = rig.engine.schedule_book()
    for step_no in range(60):
        rig.advance(0.25)
        for job_id in list(rig.engine.jobs)[:-5]:
            rig.delete(job_id)
        name = b"s%04d" % (step_no * 7 % 150)
        if step_no % 5 == 1:
            b.remove(rig.engine, name)
        elif step_no % 5 == 2:
            b.add(
                rig.engine, schedules.from_dict(name, {"tube": "u", "every": 3}, rig.wall), rig.now
            )
        elif step_no % 5 == 3:
            b.pause(rig.engine, name)
        rig.flush()
        if step_no % 4 == 0:
            rig.log.sync()  # (unlinks what the floor no longer keeps)
        other = rig.crash()
        assert book(other) == book(rig), step_no
        assert armed(other) == pytest.approx(armed(rig))
        other.close()
    assert min(rig.log._segments) > 1
    rig.close()


FIXTURE = Path(__file__).parent / "data" / "binlog-schedules-v1"


def test_a_directory_written_by_the_previous_build_replays(tmp_path: Path) -> None:
    """Segments written before snapshots came in parts (each begins with a whole one, and
    older segments hold records of a schedule removed since): replayed as that build left
    them, then written on in the new way, and replayed again."""
    wal = tmp_path / "wal"
    wal.rmdir()
    shutil.copytree(FIXTURE, wal)
    expect = json.loads(FIXTURE.with_suffix(".json").read_text())
    rig = Rig(wal, segment_size=16384, wall=expect["wall"])
    assert {k.decode(): v for k, v in book(rig).items()} == expect["schedules"]
    jobs = {
        str(j): [job.tube.name.decode(), job.body.decode("latin-1"), job.state.name]
        for j, job in rig.engine.jobs.items()
    }
    assert jobs == expect["jobs"]
    assert rig.engine.next_id == expect["next_id"]
    step(rig, 30)
    other = rig.restart()
    assert book(other) == book(rig)
    same_state(rig, other)
    rig.close()
    other.close()
