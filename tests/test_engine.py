"""The engine against a deliberately simple model: a dict of jobs, scanned every time."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from beanq import schedules
from beanq.tubes import (
    _BLOCK,
    RESERVE_DELETE_BOUNDS,
    SAFETY_MARGIN,
    Engine,
    IdIndex,
    Job,
    KeyedJob,
    Notice,
    Session,
    State,
)

TUBES = [b"default", b"a", b"b"]
WALL = 1_000_000.0  # the engine's wall_offset (schedules' times are wall = now + offset) ...
# ... or one of these, less 30 s: daylight-saving changes in the zones cron schedules use
# (Paris and New York, spring and autumn). Not Lord Howe's half-hour change: after it cronsim
# 2.9 gives "* 3 * * *" 03:30 first, not 03:00 (it keeps the minute when it steps the hour).
TRANSITIONS = [
    datetime(2026, 3, 29, 1, tzinfo=UTC).timestamp(),
    datetime(2026, 10, 25, 1, tzinfo=UTC).timestamp(),
    datetime(2026, 3, 8, 7, tzinfo=UTC).timestamp(),
    datetime(2026, 11, 1, 6, tzinfo=UTC).timestamp(),
]
ZONES = ["UTC", "Europe/Paris", "America/New_York"]
LATE = schedules.LATE


def due(t: float) -> float:
    """When a fire time falls due: the first multiple of 1/256 s at or after it."""
    k = math.floor(t * 256)
    return k / 256 if k / 256 >= t else (k + 1) / 256


@dataclass(frozen=True)
class ModelCron:
    """A cron trigger with any day, month and weekday, its times found by walking real time
    (whole seconds) and reading the local clock in ``zone``: a local time that does not
    exist never comes, one that comes twice fires twice. That is cron's rule for these
    expressions (cronsim applies Debian's fix-ups only to 5 fields with a fixed minute and
    hour, which the model does not make)."""

    expr: str
    zone: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]

    def after(self, t: float) -> float:
        zone = ZoneInfo(self.zone)
        s = math.floor(t) + 1
        while True:
            local = datetime.fromtimestamp(s, zone)
            if local.hour not in self.hours:  # (clocks change on the hour: no change inside)
                s += 3600 - local.minute * 60 - local.second
            elif local.minute not in self.minutes:
                s += 60 - local.second
            elif local.second not in self.seconds:
                s += 1
            else:
                return float(s)


@dataclass
class ModelSchedule:
    """A schedule, its times recomputed from scratch: start + k * every, or ``cron``'s."""

    tube: bytes
    pri: int
    delay: int
    every: float
    start: float
    overlap: str
    catchup: str
    grace: float
    cron: ModelCron | None = None
    paused: bool = False
    next_fire: float | None = None
    last_fire: float | None = None
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    last_job: int = 0

    def after(self, t: float) -> float:
        if self.cron is not None:
            return self.cron.after(t)
        k = max(0, math.floor((t - self.start) / self.every) - 2)  # (then step by step)
        while self.start + k * self.every <= t:
            k += 1
        return self.start + k * self.every


@dataclass
class ModelJob:
    id: int
    tube: bytes
    pri: int
    state: State
    deadline: float = 0.0
    reserver: int | None = None
    size: int = 0
    key: bytes | None = None
    reserved_at: float | None = None  # when reserved, if the engine was observing then
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ["reserves", "timeouts", "releases", "buries", "kicks"], 0
        )
    )


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.engine = Engine(self.now)
        self.sessions: list[Session] = [self.engine.connect() for _ in range(3)]
        self.model: dict[int, ModelJob] = {}
        self.use = {s.id: b"default" for s in self.sessions}
        self.watch = {s.id: [b"default"] for s in self.sessions}
        self.paused: dict[bytes, float] = {}
        self.peak = (0, 0)  # most jobs, most body bytes held since the last take_peak
        # per-tube counters beyond stats-tube (reset when a tube goes away), and what the
        # reserve-to-delete histogram must hold once observing
        self.tube_counts: dict[bytes, Counter[str]] = {}
        self.observing = False
        self.spans: list[float] = []
        self.wall = WALL
        self.engine.wall_offset = WALL
        self.scheds: dict[bytes, ModelSchedule] = {}

    @initialize(epoch=st.sampled_from([None, *TRANSITIONS]))
    def set_clock(self, epoch: float | None) -> None:
        """The wall clock: far from any daylight-saving change, or 30 s before one."""
        if epoch is not None:
            self.wall = self.engine.wall_offset = epoch - 30.0 - self.now

    def _count(self, job: ModelJob, name: str) -> None:
        job.counts[name] += 1
        self.tube_counts.setdefault(job.tube, Counter())[name] += 1

    # --- model helpers -------------------------------------------------------------------

    def _model_tick(self) -> None:
        for job in self.model.values():
            if job.state == State.DELAYED and job.deadline <= self.now:
                job.state = State.READY
            elif job.state == State.RESERVED and job.deadline <= self.now:
                job.state = State.READY
                job.reserver = None
                self._count(job, "timeouts")
        for tube, until in list(self.paused.items()):
            if until <= self.now:
                del self.paused[tube]

    def _best_ready(self, tubes: list[bytes], skip_paused: bool = True) -> ModelJob | None:
        ready = [
            j
            for j in self.model.values()
            if j.state == State.READY
            and j.tube in tubes
            and not (skip_paused and j.tube in self.paused)
        ]
        return min(ready, key=lambda j: (j.pri, j.id), default=None)

    # --- rules ---------------------------------------------------------------------------

    @rule(
        s=st.integers(0, 2),
        pri=st.sampled_from([0, 1, 1023, 1024, 5000]),
        delay=st.sampled_from([0, 0, 1, 5]),
        ttr=st.sampled_from([0, 1, 3, 10]),
        size=st.sampled_from([0, 4, 70000]),
    )
    def put(self, s: int, pri: int, delay: int, ttr: int, size: int) -> None:
        session = self.sessions[s]
        job = self.engine.put(session, pri, delay, ttr, b"b" * size, self.now)
        assert job.id not in self.model
        assert job.ttr == max(ttr, 1)
        tube = self.use[session.id]
        self.model[job.id] = ModelJob(
            job.id,
            tube,
            pri,
            State.DELAYED if delay else State.READY,
            self.now + delay if delay else 0.0,
            size=size,
        )

    @rule(
        s=st.integers(0, 2),
        key=st.sampled_from([b"k1", b"k2", b"k3"]),
        pri=st.sampled_from([0, 1, 1023, 1024, 5000]),
        delay=st.sampled_from([0, 0, 1, 5]),
        size=st.sampled_from([0, 4]),
    )
    def put_unique(self, s: int, key: bytes, pri: int, delay: int, size: int) -> None:
        session = self.sessions[s]
        tube = self.use[session.id]
        held = [m for m in self.model.values() if m.tube == tube and m.key == key]
        found = self.engine.find_unique(session, key)
        if held:
            assert found is not None and found.id == held[0].id
            return
        assert found is None
        job = self.engine.put_unique(session, key, pri, delay, 10, b"u" * size, self.now)
        assert isinstance(job, KeyedJob) and job.id not in self.model
        self.model[job.id] = ModelJob(
            job.id,
            tube,
            pri,
            State.DELAYED if delay else State.READY,
            self.now + delay if delay else 0.0,
            size=size,
            key=key,
        )

    @rule(
        tube=st.sampled_from([*TUBES, b"nowhere"]),
        states=st.sampled_from(
            [
                (State.READY,),
                (State.DELAYED,),
                (State.BURIED,),
                (State.READY, State.DELAYED, State.BURIED),
            ]
        ),
    )
    def flush(self, tube: bytes, states: tuple[State, ...]) -> None:
        gone = [m.id for m in self.model.values() if m.tube == tube and m.state in states]
        assert self.engine.flush(tube, states) == len(gone)
        for job_id in gone:
            del self.model[job_id]

    @rule(
        src=st.sampled_from(TUBES),
        dst=st.sampled_from([*TUBES, b"new"]),
        state=st.sampled_from([State.READY, State.DELAYED, State.BURIED]),
        limit=st.integers(0, 4),
    )
    def move(self, src: bytes, dst: bytes, state: State, limit: int) -> None:
        mine = [m for m in self.model.values() if m.tube == src and m.state == state]
        if state == State.READY:
            mine.sort(key=lambda m: (m.pri, m.id))
        elif state == State.DELAYED:
            mine.sort(key=lambda m: (m.deadline, m.id))
        else:
            order = self._bury_order
            mine.sort(key=lambda m: order.index(m.id))
        taken = {m.key for m in self.model.values() if m.tube == dst and m.key is not None}
        chosen = [] if src == dst else [m for m in mine if m.key not in taken][:limit]
        buried_before = list(self.engine.tubes[dst].buried) if dst in self.engine.tubes else []
        assert self.engine.move(src, dst, state, limit, self.now) == len(chosen)
        for m in chosen:
            m.tube = dst
        if state == State.BURIED and chosen:
            assert list(self.engine.tubes[dst].buried) == buried_before + [m.id for m in chosen]
        self._after_put_like()

    def _after_put_like(self) -> None:
        """Waiting sessions (none in this model: reserves here never wait) get nothing."""
        assert not self.engine.notices

    @rule(
        tube=st.sampled_from([*TUBES, b"nowhere"]),
        state=st.sampled_from([State.READY, State.DELAYED, State.BURIED, State.RESERVED]),
        after=st.integers(0, 30),
        limit=st.integers(1, 5),
    )
    def list_ids(self, tube: bytes, state: State, after: int, limit: int) -> None:
        want = sorted(
            m.id
            for m in self.model.values()
            if m.tube == tube and m.state == state and m.id > after
        )[:limit]
        assert self.engine.list_ids(tube, state, after, limit) == want

    @rule(s=st.integers(0, 2), n=st.integers(1, 4))
    def reserve_batch(self, s: int, n: int) -> None:
        """``reserve_more`` after a first reserve gives what single reserves would."""
        session = self.sessions[s]
        watched = self.watch[session.id]
        first = self.engine.reserve(session, 0, self.now)
        if not isinstance(first, Job):
            return
        jobs = [first]
        self.engine.reserve_more(session, jobs, n, self.now)
        for job in jobs:
            best = self._best_ready(watched)
            assert best is not None and best.id == job.id
            best.state = State.RESERVED
            best.reserver = session.id
            best.deadline = self.now + job.ttr
            best.reserved_at = self.now if self.observing else None
            self._count(best, "reserves")
        assert len(jobs) == n or self._best_ready(watched) is None

    @rule(s=st.integers(0, 2), tube=st.sampled_from(TUBES))
    def use(self, s: int, tube: bytes) -> None:
        self.engine.use(self.sessions[s], tube)
        self.use[self.sessions[s].id] = tube

    @rule(s=st.integers(0, 2), tube=st.sampled_from(TUBES))
    def watch(self, s: int, tube: bytes) -> None:
        session = self.sessions[s]
        count = self.engine.watch(session, tube)
        if tube not in self.watch[session.id]:
            self.watch[session.id].append(tube)
        assert count == len(self.watch[session.id])

    @rule(s=st.integers(0, 2), tube=st.sampled_from(TUBES))
    def ignore(self, s: int, tube: bytes) -> None:
        session = self.sessions[s]
        watched = self.watch[session.id]
        result = self.engine.ignore(session, tube)
        if tube in watched and len(watched) == 1:
            assert result is None
        else:
            if tube in watched:
                watched.remove(tube)
            assert result == len(watched)

    @rule(s=st.integers(0, 2))
    def reserve_now(self, s: int) -> None:
        session = self.sessions[s]
        mine = [j for j in self.model.values() if j.reserver == session.id]
        soon = any(self.now >= j.deadline - SAFETY_MARGIN for j in mine)
        watched = self.watch[session.id]
        any_ready = self._best_ready(watched, skip_paused=False) is not None
        result = self.engine.reserve(session, 0, self.now)
        if soon and not any_ready:
            assert result is Notice.DEADLINE_SOON
            return
        best = self._best_ready(watched)
        if best is None:
            assert result is Notice.TIMED_OUT
            return
        assert isinstance(result, Job)
        assert result.id == best.id, (result, best)
        best.state = State.RESERVED
        best.reserver = session.id
        best.deadline = self.now + result.ttr
        best.reserved_at = self.now if self.observing else None
        self._count(best, "reserves")

    def _held_by(self, s: int) -> list[ModelJob]:
        sid = self.sessions[s].id
        return [j for j in self.model.values() if j.reserver == sid]

    @precondition(lambda self: any(j.state == State.RESERVED for j in self.model.values()))
    @rule(data=st.data(), pri=st.integers(0, 2000), delay=st.sampled_from([0, 2]))
    def release(self, data: st.DataObject, pri: int, delay: int) -> None:
        job = data.draw(st.sampled_from([j for j in self.model.values() if j.reserver]))
        s = next(i for i, x in enumerate(self.sessions) if x.id == job.reserver)
        assert self.engine.release(self.sessions[s], job.id, pri, delay, self.now)
        job.pri = pri
        job.reserver = None
        job.state = State.DELAYED if delay else State.READY
        job.deadline = self.now + delay
        self._count(job, "releases")

    @precondition(lambda self: any(j.state == State.RESERVED for j in self.model.values()))
    @rule(data=st.data(), pri=st.integers(0, 2000))
    def bury(self, data: st.DataObject, pri: int) -> None:
        job = data.draw(st.sampled_from([j for j in self.model.values() if j.reserver]))
        s = next(i for i, x in enumerate(self.sessions) if x.id == job.reserver)
        other = self.sessions[(s + 1) % 3]
        assert not self.engine.bury(other, job.id, pri)  # only the holder may bury
        assert self.engine.bury(self.sessions[s], job.id, pri)
        job.pri = pri
        job.reserver = None
        job.state = State.BURIED
        self._count(job, "buries")

    @rule(s=st.integers(0, 2), bound=st.integers(0, 3), console=st.booleans())
    def kick(self, s: int, bound: int, console: bool) -> None:
        """``console``: the HTTP console's kick, naming the tube (``kick_tube``)."""
        session = self.sessions[s]
        tube = self.use[session.id]
        buried = [j for j in self.model.values() if j.tube == tube and j.state == State.BURIED]
        if buried:
            victims = sorted(buried, key=lambda j: self._bury_order.index(j.id))[:bound]
        else:
            delayed = [
                j for j in self.model.values() if j.tube == tube and j.state == State.DELAYED
            ]
            victims = sorted(delayed, key=lambda j: (j.deadline, j.id))[:bound]
        if console:
            found = self.engine.find_tube(tube)
            assert found is not None  # (used by the session)
            kicked = self.engine.kick_tube(found, bound, self.now)
        else:
            kicked = self.engine.kick(session, bound, self.now)
        assert kicked == len(victims)
        for job in victims:
            job.state = State.READY
            self._count(job, "kicks")

    @property
    def _bury_order(self) -> list[int]:
        order: list[int] = []
        for tube in self.engine.tubes.values():
            order.extend(tube.buried)
        return order

    @rule(s=st.integers(0, 3), data=st.data())
    def delete(self, s: int, data: st.DataObject) -> None:
        """``s`` 3: the HTTP console's delete (no session): any job but a reserved one."""
        session = self.sessions[s] if s < 3 else None
        job_id = data.draw(st.sampled_from([*self.model, 999_999]))
        job = self.model.get(job_id)
        ok = self.engine.delete(session, job_id, self.now)
        allowed = job is not None and (
            job.state != State.RESERVED or (session is not None and job.reserver == session.id)
        )
        assert ok == allowed
        if ok:
            assert job is not None
            self.tube_counts.setdefault(job.tube, Counter())["deletes"] += 1
            if self.observing and job.state == State.RESERVED and job.reserved_at is not None:
                self.spans.append(self.now - job.reserved_at)
            del self.model[job_id]

    @rule(s=st.integers(0, 2), data=st.data())
    def reserve_job(self, s: int, data: st.DataObject) -> None:
        session = self.sessions[s]
        job_id = data.draw(st.sampled_from([*self.model, 999_999]))
        job = self.model.get(job_id)
        result = self.engine.reserve_job(session, job_id, self.now)
        if job is None or job.state == State.RESERVED:
            assert result is None
            return
        assert result is not None and result.id == job_id
        job.state = State.RESERVED
        job.reserver = session.id
        job.deadline = self.now + result.ttr
        job.reserved_at = self.now if self.observing else None
        self._count(job, "reserves")

    @rule(tube=st.sampled_from(TUBES), delay=st.sampled_from([0, 2]))
    def pause(self, tube: bytes, delay: int) -> None:
        exists = self.engine.find_tube(tube) is not None
        assert self.engine.pause_tube(tube, delay, self.now) == exists
        if exists and delay:
            self.paused[tube] = self.now + delay
        elif exists:
            self.paused.pop(tube, None)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 4.0, 4.0, 600.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        before = self.engine.next_id
        due = self._schedules_due()  # (what the engine should put, from the model's times)
        self.engine.tick(self.now)
        self._model_tick()
        self._adopt_scheduled(before, due)

    # --- schedules: interval and cron triggers (DST in detail: tests/test_schedules.py) -----

    def _schedules_due(self) -> dict[bytes, int]:
        """Fire every model schedule due at ``now``: its counts and times; how many jobs each
        puts. A job put by one schedule cannot end another's overlap, so each is alone."""
        wall = self.now + self.wall
        puts: dict[bytes, int] = {}
        for name, m in self.scheds.items():
            if m.paused or m.next_fire is None or due(m.next_fire) > wall:
                continue
            times = []
            t = m.next_fire
            while t <= wall:
                times.append(t)
                t = m.after(t)
            alive = m.last_job in self.model
            n = 0
            on_time = times[-1] if wall - times[-1] <= LATE else None
            late = times[:-1] if on_time is not None else times

            def put(slot: float, overlap: bool, m: ModelSchedule = m) -> None:
                nonlocal n, alive
                if overlap and m.overlap == "skip" and alive:
                    m.skipped += 1
                    return
                n += 1
                alive = True
                m.fired += 1
                m.last_fire = slot

            if on_time is not None:
                put(on_time, True)
            if late:
                if m.catchup == "all":
                    for slot in late[-schedules.MAX_CATCHUP :]:
                        put(slot, False)
                    m.missed += max(0, len(late) - schedules.MAX_CATCHUP)
                elif m.catchup == "one" and on_time is None and wall - late[-1] <= m.grace:
                    put(late[-1], True)
                    m.missed += len(late) - 1
                else:
                    m.missed += len(late)
            m.next_fire = t
            puts[name] = n
        return puts

    def _adopt_scheduled(self, before: int, due: dict[bytes, int]) -> None:
        """The jobs the tick put: as many per schedule as the model says (each schedule's
        priority is its own), each a put into its tube."""
        new = [self.engine.jobs[i] for i in range(before, self.engine.next_id)]
        for name, n in due.items():
            m = self.scheds[name]
            mine = [j for j in new if j.pri == m.pri]
            assert len(mine) == n, (name, m, mine)
            for job in mine:
                assert job.tube.name == m.tube and job.delay == m.delay
                self.model[job.id] = ModelJob(
                    job.id,
                    m.tube,
                    m.pri,
                    State.DELAYED if m.delay else State.READY,
                    self.now + m.delay if m.delay else 0.0,
                    size=len(job.body),
                )
                m.last_job = job.id
        assert len(new) == sum(due.values())

    @rule(
        name=st.sampled_from([b"s0", b"s1"]),
        tube=st.sampled_from(TUBES),
        delay=st.sampled_from([0, 0, 3]),
        every=st.sampled_from([0.5, 1.5, 3.0, 5.0]),
        start=st.sampled_from([None, -2.0, 0.25, 7.0]),
        overlap=st.sampled_from(["skip", "allow"]),
        catchup=st.sampled_from(["none", "one", "all"]),
        grace=st.sampled_from([0.0, 2.0, 60.0]),
    )
    def add_schedule(
        self,
        name: bytes,
        tube: bytes,
        delay: int,
        every: float,
        start: float | None,
        overlap: str,
        catchup: str,
        grace: float,
    ) -> None:
        wall = self.now + self.wall
        begin = wall if start is None else wall + start
        pri = 7000 + int(name[1:])
        d = {
            "tube": tube.decode(),
            "every": every,
            "start": begin,
            "pri": pri,
            "delay": delay,
            "overlap": overlap,
            "catchup": catchup,
            "grace": grace,
            "body": "s",
        }
        sched = schedules.from_dict(name, d, wall)
        replaced = self.engine.schedule_book().add(self.engine, sched, self.now)
        old = self.scheds.get(name)
        assert replaced == (old is not None)
        self._declared(name, ModelSchedule(tube, pri, delay, every, begin, overlap, catchup, grace))

    def _declared(self, name: bytes, m: ModelSchedule) -> None:
        """``m`` added or replacing: a replaced schedule's state carries over, and its place
        in time if the times are the same."""
        old = self.scheds.get(name)
        if old is not None:
            m.paused, m.last_fire, m.last_job = old.paused, old.last_fire, old.last_job
            m.fired, m.skipped, m.missed = old.fired, old.skipped, old.missed
            if (old.cron, old.every, old.start) == (m.cron, m.every, m.start):
                m.next_fire = old.next_fire
        if not m.paused and m.next_fire is None:
            m.next_fire = m.after(self.now + self.wall)
        self.scheds[name] = m

    @rule(
        name=st.sampled_from([b"s0", b"s1", b"s2"]),
        tube=st.sampled_from(TUBES),
        seconds=st.sampled_from([None, 5, 7, 30]),
        minutes=st.sampled_from(["*", "*/2", "10-40"]),
        hours=st.sampled_from(["*", "1-2", "2", "3"]),
        zone=st.sampled_from(ZONES),
        overlap=st.sampled_from(["skip", "allow"]),
        catchup=st.sampled_from(["none", "one", "all"]),
        grace=st.sampled_from([0.0, 2.0, 60.0]),
    )
    def add_cron_schedule(
        self,
        name: bytes,
        tube: bytes,
        seconds: int | None,
        minutes: str,
        hours: str,
        zone: str,
        overlap: str,
        catchup: str,
        grace: float,
    ) -> None:
        """Six fields (every ``seconds``), or five (minutes) when ``seconds`` is None."""
        assume(seconds is not None or minutes.startswith("*") or hours.startswith("*"))
        expr = f"{minutes} {hours} * * *"
        if seconds is not None:
            expr = f"*/{seconds} {expr}"
        minute_set = {
            "*": range(60),
            "*/2": range(0, 60, 2),
            "10-40": range(10, 41),
        }[minutes]
        hour_set = {"*": range(24), "1-2": (1, 2), "2": (2,), "3": (3,)}[hours]
        cron = ModelCron(
            expr,
            zone,
            frozenset(range(0, 60, seconds) if seconds is not None else (0,)),
            frozenset(minute_set),
            frozenset(hour_set),
        )
        pri = 7000 + int(name[1:])
        d = {
            "tube": tube.decode(),
            "cron": expr,
            "tz": zone,
            "pri": pri,
            "overlap": overlap,
            "catchup": catchup,
            "grace": grace,
            "body": "c",
        }
        sched = schedules.from_dict(name, d, self.now + self.wall)
        replaced = self.engine.schedule_book().add(self.engine, sched, self.now)
        assert replaced == (name in self.scheds)
        m = ModelSchedule(tube, pri, 0, 0.0, 0.0, overlap, catchup, grace, cron)
        self._declared(name, m)

    @rule(name=st.sampled_from([b"s0", b"s1", b"s2"]))
    def remove_schedule(self, name: bytes) -> None:
        book = self.engine.schedule_book()
        assert book.remove(self.engine, name) == (self.scheds.pop(name, None) is not None)

    @rule(name=st.sampled_from([b"s0", b"s1", b"s2"]))
    def pause_schedule(self, name: bytes) -> None:
        book = self.engine.schedule_book()
        m = self.scheds.get(name)
        assert book.pause(self.engine, name) == (m is not None)
        if m is not None:
            m.paused, m.next_fire = True, None

    @rule(name=st.sampled_from([b"s0", b"s1", b"s2"]))
    def resume_schedule(self, name: bytes) -> None:
        book = self.engine.schedule_book()
        m = self.scheds.get(name)
        assert book.resume(self.engine, name, self.now) == (m is not None)
        if m is not None and m.paused:
            m.paused, m.next_fire = False, m.after(self.now + self.wall)

    @rule()
    def finish_scheduled_jobs(self) -> None:
        """A worker deletes the jobs schedules put last (what ends an overlap skip)."""
        for m in self.scheds.values():
            job = self.model.get(m.last_job)
            if job is None or job.state == State.RESERVED:
                continue
            assert self.engine.delete(self.sessions[0], job.id, self.now)
            del self.model[job.id]
            self.tube_counts.setdefault(job.tube, Counter())["deletes"] += 1

    @invariant()
    def schedules_match_model(self) -> None:
        book = self.engine.schedules
        if book is None:
            assert not self.scheds
            return
        assert set(book.by_name) == set(self.scheds)
        for name, m in self.scheds.items():
            s = book.by_name[name]
            assert (s.fired, s.skipped, s.missed) == (m.fired, m.skipped, m.missed), (name, m)
            assert (s.paused, s.next_fire, s.last_fire) == (m.paused, m.next_fire, m.last_fire)
            assert s.last_job_id == m.last_job
            # armed exactly when not paused: one live timer entry, due at its next fire
            if m.paused:
                assert s.entry is None
            else:
                assert s.entry is not None and s.entry in self.engine.timers
                assert s.entry[0] == pytest.approx(due(s.next_fire) - self.wall)

    @rule(s=st.integers(0, 2))
    def reconnect(self, s: int) -> None:
        old = self.sessions[s]
        self.engine.disconnect(old, self.now)
        for job in self.model.values():
            if job.reserver == old.id:
                job.reserver = None
                job.state = State.READY
        new = self.engine.connect()
        self.sessions[s] = new
        self.use[new.id] = b"default"
        self.watch[new.id] = [b"default"]

    @precondition(lambda self: not self.observing)
    @rule()
    def observe(self) -> None:
        """--http turns this on after replay: whatever is ready already gets indexed."""
        self.engine.observe()
        self.observing = True

    @rule()
    def take_peak(self) -> None:
        assert self.engine.take_peak() == self.peak
        self.peak = (len(self.model), sum(m.size for m in self.model.values()))

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def track_peaks(self) -> None:
        """(Each rule adds or removes at most one job, so looking after each is enough.)"""
        jobs, body_bytes = self.peak
        self.peak = (
            max(jobs, len(self.model)),
            max(body_bytes, sum(m.size for m in self.model.values())),
        )

    @invariant()
    def jobs_match_model(self) -> None:
        e = self.engine
        assert set(e.jobs) == set(self.model)
        for job_id, m in self.model.items():
            job = e.jobs[job_id]
            assert job.state == m.state, (job, m)
            assert job.pri == m.pri
            assert job.tube.name == m.tube
            held_by = job.reserver.id if job.reserver else None
            assert held_by == m.reserver
            for name, value in m.counts.items():
                assert getattr(job, name) == value, (name, job, m)

    @invariant()
    def counters_match_model(self) -> None:
        e = self.engine
        states = [m.state for m in self.model.values()]
        assert e.ready_count == states.count(State.READY)
        assert e.reserved_count == states.count(State.RESERVED)
        assert e.delayed_count == states.count(State.DELAYED)
        assert e.buried_count == states.count(State.BURIED)
        assert e.body_bytes == sum(m.size for m in self.model.values())
        urgent = [m for m in self.model.values() if m.state == State.READY and m.pri < 1024]
        assert e.urgent_count == len(urgent)
        for tube in e.tubes.values():
            mine = [m for m in self.model.values() if m.tube == tube.name]
            assert tube.ready_count == sum(m.state == State.READY for m in mine)
            assert tube.delayed_count == sum(m.state == State.DELAYED for m in mine)
            assert len(tube.buried) == sum(m.state == State.BURIED for m in mine)
            assert tube.reserved_count == sum(m.state == State.RESERVED for m in mine)

    @invariant()
    def metrics_counters_match_model(self) -> None:
        e = self.engine
        for name in list(self.tube_counts):
            if name not in e.tubes:  # the tube went away: a new one counts from zero
                del self.tube_counts[name]
        for tube in e.tubes.values():
            counts = self.tube_counts.get(tube.name, Counter())
            assert tube.reserve_count == counts["reserves"]
            assert tube.release_count == counts["releases"]
            assert tube.bury_count == counts["buries"]
            assert tube.kick_count == counts["kicks"]
            assert tube.timeout_count == counts["timeouts"]
            assert tube.delete_count == counts["deletes"]
        assert sum(e.reserve_delete_counts) == len(self.spans)
        assert e.reserve_delete_sum == pytest.approx(sum(self.spans))
        for i, bound in enumerate(RESERVE_DELETE_BOUNDS):
            below = sum(span <= bound for span in self.spans)
            assert sum(e.reserve_delete_counts[: i + 1]) == below

    @invariant()
    def oldest_ready_is_the_smallest_ready_id(self) -> None:
        if not self.observing:
            return
        for tube in self.engine.tubes.values():
            ready = [
                m.id for m in self.model.values() if m.tube == tube.name and m.state == State.READY
            ]
            oldest = self.engine.oldest_ready(tube)
            assert (oldest.id if oldest else None) == min(ready, default=None)
            assert len(tube.ready_by_id) <= 2 * tube.ready_count + 65  # pruned as it goes

    @invariant()
    def each_job_is_in_exactly_one_structure(self) -> None:
        e = self.engine
        for job in e.jobs.values():
            tube = job.tube
            in_ready = any(entry[2] is job and job.entry is entry for entry in tube.ready)
            in_delay = any(entry[2] is job and job.entry is entry for entry in tube.delayed)
            in_buried = tube.buried.get(job.id) is job
            held = job.reserver is not None and job.reserver.reserved.get(job.id) is job
            assert [in_ready, in_delay, in_buried, held].count(True) == 1, job
            expected = {
                State.READY: in_ready,
                State.DELAYED: in_delay,
                State.BURIED: in_buried,
                State.RESERVED: held,
            }
            assert expected[job.state]

    @invariant()
    def keys_and_indexes_match_model(self) -> None:
        e = self.engine
        keys = {(m.tube, m.key): m.id for m in self.model.values() if m.key is not None}
        assert {k: job.id for k, job in e.unique.items()} == keys
        for tube in e.tubes.values():
            for state, index in (
                (State.READY, tube.ready_ids),
                (State.DELAYED, tube.delayed_ids),
                (State.BURIED, tube.buried_ids),
                (State.RESERVED, tube.reserved_ids),
            ):
                want = sorted(
                    m.id for m in self.model.values() if m.tube == tube.name and m.state == state
                )
                assert index.ids() == want
                assert index.top == (want[-1] if want else -1)
                assert_index_shape(index)

    @invariant()
    def unreferenced_tubes_are_gone(self) -> None:
        e = self.engine
        live = {b"default"}
        live |= {self.use[s.id] for s in self.sessions}
        for s in self.sessions:
            live |= set(self.watch[s.id])
        live |= {m.tube for m in self.model.values()}
        assert set(e.tubes) == live
        assert sorted(t.name for t in e.tube_order) == sorted(live)


EngineMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_engine_against_model = EngineMachine.TestCase


# --- blocking reserve, notices and timers ------------------------------------------------------


def test_waiting_session_gets_the_next_put() -> None:
    e = Engine(0.0)
    worker, producer = e.connect(), e.connect()
    assert e.reserve(worker, None, 0.0) is None
    assert e.waiting_count == 1
    job = e.put(producer, 10, 0, 5, b"x", 1.0)
    assert e.notices == [(worker, job)]
    assert job.state == State.RESERVED and job.deadline == 6.0
    assert e.waiting_count == 0


def test_reserve_with_timeout_times_out_at_its_deadline() -> None:
    e = Engine(0.0)
    s = e.connect()
    assert e.reserve(s, 3, 0.0) is None
    assert e.tick(2.9) == 3.0
    assert e.notices == []
    e.tick(3.0)
    assert e.notices == [(s, Notice.TIMED_OUT)]


def test_deadline_soon_while_blocked_one_second_before_the_ttr() -> None:
    e = Engine(0.0)
    s = e.connect()
    e.put(s, 0, 0, 10, b"x", 0.0)
    job = e.reserve(s, None, 0.0)
    assert isinstance(job, Job)
    assert e.reserve(s, None, 0.0) is None  # blocks: the deadline is 10 s away
    assert e.tick(5.0) == pytest.approx(9.0)
    e.tick(9.0)
    assert e.notices == [(s, Notice.DEADLINE_SOON)]
    e.notices.clear()
    # within the margin, reserve answers DEADLINE_SOON at once
    assert e.reserve(s, None, 9.5) is Notice.DEADLINE_SOON
    e.tick(10.0)
    assert job.state == State.READY and job.timeouts == 1 and e.timeouts == 1


def test_ttr_expiry_hands_the_job_to_a_waiting_worker() -> None:
    e = Engine(0.0)
    a, b = e.connect(), e.connect()
    e.put(a, 0, 0, 2, b"x", 0.0)
    job = e.reserve(a, None, 0.0)
    assert e.reserve(b, None, 0.0) is None
    e.tick(2.0)
    assert e.notices == [(b, job)]
    assert isinstance(job, Job) and job.reserver is b and job.timeouts == 1


def test_pause_holds_reserves_until_it_ends() -> None:
    e = Engine(0.0)
    s = e.connect()
    e.put(s, 0, 0, 5, b"x", 0.0)
    assert e.pause_tube(b"default", 10, 0.0)
    assert e.reserve(s, None, 0.0) is None
    assert e.tick(5.0) == 10.0
    e.tick(10.0)
    assert len(e.notices) == 1 and e.notices[0][0] is s


def test_disconnect_returns_reserved_jobs_at_once() -> None:
    e = Engine(0.0)
    a, b = e.connect(), e.connect()
    e.put(a, 0, 0, 100, b"x", 0.0)
    job = e.reserve(a, None, 0.0)
    assert e.reserve(b, None, 0.0) is None
    e.disconnect(a, 1.0)
    assert e.notices == [(b, job)]
    assert e.connections == 1


def test_list_tubes_order_follows_beanstalkd_swap_removal() -> None:
    e = Engine(0.0)
    s = e.connect()
    for name in (b"a", b"b", b"c"):
        e.watch(s, name)
    assert [t.name for t in e.tube_order] == [b"default", b"a", b"b", b"c"]
    e.ignore(s, b"a")  # freed: the last tube takes its place
    assert [t.name for t in e.tube_order] == [b"default", b"c", b"b"]


def test_stale_heap_entries_do_not_accumulate() -> None:
    e = Engine(0.0)
    s = e.connect()
    jobs = [e.put(s, 0, 0, 5, b"x", 0.0) for _ in range(1000)]
    for job in reversed(jobs):  # delete from the bottom of the heap: every removal is lazy
        assert e.delete(s, job.id)
    assert len(e.default_tube.ready) < 100
    delayed = [e.put(s, 0, 50, 5, b"x", 0.0) for _ in range(1000)]
    for job in delayed:
        assert e.kick_job(job.id, 0.0)
    e.tick(1.0)
    assert len(e.timers) < 100


def test_draining_reserved_jobs_leaves_no_timers_holding_them() -> None:
    """Reserve and delete thousands of jobs whose TTR is long: without a timer firing, the
    stale TTR entries (each holding its deleted job and body) must still be dropped."""
    e = Engine(0.0)
    producer, worker = e.connect(), e.connect()
    for _ in range(5000):
        e.put(producer, 0, 0, 3600, b"x" * 100, 0.0)
    for _ in range(5000):
        job = e.reserve(worker, 0, 1.0)
        assert isinstance(job, Job)
        assert e.delete(worker, job.id)
    assert not e.jobs
    assert len(e.timers) <= 64
    for _ in range(500):  # delays too: put delayed, kick, delete
        job = e.put(producer, 0, 3600, 60, b"y", 2.0)
        assert e.kick_job(job.id, 2.0) and e.delete(producer, job.id)
    assert len(e.timers) <= 64


def test_deadline_checks_do_not_scan_every_held_job() -> None:
    """A worker holding thousands of jobs: each reserve looks at the soonest deadline through
    a heap, and the heap stays proportional to what is held."""
    e = Engine(0.0)
    s = e.connect()
    for _ in range(3000):
        e.put(s, 0, 0, 100, b"x", 0.0)
    held = []
    for i in range(3000):
        job = e.reserve(s, 0, float(i) / 1000)
        assert isinstance(job, Job)
        held.append(job)
    for job in held:
        assert e.touch(s, job.id, 1.0)
    for job in held[:2900]:
        assert e.delete(s, job.id)
        assert e.reserve(s, 0, 2.0) is Notice.TIMED_OUT
    assert len(s.deadlines) <= 2 * len(s.reserved) + 17


def test_closing_a_connection_frees_its_tubes_in_beanstalkd_order() -> None:
    e = Engine(0.0)
    x, y = e.connect(), e.connect()
    for name in (b"t1", b"t2"):
        e.watch(x, name)
    e.use(x, b"t3")
    for name in (b"t4", b"t5"):
        e.watch(y, name)
    e.use(y, b"t6")
    e.disconnect(x, 0.0)
    # x frees default (kept), t2, t1, then t3; each free moves the last tube into its place
    assert [t.name for t in e.tube_order] == [b"default", b"t5", b"t6", b"t4"]


# --- the id index behind beanq-list --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
def assert_index_shape(index: IdIndex) -> None:
    """The block structure IdIndex's fast paths rely on."""
    blocks = index.blocks if index.maxes else [b for b in index.blocks if b]
    assert index.maxes == [block[-1] for block in blocks]
    assert all(len(b) <= _BLOCK for b in blocks)
    if index.top == -1 and index.head:  # empty, its last item kept for add to overwrite
        assert len(blocks) == 1 and len(blocks[0]) == index.head == 1
        return
    assert all(len(b) > (index.head if k == 0 else 0) for k, b in enumerate(blocks))


@given(
    first=st.integers(0, 1500),
    ops=st.lists(st.tuples(st.booleans(), st.integers(1, 3000)), max_size=400),
    front=st.integers(0, 1200),
    pages=st.lists(st.tuples(st.integers(0, 3100), st.integers(1, 700)), max_size=5),
)
def test_id_index_against_a_sorted_set(
    first: int, ops: list[tuple[bool, int]], front: int, pages: list[tuple[int, int]]
) -> None:
    """Ascending puts, removals from the front (FIFO reserves), then anything, across blocks
    that split and empty: the index always holds the set, in order, and pages it exactly."""
    index = IdIndex()
    held: set[int] = set()
    for i in range(1, first + 1):
        index.add(i, i)
        held.add(i)
    for i in sorted(held)[:front]:
        index.remove(i)
        held.discard(i)
    assert_index_shape(index)
    for adding, i in ops:
        if adding and i not in held:
            index.add(i, i)
            held.add(i)
        elif not adding and i in held:
            index.remove(i)
            held.discard(i)
        elif (
            not adding and held and i % 16 == 0
        ):  # (now and then: empty it from the front, then refill: the kept item)
            for j in sorted(held):
                index.remove(j)
            held.clear()
        assert_index_shape(index)
    assert index.ids() == sorted(held)
    for after, limit in pages:
        assert index.after(after, limit) == sorted(i for i in held if i > after)[:limit]
    assert index.top == max(held, default=-1)
    if held:
        built = IdIndex()
        built.build(sorted(held))
        assert built.ids() == sorted(held)
        assert built.after(0, 1000) == sorted(held)[:1000]
