"""Periodic schedules (issue 17) in the engine: fire times of intervals and cron expressions
(DST in two zones), overlap, catch-up after missed times, replace, pause and resume. The engine
is driven by its own timer deadlines, so years of fires take milliseconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from beanq import schedules
from beanq.schedules import MAX_CATCHUP, Schedule, ScheduleError
from beanq.tubes import OP_SCHEDULE, Engine

EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def engine_at(wall: float) -> Engine:
    e = Engine(100.0)
    e.wall_offset = wall - 100.0
    return e


def add(e: Engine, name: str, now: float | None = None, **definition: object) -> Schedule:
    sched = schedules.parse(
        name.encode(), json.dumps(definition).encode(), (now or e.started) + e.wall_offset
    )
    e.schedule_book().add(e, sched, e.started if now is None else now)
    return sched


def run_until(
    e: Engine, now: float, wall_end: float, drain: bool = True
) -> tuple[float, list[tuple[str, float]]]:
    """Tick at each deadline the engine asks for up to ``wall_end``; with ``drain``, delete
    every job as it appears (so overlap skip never holds a fire back). Returns the engine time
    reached and every (schedule name, fire time) in order."""
    fires: list[tuple[str, float]] = []
    end = wall_end - e.wall_offset
    book = e.schedule_book()
    seen = {s.name: s.fired for s in book.by_name.values()}
    while True:
        when = e.tick(now)
        for s in book.by_name.values():
            if s.fired != seen.get(s.name, 0):
                seen[s.name] = s.fired
                assert s.last_fire is not None
                fires.append((s.name.decode(), s.last_fire))
        if drain:
            for job_id in list(e.jobs):
                del_job(e, job_id)
        if when is None or when > end:
            return now, fires
        now = max(now, when)


def del_job(e: Engine, job_id: int) -> None:
    s = e.connect()
    assert e.reserve_job(s, job_id, 0.0) is not None
    assert e.delete(s, job_id)
    e.disconnect(s, 0.0)


def local(ts: float, zone: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def test_interval_fires_on_its_grid_for_a_year() -> None:
    e = engine_at(EPOCH)
    add(e, "tick", tube="t", every=3600, start=EPOCH + 1800)
    _, fires = run_until(e, 100.0, EPOCH + 365 * 86400)
    assert len(fires) == 365 * 24
    assert [t for _, t in fires] == [EPOCH + 1800 + 3600 * k for k in range(365 * 24)]


def test_cron_every_five_minutes_and_with_seconds() -> None:
    e = engine_at(EPOCH)
    add(e, "five", tube="t", cron="*/5 * * * *")
    add(e, "sec", tube="t", cron="*/20 * * * * *", overlap="allow")
    _, fires = run_until(e, 100.0, EPOCH + 3600)
    five = [t for n, t in fires if n == "five"]
    sec = [t for n, t in fires if n == "sec"]
    assert five == [EPOCH + 300 * k for k in range(1, 13)]
    assert sec == [EPOCH + 20 * k for k in range(1, 181)]


def test_a_fired_job_is_a_put_with_the_schedules_fields() -> None:
    e = engine_at(EPOCH)
    s = add(e, "j", tube="jobs", every=10, body="hello", pri=7, ttr=30, delay=5)
    e.tick(100.0 + 10)
    (job,) = e.jobs.values()
    assert (job.tube.name, job.body, job.pri, job.ttr, job.delay) == (b"jobs", b"hello", 7, 30, 5)
    assert job.deadline == 100.0 + 10 + 5  # delayed from the fire
    assert s.last_job_id == job.id and s.fired == 1 and s.last_fire == EPOCH + 10
    assert e.changes[-1] is job
    # the schedule's record comes before the job's put (a crash between them cannot fire twice)
    at, kind, payloads = e.ops[-1]  # (with the add's record: consecutive ones share a frame)
    assert kind == OP_SCHEDULE and at <= len(e.changes) - 1 and len(payloads) == 2
    payload = payloads[-1]
    replayed = schedules.Replay()
    records = replayed.records
    records["j"] = json.loads(schedules.record(s))["set"]
    records["j"]["last_job"] = 0
    replayed.apply(payload, 1)  # (a fire's record: packed, not JSON)
    assert records["j"]["last_job"] == job.id and records["j"]["last_fire"] == EPOCH + 10


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("Europe/Berlin", "2026-03-29", "2026-10-25"),
        ("America/New_York", "2026-03-08", "2026-11-01"),
    ],
)
def test_dst_transitions_follow_cronsim(zone: str, spring: str, autumn: str) -> None:
    """cronsim (Debian cron): a fixed time the spring change skips fires at the first minute
    after it; a fixed time the autumn change repeats fires once; a wildcard hour runs on real
    time (no fires in the skipped hour, the repeated hour has its own)."""
    tz = ZoneInfo(zone)
    for day, expr, expected in [
        (spring, "30 2 * * *", "03:00:00"),  # 02:30 does not exist that day
        (autumn, "30 1 * * *" if zone.startswith("America") else "30 2 * * *", None),
    ]:
        start = datetime.fromisoformat(day).replace(tzinfo=tz).timestamp() - 2 * 86400
        e = engine_at(start)
        add(e, "d", tube="t", cron=expr, tz=zone)
        _, fires = run_until(e, 100.0, start + 5 * 86400)
        days = [local(t, zone)[:10] for _, t in fires]
        assert len(days) == len(set(days)) == 5, [local(t, zone) for _, t in fires]  # once a day
        (on_day,) = [local(t, zone) for _, t in fires if local(t, zone).startswith(day)]
        wanted = expected or expr.split()[1].rjust(2, "0") + ":30:00"
        assert on_day[11:19] == wanted, on_day
    # a wildcard hour over the autumn change: every half hour of real time, 25 hours that day
    start = datetime.fromisoformat(autumn).replace(tzinfo=tz).timestamp()
    e = engine_at(start - 1)
    add(e, "w", tube="t", cron="0,30 * * * *", tz=zone)
    _, fires = run_until(e, 100.0, start + 25 * 3600 - 1)
    assert [t for _, t in fires] == [start + 1800 * k for k in range(50)]


def test_overlap_skip_waits_for_the_last_job_and_allow_does_not() -> None:
    e = engine_at(EPOCH)
    skip = add(e, "skip", tube="a", every=10)
    allow = add(e, "allow", tube="b", every=10, overlap="allow")
    now, _ = run_until(e, 100.0, EPOCH + 35, drain=False)
    assert (skip.fired, skip.skipped) == (1, 2)
    assert (allow.fired, allow.skipped) == (3, 0)
    s = e.connect()
    e.reserve_job(s, skip.last_job_id, now)  # alive in any state: reserved still counts
    run_until(e, now, EPOCH + 45, drain=False)
    assert (skip.fired, skip.skipped) == (1, 3)
    e.delete(s, skip.last_job_id)
    run_until(e, now, EPOCH + 55, drain=False)
    assert (skip.fired, skip.skipped) == (2, 3)


@pytest.mark.parametrize(
    ("catchup", "grace", "fired", "missed"),
    [
        ("none", 3600, 0, 60),
        ("one", 3600, 1, 59),
        ("one", 10, 0, 60),  # the newest missed time is 30 s old: beyond its grace
        ("all", 3600, 60, 0),
    ],
)
def test_catchup_after_missed_times(catchup: str, grace: float, fired: int, missed: int) -> None:
    """The engine is not ticked for an hour and a half minute (a stopped server): 60 times of
    a minutely schedule pass, the newest 30 s before the tick."""
    e = engine_at(EPOCH)
    s = add(e, "m", tube="t", every=60, catchup=catchup, grace=grace, overlap="allow")
    e.tick(100.0 + 3630)
    assert (s.fired, s.missed) == (fired, missed)
    assert len(e.jobs) == fired
    assert s.next_fire == EPOCH + 3660


def test_catchup_all_is_capped() -> None:
    e = engine_at(EPOCH)
    s = add(e, "m", tube="t", every=10, catchup="all")
    e.tick(100.0 + 10 * 1000 + 5)
    assert s.fired == MAX_CATCHUP and s.missed == 1000 - MAX_CATCHUP
    assert len(e.jobs) == MAX_CATCHUP


def test_catchup_one_with_an_on_time_fire_puts_only_that_one() -> None:
    e = engine_at(EPOCH)
    s = add(e, "m", tube="t", every=60, catchup="one")
    e.tick(100.0 + 600)  # exactly on the tenth time: that one fires, nine were missed
    assert (s.fired, s.missed, len(e.jobs)) == (1, 9, 1)


def test_long_downtime_of_a_frequent_cron_is_counted_without_a_scan_of_each_time() -> None:
    e = engine_at(EPOCH)
    s = add(e, "m", tube="t", cron="* * * * * *", catchup="none")
    e.tick(100.0 + 30 * 86400 + 0.5)
    assert abs(s.missed - 30 * 86400) <= 2
    assert s.next_fire == EPOCH + 30 * 86400 + 1


def test_replace_keeps_counts_and_retimes_a_new_trigger() -> None:
    e = engine_at(EPOCH)
    add(e, "r", tube="t", every=10)
    run_until(e, 100.0, EPOCH + 25)
    book = e.schedule_book()
    again = add(e, "r", now=125.0, tube="t", every=10, start=EPOCH)  # the same times
    assert book.by_name[b"r"] is again and again.fired == 2 and again.next_fire == EPOCH + 30
    new = add(e, "r", now=125.0, tube="u", every=100, start=EPOCH)
    assert new.fired == 2 and new.next_fire == EPOCH + 100
    assert len(book) == 1
    _, fires = run_until(e, 125.0, EPOCH + 250)
    assert [t for _, t in fires] == [EPOCH + 100, EPOCH + 200]  # the old timer is gone


def test_pause_resume_remove() -> None:
    e = engine_at(EPOCH)
    s = add(e, "p", tube="t", every=10)
    book = e.schedule_book()
    assert book.pause(e, b"p") and s.paused and s.next_fire is None
    _, fires = run_until(e, 100.0, EPOCH + 100)
    assert fires == [] and s.missed == 0
    assert book.resume(e, b"p", 100.0 + 95)
    assert s.next_fire == EPOCH + 100
    _, fires = run_until(e, 195.0, EPOCH + 120)
    assert [t for _, t in fires] == [EPOCH + 100, EPOCH + 110, EPOCH + 120]
    assert book.remove(e, b"p") and not book.remove(e, b"p")
    assert not book.pause(e, b"p") and not book.resume(e, b"p", 0.0)
    assert e.tick(1000.0) is None  # no timer left


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (b"[1]", "not a JSON object"),
        (b"{", "not a JSON object"),
        (b'{"tube":"t"}', "one of 'cron' and 'every'"),
        (b'{"tube":"t","cron":"* * * * *","every":5}', "one of 'cron' and 'every'"),
        (b'{"tube":"-t","every":5}', "'tube'"),
        (b'{"tube":"t","cron":"61 * * * *"}', "bad cron expression"),
        (b'{"tube":"t","cron":"* * *"}', "5 or 6 fields"),
        (b'{"tube":"t","cron":"* * * * *","tz":"Mars/Olympus"}', "unknown time zone"),
        (b'{"tube":"t","every":0}', "'every'"),
        (b'{"tube":"t","every":5,"tz":"UTC"}', "'tz' goes with 'cron'"),
        (b'{"tube":"t","every":5,"pri":-1}', "'pri'"),
        (b'{"tube":"t","every":5,"overlap":"maybe"}', "'overlap'"),
        (b'{"tube":"t","every":5,"catchup":"some"}', "'catchup'"),
        (b'{"tube":"t","every":5,"colour":"red"}', "unknown key 'colour'"),
        (b'{"tube":"t","every":5,"body_b64":"%%%"}', "base64"),
    ],
)
def test_bad_definitions_say_why(definition: bytes, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(")):
        schedules.parse(b"x", definition, EPOCH)


def test_no_schedule_no_module() -> None:
    """An engine without schedules never makes the book (nor imports the cron library)."""
    e = Engine(0.0)
    s = e.connect()
    e.put(s, 0, 0, 1, b"x", 0.0)
    e.tick(10.0)
    assert e.schedules is None


def test_a_fire_refused_like_a_put_is_missed() -> None:
    """Draining, the job cap or a full binlog refuse a schedule's put as they would a client's
    (the hub answers ``engine.room``): the time counts as missed."""
    e = engine_at(EPOCH)
    s = add(e, "r", tube="t", every=10, overlap="allow")
    asked: list[int] = []

    def room(size: int) -> bool:
        asked.append(size)
        return len(asked) != 2

    e.room = room
    s.body = b"12345"
    for k in (1, 2, 3):
        e.tick(100.0 + 10 * k)
    assert (s.fired, s.missed, len(e.jobs), asked) == (2, 1, 2, [5, 5, 5])


def test_fires_spread_over_a_second_are_gathered_into_ticks() -> None:
    """A thousand interval schedules a millisecond apart fire in at most 257 ticks a second
    (one per 1/256 s), each fire at its time or up to 1/256 s later, never earlier: the
    server's loop wakes, turns and writes the binlog per tick, not per fire."""
    e = engine_at(EPOCH)
    for i in range(1000):
        add(e, f"s{i}", tube="t", every=1, start=EPOCH + 1 + i / 1000, overlap="allow")
    book = e.schedule_book()
    now = 100.0
    ticks = 0
    while now < 100.0 + 3:
        when = e.tick(now)
        assert when is not None
        now = when
        before = {s.name: s.fired for s in book.by_name.values()}
        e.tick(now)
        wall = now + e.wall_offset
        fired = [s for s in book.by_name.values() if s.fired != before[s.name]]
        ticks += bool(fired)
        for s in fired:
            assert s.last_fire is not None
            assert 0 <= wall - s.last_fire <= schedules.TICK + 1e-6
    fires = sum(s.fired for s in book.by_name.values())
    assert fires >= 2000
    assert ticks <= fires * 257 / 1000 + 2  # (was one tick per fire)
