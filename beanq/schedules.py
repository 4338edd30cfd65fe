"""Periodic schedules kept by the server: named rules that put a job into a tube at the times
of a trigger (a cron expression in an IANA zone, or a fixed interval).

Theory of operation
-------------------
The engine owns one ``ScheduleBook``, made when the first schedule is added or replayed: this
module, ``zoneinfo`` and the cron library (``cronsim``) are imported only then, so a server
without schedules never loads them. Each armed schedule has one entry in the engine's timer
heap, ``(when, seq, schedule)``, like a delayed job; the engine's ``tick`` hands a due entry to
``ScheduleBook.fire``. Nothing scans the schedules per command or per tick.

Clocks. Fire times are wall-clock seconds (cron needs the calendar); the engine runs on its own
monotonic clock and knows ``wall_offset`` (wall minus engine clock), set by the server at
start. A schedule's timer is its next fire time rounded up to ``TICK`` (``due_at``), on the
engine's clock. A step of the wall
clock after start-up is not followed (the next restart picks it up).

Firing. At a due entry the book takes every fire time up to now. A time at most ``LATE``
seconds past is on time: it puts a job, unless ``overlap`` is ``skip`` and the job the schedule
put last is still alive in any state (counted in ``skipped``). Older times were *missed*
(the server was down or stopped) and follow ``catchup``: ``none`` counts them in ``missed``;
``one`` puts one job for the newest of them if it is within ``grace`` seconds and no on-time
fire happens now (the overlap rule applies), and counts the others; ``all`` puts one job per
missed time, at most ``MAX_CATCHUP`` (overlap not applied: each is a run that was owed), and
counts the rest.

Durability. Every change appends to ``Engine.ops`` an ``OP_SCHEDULE`` operation: the
schedule's whole state as JSON (add, replace, pause, resume), its removal, or for a fire (the
commonest by far) what the fire changed, packed. A fire's record comes *before* the put of its
job, so a crash between the two can lose that job but never fires the same time twice (and
the lost job's id is not handed out again). After each new binlog segment the binlog writes a
snapshot of every schedule in parts spread over its next writes (``snapshot_part``, read back
by ``Replay``), so old segments are needed for them only until a snapshot is complete (see
``beanq.binlog``).

DST follows cronsim, which mimics Debian cron: for a 5-field expression with a fixed minute and
hour, a time that the spring change skips fires at the first minute that exists after it, and a
time the autumn change repeats fires once (the first time); expressions with a wildcard minute
or hour run on real time (the skipped hour has no fires, the repeated one has its own).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeGuard

if TYPE_CHECKING:
    from beanq.tubes import Engine, Entry

LATE: Final = 1.0  # seconds past its time that a fire is still on time
TICK: Final = 1 / 256  # fire times are gathered to this grid (seconds: exact in binary)
_PER_SECOND: Final = 256.0
MAX_CATCHUP: Final = 100  # jobs put at once for missed times with catchup "all"
MAX_SCAN: Final = 10_000  # missed cron times counted one by one before the count is estimated
DEFAULT_GRACE: Final = 3600.0
DEFAULT_PRI: Final = 1024
DEFAULT_TTR: Final = 60
MIN_EVERY: Final = 0.001
U32: Final = 0xFFFFFFFF
OVERLAPS: Final = ("skip", "allow")
CATCHUPS: Final = ("none", "one", "all")
_KEYS: Final = frozenset(
    [
        "tube",
        "cron",
        "tz",
        "every",
        "start",
        "body",
        "body_b64",
        "pri",
        "ttr",
        "delay",
        "overlap",
        "catchup",
        "grace",
    ]
)
_STATE_KEYS: Final = frozenset(
    ["name", "paused", "next_fire", "last_fire", "fired", "skipped", "missed", "last_job"]
)


class ScheduleError(ValueError):
    """A definition the server refuses; the message goes to the client as is."""


class Trigger:
    """When a schedule fires: ``after(t)`` is its first fire time strictly after ``t``."""

    __slots__ = ("_asked", "_it", "_last", "_zone", "cron", "every", "start", "tz")

    def __init__(self, cron: str | None, tz: str, every: float | None, start: float) -> None:
        self.cron = cron
        self.tz = tz
        self.every = every
        self.start = start
        self._zone: Any = None
        self._it: Any = None  # a cronsim iterator, kept while fires follow each other
        self._last = 0.0  # the iterator's last value
        self._asked = 0.0  # ... the first after this
        if cron is not None:
            self._zone = _zone(tz)
            cronsim = _cronsim()
            try:
                cronsim.CronSim(cron, datetime.fromtimestamp(0, self._zone))
            except cronsim.CronSimError as exc:
                raise ScheduleError(f"bad cron expression {cron!r}: {exc}") from None
            except (ValueError, IndexError, KeyError) as exc:  # (edge cases the parser misses)
                raise ScheduleError(f"bad cron expression {cron!r}: {exc}") from None

    def after(self, t: float) -> float:
        every = self.every
        if every is not None:
            start = self.start
            if t < start:
                return start
            k = math.floor((t - start) / every) + 1
            # (the division may round across a multiple: the answer must be the grid's own
            # start + k * every, strictly after t, and the first such)
            if start + k * every <= t:
                k += 1
            elif k > 1 and start + (k - 1) * every > t:
                k -= 1
            return start + k * every
        it = self._it
        if it is not None and self._asked <= t < self._last:
            return self._last  # (asked again: the same answer)
        if it is None or t < self._last or t - self._last > 86400:
            it = self._it = _cronsim().CronSim(
                self.cron or "", datetime.fromtimestamp(t, self._zone)
            )
        while True:
            value: float = next(it).timestamp()
            self._last = value
            if value > t:
                self._asked = t
                return value

    def count_between(self, first: float, end: float) -> tuple[list[float], int]:
        """Fire times from ``first`` (one of them) up to ``end``: the newest ``MAX_CATCHUP``
        + 1 of them (the owed ones and one on time) and how many there are in all (estimated
        beyond ``MAX_SCAN`` cron times)."""
        keep = MAX_CATCHUP + 1
        every = self.every
        if every is not None:
            n = math.floor((end - first) / every) + 1 if end >= first else 0
            k = min(n, keep)
            return [first + (n - k + i) * every for i in range(k)], n
        times: list[float] = []
        n = 0
        t = first
        while t <= end:
            n += 1
            times.append(t)
            if len(times) > keep:
                del times[0]
            if n >= MAX_SCAN:  # (a long downtime of a frequent schedule: estimate the rest)
                step = (t - first) / (n - 1) if n > 1 else 1.0
                rest = math.floor((end - t) / step) if step > 0 else 0
                later = self.before_or_at(end)
                if later > t:
                    times.append(later)
                    del times[0]
                return times, n + rest
            t = self.after(t)
        return times, n

    def before_or_at(self, end: float) -> float:
        """The last fire time at or before ``end`` (cron), found by stepping from an hour
        before: used only to estimate a long downtime."""
        t = end - 3600.0
        last = t
        while True:
            nxt = self.after(t)
            if nxt > end:
                return last
            last = t = nxt

    def same_times(self, other: Trigger) -> bool:
        return (self.cron, self.tz, self.every, self.start) == (
            other.cron,
            other.tz,
            other.every,
            other.start,
        )

    def describe(self) -> str:
        if self.every is not None:
            return f"every {_number(self.every)}s"
        return f"cron {self.cron} {self.tz}"


def _cronsim() -> Any:
    """The cron library, imported by name: this module is compiled with mypyc, which checks
    its imports, and a wheel's build environment has no cronsim (it is no build need)."""
    import importlib

    return importlib.import_module("cronsim")


def _zone(tz: str) -> Any:
    if tz in ("UTC", "Etc/UTC", "Z"):
        return UTC  # (cronsim takes a fast path for it)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {tz!r}") from None


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


class Schedule:
    """One named schedule: its definition, its trigger and what it has done."""

    __slots__ = (
        "body",
        "catchup",
        "delay",
        "entry",
        "fired",
        "grace",
        "head",
        "last_fire",
        "last_job_id",
        "late_max",
        "missed",
        "name",
        "next_fire",
        "overlap",
        "paused",
        "pri",
        "skipped",
        "trigger",
        "ttr",
        "tube",
    )

    def __init__(
        self,
        name: bytes,
        tube: bytes,
        trigger: Trigger,
        body: bytes = b"",
        pri: int = DEFAULT_PRI,
        ttr: int = DEFAULT_TTR,
        delay: int = 0,
        overlap: str = "skip",
        catchup: str = "one",
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.name = name
        self.tube = tube
        self.trigger = trigger
        self.body = body
        self.pri = pri
        self.ttr = ttr
        self.delay = delay
        self.overlap = overlap
        self.catchup = catchup
        self.grace = grace
        self.paused = False
        self.next_fire: float | None = None  # wall clock; None while paused
        self.last_fire: float | None = None  # the fire time of the last job put
        self.fired = 0
        self.skipped = 0  # fire times skipped because the last job was alive (overlap skip)
        self.missed = 0  # fire times missed (server down or stopped) and not caught up
        self.last_job_id = 0  # ids are never reused: alive while the engine holds this id
        self.late_max = 0.0  # the most an on-time fire was late, since start (not logged)
        self.entry: Entry | None = None  # its timer in the engine's heap
        self.head: bytes | None = None  # its record's definition and name (see ``_item``)

    def __repr__(self) -> str:
        return f"<Schedule {self.name!r} {self.trigger.describe()}>"

    def definition(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tube": self.tube.decode()}
        t = self.trigger
        if t.every is not None:
            d["every"] = t.every
            d["start"] = t.start
        else:
            d["cron"] = t.cron
            d["tz"] = t.tz
        try:
            d["body"] = self.body.decode()
        except UnicodeDecodeError:
            d["body_b64"] = base64.b64encode(self.body).decode()
        d.update(
            pri=self.pri,
            ttr=self.ttr,
            delay=self.delay,
            overlap=self.overlap,
            catchup=self.catchup,
            grace=self.grace,
        )
        return d

    def to_dict(self, engine: Engine | None = None) -> dict[str, Any]:
        """The definition and the state, as ``beanq-schedule-show`` and the binlog give it."""
        d = self.definition()
        d["name"] = self.name.decode()
        d["paused"] = self.paused
        d["next_fire"] = self.next_fire
        d["last_fire"] = self.last_fire
        d["fired"] = self.fired
        d["skipped"] = self.skipped
        d["missed"] = self.missed
        d["last_job"] = self.last_job_id
        if engine is not None:
            d["last_job_alive"] = self.job_alive(engine)
            d["late_max"] = round(self.late_max, 6)
        return d

    def job_alive(self, engine: Engine) -> bool:
        return self.last_job_id in engine.jobs


def parse(name: bytes, data: bytes, wall: float) -> Schedule:
    """A schedule from a client's JSON definition (``beanq-schedule-add``); ``wall`` is now,
    the start of an interval given no ``start``."""
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ScheduleError("the definition is not a JSON object") from None
    if not isinstance(d, dict):
        raise ScheduleError("the definition is not a JSON object")
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise ScheduleError(f"unknown key {unknown[0]!r}")
    return from_dict(name, d, wall)


def from_dict(name: bytes, d: dict[str, Any], wall: float) -> Schedule:
    from beanq.protocol import valid_tube_name

    tube = d.get("tube")
    if not isinstance(tube, str) or not valid_tube_name(tube.encode()):
        raise ScheduleError("'tube' must be a valid tube name")
    cron, every = d.get("cron"), d.get("every")
    if (cron is None) == (every is None):
        raise ScheduleError("give one of 'cron' and 'every'")
    if cron is not None:
        if not isinstance(cron, str) or len(cron.split()) not in (5, 6):
            raise ScheduleError("'cron' must be a cron expression of 5 or 6 fields")
        if "start" in d:
            raise ScheduleError("'start' goes with 'every'")
        tz = d.get("tz", "UTC")
        if not isinstance(tz, str):
            raise ScheduleError("'tz' must be an IANA zone name")
        trigger = Trigger(cron, tz, None, 0.0)
    else:
        if "tz" in d:
            raise ScheduleError("'tz' goes with 'cron'")
        if not _is_number(every) or not MIN_EVERY <= every <= 10 * 365 * 86400:
            raise ScheduleError("'every' must be a number of seconds (at least 0.001)")
        start = d.get("start", wall)
        if not _is_number(start) or not 0 <= start < 1e11:
            raise ScheduleError("'start' must be a Unix time in seconds")
        trigger = Trigger(None, "UTC", float(every), float(start))
    if "body" in d and "body_b64" in d:
        raise ScheduleError("give 'body' or 'body_b64', not both")
    body = d.get("body", "")
    if "body_b64" in d:
        try:
            body_bytes = base64.b64decode(d["body_b64"], validate=True)
        except (ValueError, TypeError):
            raise ScheduleError("'body_b64' is not base64") from None
    elif isinstance(body, str):
        body_bytes = body.encode()
    else:
        raise ScheduleError("'body' must be a string")
    pri = _int(d, "pri", DEFAULT_PRI)
    ttr = _int(d, "ttr", DEFAULT_TTR)
    delay = _int(d, "delay", 0)
    overlap = d.get("overlap", "skip")
    if overlap not in OVERLAPS:
        raise ScheduleError("'overlap' must be skip or allow")
    catchup = d.get("catchup", "one")
    if catchup not in CATCHUPS:
        raise ScheduleError("'catchup' must be none, one or all")
    grace = d.get("grace", DEFAULT_GRACE)
    if not _is_number(grace) or grace < 0:
        raise ScheduleError("'grace' must be a number of seconds")
    return Schedule(
        name, tube.encode(), trigger, body_bytes, pri, ttr, delay, overlap, catchup, float(grace)
    )


def _is_number(x: object) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _int(d: dict[str, Any], key: str, default: int) -> int:
    value = d.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U32:
        raise ScheduleError(f"{key!r} must be an integer from 0 to {U32}")
    return value


def error_reply(message: str) -> bytes:
    """``BAD_SCHEDULE <message>``: one ASCII line."""
    text = " ".join(message.split()).encode("ascii", "replace")
    return b"BAD_SCHEDULE %b\r\n" % text


def show(engine: Engine, scheds: list[Schedule], one: bool = False) -> bytes:
    """The body of ``beanq-schedule-list`` (a JSON array, by name) or ``-show`` (an object)."""
    items = [s.to_dict(engine) for s in sorted(scheds, key=lambda s: s.name)]
    return json.dumps(items[0] if one else items, separators=(",", ":")).encode()


def restored(d: dict[str, Any]) -> Schedule:
    """A schedule as a binlog record holds it (trusted: the server wrote it)."""
    sched = from_dict(d["name"].encode(), d, 0.0)
    sched.paused = bool(d["paused"])
    sched.next_fire = d["next_fire"]
    sched.last_fire = d["last_fire"]
    sched.fired = d["fired"]
    sched.skipped = d["skipped"]
    sched.missed = d["missed"]
    sched.last_job_id = d["last_job"]
    return sched


def record(sched: Schedule) -> bytes:
    """A binlog record's payload: the schedule's whole state."""
    return b'{"set":' + _item(sched) + b"}"


# The state part of a record (what changes), after its definition's JSON
_STATE: Final = (
    b',"paused":%b,"next_fire":%b,"last_fire":%b,"fired":%d,"skipped":%d,"missed":%d,"last_job":%d}'
)


def _item(sched: Schedule) -> bytes:
    """The schedule as a JSON object, for the binlog (bodies in base64, whatever they hold).
    Its definition never changes (a replacement is another ``Schedule``), so its JSON is
    made once: a snapshot of ten thousand schedules then costs ~1 us each, not ~14 us."""
    head = sched.head
    if head is None:
        d = sched.definition()
        if "body" in d:
            d["body_b64"] = base64.b64encode(sched.body).decode()
            del d["body"]
        d["name"] = sched.name.decode()
        head = sched.head = json.dumps(d, separators=(",", ":")).encode()[:-1]
    return head + _STATE % (
        b"true" if sched.paused else b"false",
        _json_time(sched.next_fire),
        _json_time(sched.last_fire),
        sched.fired,
        sched.skipped,
        sched.missed,
        sched.last_job_id,
    )


def _json_time(t: float | None) -> bytes:
    return b"null" if t is None else repr(t).encode()


def removal(name: bytes) -> bytes:
    return json.dumps({"rm": name.decode()}, separators=(",", ":")).encode()


def snapshot_part(book: ScheduleBook, names: list[bytes], budget: int) -> bytes:
    """The next part of a binlog snapshot: the records of the schedules named at the end of
    ``names`` (taken off it) that are still there, about ``budget`` bytes of them (at least
    one); ``"more"`` unless ``names`` is now empty. Each is the schedule's state *now*, so a
    part may be newer than records written before it, never older (the binlog writes a part
    only when every record before it is written)."""
    items: list[bytes] = []
    size = 0
    by_name = book.by_name
    while names and (size < budget or not items):
        sched = by_name.get(names.pop())
        if sched is not None:
            item = _item(sched)
            items.append(item)
            size += len(item) + 1
    more = b',"more":true' if names else b""
    return b'{"snap":[' + b",".join(items) + b"]" + more + b"}"


# A fire's record: what changed (next and last fire, counts, last job) and the name, packed
# (the commonest record by far: JSON cost 30 us a fire)
_FIRE: Final = struct.Struct("<cddQQQQ")
_NONE: Final = -1.0  # last_fire never


def fire_record(sched: Schedule) -> bytes:
    assert sched.next_fire is not None
    last = _NONE if sched.last_fire is None else sched.last_fire
    return (
        _FIRE.pack(
            b"F",
            sched.next_fire,
            last,
            sched.fired,
            sched.skipped,
            sched.missed,
            sched.last_job_id,
        )
        + sched.name
    )


class Replay:
    """Schedules read back from the binlog's D_SCHEDULE records, in log order: the last
    record read for a schedule wins, and a completed snapshot replaces them all.

    A snapshot comes in parts (``snapshot_part``), written over the binlog's writes that
    follow a new segment, between other records; files written before 2026-12-08 hold it in
    one part, the first frame of each segment. The schedules a snapshot covers are those its
    parts hold and those added, replaced or removed by records after its first part: when its
    last part is read, the covered ones are all there are. Until then the records read
    before it still count (the binlog keeps their segments: see ``Binlog._sched_floor``)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}  # name -> state
        self._covered: dict[str, dict[str, Any]] | None = None  # by the snapshot being read
        self._started = 0  # ... the segment of its first part
        self.complete = 0  # the segment of the first part of the last complete snapshot
        self.first = 0  # the first segment holding a schedule record

    def apply(self, payload: bytes, seq: int) -> None:
        """One record's payload, read from segment ``seq``."""
        if not self.first:
            self.first = seq
        records = self.records
        if payload[:1] == b"F":
            _, next_fire, last, fired, skipped, missed, job = _FIRE.unpack_from(payload)
            d = records.get(payload[_FIRE.size :].decode())
            if d is not None:  # (else its definition's record was lost: nothing to apply to)
                d.update(
                    next_fire=next_fire,
                    last_fire=None if last == _NONE else last,
                    fired=fired,
                    skipped=skipped,
                    missed=missed,
                    last_job=job,
                )  # (the same dict as in _covered, if covered)
            return
        try:
            d = json.loads(payload)
        except ValueError:  # pragma: no cover - records are checksummed
            return
        covered = self._covered
        if "snap" in d:
            if covered is None:
                covered = self._covered = {}
                self._started = seq
            for item in d["snap"]:
                records[item["name"]] = covered[item["name"]] = item
            if not d.get("more"):
                records.clear()
                records.update(covered)
                self._covered = None
                self.complete = self._started
        elif "set" in d:
            item = d["set"]
            records[item["name"]] = item
            if covered is not None:
                covered[item["name"]] = item
        elif "rm" in d:
            records.pop(d["rm"], None)
            if covered is not None:
                covered.pop(d["rm"], None)


def due_at(t: float) -> float:
    """When a fire time's timer is due (wall clock): ``t`` rounded up to ``TICK``. Times in
    whole seconds (cron's, most intervals') are not moved; others are gathered, so that ten
    thousand schedules spread over a second fire in 256 ticks, not ten thousand (each tick
    costs the server a wake-up, a round of its loop and a binlog write)."""
    return math.ceil(t * _PER_SECOND) / _PER_SECOND


class ScheduleBook:
    """Every schedule of one engine, by name, and what firing them does. The engine calls in
    with itself: puts and timers are its own."""

    def __init__(self) -> None:
        self.by_name: dict[bytes, Schedule] = {}

    def __len__(self) -> int:
        return len(self.by_name)

    # --- changes ---------------------------------------------------------------------------

    def add(self, engine: Engine, sched: Schedule, now: float) -> bool:
        """Add ``sched``, or replace the one of its name (its counts, last fire and last job
        carry over, so that declaring a schedule again at each start-up changes nothing).
        True if it replaced one."""
        old = self.by_name.get(sched.name)
        if old is not None:
            old.entry = None
            sched.paused = old.paused
            sched.last_fire = old.last_fire
            sched.fired, sched.skipped, sched.missed = old.fired, old.skipped, old.missed
            sched.last_job_id = old.last_job_id
            if old.trigger.same_times(sched.trigger):
                sched.next_fire = old.next_fire  # (the same times: keep its place)
        self.by_name[sched.name] = sched
        if not sched.paused:
            if sched.next_fire is None:
                sched.next_fire = sched.trigger.after(now + engine.wall_offset)
            self._arm(engine, sched)
        else:
            sched.next_fire = None
        engine.log_schedule(record(sched))
        return old is not None

    def remove(self, engine: Engine, name: bytes) -> bool:
        sched = self.by_name.pop(name, None)
        if sched is None:
            return False
        sched.entry = None
        engine.log_schedule(removal(name))
        return True

    def pause(self, engine: Engine, name: bytes) -> bool:
        sched = self.by_name.get(name)
        if sched is None:
            return False
        if not sched.paused:
            sched.paused = True
            sched.entry = None
            sched.next_fire = None
            engine.log_schedule(record(sched))
        return True

    def resume(self, engine: Engine, name: bytes, now: float) -> bool:
        """Fire times that passed while paused are not missed: the next one comes next."""
        sched = self.by_name.get(name)
        if sched is None:
            return False
        if sched.paused:
            sched.paused = False
            sched.next_fire = sched.trigger.after(now + engine.wall_offset)
            self._arm(engine, sched)
            engine.log_schedule(record(sched))
        return True

    def restore(self, engine: Engine, records: list[dict[str, Any]]) -> None:
        """Schedules read back from the binlog; missed times are caught up at the first tick."""
        for d in records:
            try:
                sched = restored(d)
            except (ScheduleError, KeyError, TypeError) as exc:  # (e.g. a zone gone from tzdata)
                import logging

                logging.getLogger("beanq").error(
                    "binlog: schedule %s cannot be restored, dropped: %s", d.get("name"), exc
                )
                if isinstance(d.get("name"), str):  # (for good: the next replay agrees)
                    engine.log_schedule(removal(d["name"].encode()))
                continue
            # (its last job's put may not have reached the disk: its id must not be reused)
            engine.next_id = max(engine.next_id, sched.last_job_id + 1)
            self.by_name[sched.name] = sched
            if not sched.paused and sched.next_fire is not None:
                self._arm(engine, sched)

    def _arm(self, engine: Engine, sched: Schedule) -> None:
        assert sched.next_fire is not None
        engine.arm_schedule(sched, due_at(sched.next_fire) - engine.wall_offset)

    # --- firing ----------------------------------------------------------------------------

    def fire(self, engine: Engine, sched: Schedule, now: float) -> None:
        """``sched``'s timer fell due: put what its times up to now call for, re-arm. Nearly
        always one time is due and it is on time: that takes no list of times."""
        sched.entry = None
        first = sched.next_fire
        if sched.paused or first is None or self.by_name.get(sched.name) is not sched:
            return  # pragma: no cover - its timer entry would be stale
        wall = now + engine.wall_offset
        if wall < first:
            wall = first  # (due on the engine clock: rounding)
        at = len(engine.changes)  # (the record goes before the jobs: see Durability)
        following = sched.trigger.after(first)
        late = wall - first
        if following > wall and late <= LATE:
            if late > sched.late_max:
                sched.late_max = late
            self._put(engine, sched, first, now, True)
            sched.next_fire = following
        else:
            self._fire_times(engine, sched, first, wall, now)
        self._arm(engine, sched)
        engine.log_schedule(fire_record(sched), at)

    def _fire_times(
        self, engine: Engine, sched: Schedule, first: float, wall: float, now: float
    ) -> None:
        """Several times are due, or one that was missed: on time, late and caught up."""
        trigger = sched.trigger
        times, count = trigger.count_between(first, wall)
        on_time = times[-1] if wall - times[-1] <= LATE else None
        if on_time is not None and wall - on_time > sched.late_max:
            sched.late_max = wall - on_time
        late = count - (1 if on_time is not None else 0)
        late_times = times[:-1] if on_time is not None else times
        if on_time is not None:
            self._put(engine, sched, on_time, now, overlap=True)
        if late:
            catchup = sched.catchup
            if catchup == "all":
                owed = late_times[-MAX_CATCHUP:]
                for t in owed:
                    self._put(engine, sched, t, now, overlap=False)
                sched.missed += late - len(owed)
            elif catchup == "one" and on_time is None and wall - late_times[-1] <= sched.grace:
                self._put(engine, sched, late_times[-1], now, overlap=True)
                sched.missed += late - 1
            else:
                sched.missed += late
        sched.next_fire = trigger.after(max(wall, times[-1]))

    def _put(self, engine: Engine, sched: Schedule, slot: float, now: float, overlap: bool) -> None:
        if overlap and sched.overlap == "skip" and sched.job_alive(engine):
            sched.skipped += 1
            return
        room = engine.room
        if room is not None and not room(len(sched.body)):
            sched.missed += 1  # (refused as a client's put would be: draining, full)
            return
        job = engine.put_scheduled(sched.tube, sched.pri, sched.delay, sched.ttr, sched.body, now)
        sched.last_job_id = job.id
        sched.last_fire = slot
        sched.fired += 1
