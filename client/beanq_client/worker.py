"""Running handlers for jobs: routing, retries with backoff, burying, keeping long jobs alive.

A job's body is either a JSON task payload, ``{"task": name, "args": [...], "kwargs": {...}}``
(made by ``encode_task``), run by the handler registered with ``@worker.task(name)``, or raw
bytes, run by a handler registered with ``@worker.task(tube, raw=True)`` for the job's tube.

After the handler: success deletes the job; an exception releases it with an exponential delay,
until the job has been tried ``max_attempts`` times, when it is buried for a human to look at.
The attempt count is the server's ``reserves`` count (``stats-job``), which survives worker
crashes; or, with ``attempts_from="payload"``, a counter in the JSON payload, for queues whose
jobs get reserved for other reasons (the retry then puts a new job and deletes the old one).
Jobs that can never succeed (an unknown task, a body that is not a payload) are buried at once.

Each concurrent slot has its own connection: a reservation belongs to a connection, and a slot
blocked in ``reserve`` must not hold up another slot's ``delete``. While a handler runs, the job
is touched every half TTR, so a handler may run longer than its TTR.

Shutdown (``stop()``, SIGTERM or SIGINT): slots stop reserving, running handlers finish and
their jobs are settled as usual, and a job reserved but not yet started is released.

This module holds the blocking ``Worker`` (threads) and what it shares with the trio
``AsyncWorker`` (tasks, in ``trio_worker``): routing and the decision after each run.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import logging
import math
import signal
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, Final, Literal, Protocol, TypeVar

import attrs

from beanq_client.commands import task_body
from beanq_client.errors import (
    BeanstalkConnectionError,
    BeanstalkError,
    CommandError,
    NotFoundError,
    TimedOutError,
    UnknownCommandError,
)
from beanq_client.jobs import Job
from beanq_client.stats import JobStats

F = TypeVar("F", bound=Callable[..., Any])
AttemptsFrom = Literal["reserves", "payload"]

log = logging.getLogger("beanq_client.worker")

CONNECTION_RETRY: Final = 1.0  # seconds a slot waits after a connection failure
MIN_TOUCH_PERIOD: Final = 0.25


def encode_task(name: str, *args: Any, **kwargs: Any) -> bytes:
    """The JSON task payload a worker routes to ``@worker.task(name)``."""
    return task_body(name, args, kwargs)


@attrs.frozen
class Backoff:
    """Delay before attempt ``n + 1`` after attempt ``n`` failed: ``base * factor**(n-1)``,
    capped at ``maximum``, in whole seconds (the protocol's unit), at least 1 unless base is 0."""

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 3600.0

    def delay(self, attempt: int) -> int:
        seconds = min(self.base * self.factor ** max(attempt - 1, 0), self.maximum)
        return math.ceil(seconds)


DEFAULT_BACKOFF: Final = Backoff()


class Outcome(enum.Enum):
    DELETED = "deleted"  # the handler succeeded
    RELEASED = "released"  # failed; released with a delay for another attempt
    RETRIED = "retried"  # failed; put again with attempts + 1 (attempts_from="payload")
    BURIED = "buried"  # failed for the last time, or can never succeed
    UNSTARTED = "unstarted"  # reserved during shutdown; released without running
    LOST = "lost"  # the reservation was lost (TTR ran out, connection broke)


@attrs.frozen
class Task:
    name: str
    func: Callable[..., Any]
    raw: bool


def _schedule_name(text: str) -> str:
    """A function's name as a schedule name (a tube name's characters: ``<locals>`` is not)."""
    allowed = set(string.ascii_letters + string.digits + "-+/;.$_()")
    return "".join(c if c in allowed else "_" for c in text)[:200].lstrip("-") or "periodic"


@attrs.frozen
class Periodic:
    """A schedule a worker declares on the server when it starts (``Registry.periodic``):
    its jobs are task payloads naming ``name``, run by the handler registered with it."""

    name: str
    tube: str
    body: bytes
    options: dict[str, Any]


@attrs.frozen
class Plan:
    """What to do with a reserved job, decided before running anything."""

    task: Task | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.Factory(dict)
    payload: dict[str, Any] | None = None
    attempt: int = 1
    problem: str | None = None  # why the job can never run

    @property
    def name(self) -> str:
        return self.task.name if self.task is not None else "?"


@attrs.frozen
class Settle:
    """How to settle a job after its run; ``delay`` for releases and retries."""

    outcome: Outcome
    priority: int
    delay: int = 0
    body: bytes | None = None  # RETRIED: the new job's body


class Source(Protocol):
    """What a worker slot needs: a ``Client`` or a ``Pool`` (with bytes bodies)."""

    def reserve(self, timeout: float | None = None) -> Job[bytes]: ...
    def reserve_batch(self, n: int, timeout: float | None = None) -> list[Job[bytes]]: ...
    def stats_job(self, job: Job[Any]) -> JobStats: ...
    def delete(self, job: Job[Any]) -> None: ...
    def release(self, job: Job[Any], *, priority: int | None = None, delay: int = 0) -> None: ...
    def bury(self, job: Job[Any], *, priority: int | None = None) -> None: ...
    def touch(self, job: Job[Any]) -> None: ...
    def use(self, tube: str) -> object: ...
    def watch(self, tube: str) -> object: ...
    def ignore(self, tube: str) -> object: ...
    def put(
        self, body: bytes, *, priority: int = ..., delay: int = ..., ttr: int = ...
    ) -> object: ...
    def close(self) -> None: ...


class CloneableSource(Protocol):
    def raw_clone(self, *, reconnect: bool | None = None) -> Source: ...


class Registry:
    """Handlers, routing and the retry policy: everything about a worker that does no I/O."""

    def __init__(
        self,
        tubes: Sequence[str] | str,
        *,
        concurrency: int,
        max_attempts: int,
        backoff: Backoff,
        attempts_from: AttemptsFrom,
        reserve_timeout: float | None,
        logger: logging.Logger | None,
        batch: int = 1,
    ) -> None:
        self.tubes = [tubes] if isinstance(tubes, str) else list(tubes)
        if not self.tubes:
            raise ValueError("a worker needs at least one tube")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if attempts_from not in ("reserves", "payload"):
            raise ValueError(
                f"attempts_from must be 'reserves' or 'payload', not {attempts_from!r}"
            )
        self.concurrency = concurrency
        self.batch = batch
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.attempts_from = attempts_from
        self.reserve_timeout = reserve_timeout
        self.log = logger or log
        self.tasks: dict[str, Task] = {}
        self.raw_tasks: dict[str, Task] = {}
        self.periodics: dict[str, Periodic] = {}
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.clock: Callable[[], float] = time.monotonic

    def _check_handler(self, func: Callable[..., Any]) -> None:
        """Subclasses refuse handlers they cannot run."""

    def task(self, name: str, *, raw: bool = False) -> Callable[[F], F]:
        """Register a handler: for JSON payloads naming ``name``, or (``raw=True``) for every
        job in the tube ``name``, called with the body as bytes."""

        def register(func: F) -> F:
            self._check_handler(func)
            table = self.raw_tasks if raw else self.tasks
            if name in table:
                raise ValueError(f"a handler for {name!r} is already registered")
            table[name] = Task(name, func, raw)
            return func

        return register

    def periodic(
        self,
        cron: str | None = None,
        *,
        every: float | None = None,
        tube: str | None = None,
        tz: str | None = None,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a handler that the server calls periodically (beanq's schedules): at the
        times of ``cron`` (5 fields, or 6 with seconds, in the IANA zone ``tz``, UTC if not
        given) or ``every`` seconds, the server puts a task payload naming ``name`` (the
        function's qualified name if not given) with ``args`` and ``kwargs`` into ``tube``
        (the worker's first tube if not given); this worker runs it. The schedule is declared
        (added or replaced, by ``name``) on the server when the worker starts, so every copy
        of the worker may declare it and it still fires once. ``options``: ``priority``,
        ``ttr``, ``delay``, ``overlap``, ``catchup``, ``grace``, ``start``, as
        ``Client.schedule_add``."""
        if (cron is None) == (every is None):
            raise ValueError("give a cron expression or every=SECONDS")
        where = tube or self.tubes[0]
        if where not in self.tubes:
            raise ValueError(f"tube {where!r} is not one this worker watches ({self.tubes})")

        def register(func: F) -> F:
            task = name or _schedule_name(f"{func.__module__}.{func.__qualname__}")
            self.task(task)(func)
            body = task_body(task, tuple(args), dict(kwargs or {}))
            extra = {"cron": cron, "tz": tz, "every": every}
            options.update({k: v for k, v in extra.items() if v is not None})
            self.periodics[task] = Periodic(task, where, body, dict(options))
            return func

        return register

    def batch_turn(self, stats: JobStats, waited: float) -> Literal["release", "touch"] | None:
        """What a job that waited ``waited`` seconds for its turn in a batch needs first:
        ``release`` when its TTR ran out or is about to (given back unstarted if it is still
        held: another worker may have it by then), ``touch`` once past half of it."""
        if waited >= stats["ttr"] - 1:
            return "release"
        if waited > stats["ttr"] / 2:
            return "touch"
        return None

    def tube_commands(self) -> list[tuple[str, str]]:
        """(command, tube) pairs that turn a fresh connection's watch list into ``tubes``."""
        steps = [("watch", tube) for tube in self.tubes if tube != "default"]
        if "default" not in self.tubes:
            steps.append(("ignore", "default"))
        return steps

    def plan(self, job: Job[bytes], stats: JobStats) -> Plan:
        tube = stats["tube"]
        reserves = stats["reserves"]
        raw = self.raw_tasks.get(tube)
        if raw is not None:
            return Plan(raw, (job.body,), attempt=reserves)
        try:
            payload = json.loads(job.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return Plan(None, attempt=reserves, problem=f"not a JSON task payload (tube {tube})")
        if not isinstance(payload, dict) or not isinstance(payload.get("task"), str):
            return Plan(None, attempt=reserves, problem="payload has no task name")
        args = payload.get("args", [])
        kwargs = payload.get("kwargs", {})
        attempts = payload.get("attempts", 0)
        if (
            not isinstance(args, list)
            or not isinstance(kwargs, dict)
            or not all(isinstance(k, str) for k in kwargs)
            or not isinstance(attempts, int)
        ):
            return Plan(None, attempt=reserves, problem="malformed payload")
        attempt = attempts + 1 if self.attempts_from == "payload" else reserves
        task = self.tasks.get(payload["task"])
        if task is None:
            return Plan(
                None, payload=payload, attempt=attempt, problem=f"unknown task {payload['task']!r}"
            )
        return Plan(task, tuple(args), kwargs, payload, attempt)

    def settle(self, plan: Plan, stats: JobStats, error: BaseException | None) -> Settle:
        pri = stats["pri"]
        if plan.problem is not None:
            return Settle(Outcome.BURIED, pri)
        if error is None:
            return Settle(Outcome.DELETED, pri)
        if plan.attempt >= self.max_attempts:
            return Settle(Outcome.BURIED, pri)
        delay = self.backoff.delay(plan.attempt)
        if self.attempts_from == "payload" and plan.payload is not None:
            body = json.dumps(
                {**plan.payload, "attempts": plan.attempt},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode("utf-8")
            return Settle(Outcome.RETRIED, pri, delay, body)
        return Settle(Outcome.RELEASED, pri, delay)

    def record(
        self,
        job: Job[bytes],
        outcome: Outcome,
        *,
        task: str = "?",
        attempt: int | None = None,
        started: float | None = None,
        delay: int | None = None,
        error: BaseException | str | None = None,
        tube: str | None = None,
    ) -> None:
        """One log record per job outcome, with the facts as attributes for structured
        handlers (``record.job_id``, ``record.outcome``...) and as text for humans."""
        self.outcomes[outcome] += 1
        duration = None if started is None else round(self.clock() - started, 6)
        fields: dict[str, Any] = {
            "job_id": job.id,
            "server": job.server,
            "tube": tube,
            "task": task,
            "outcome": outcome.value,
            "attempt": attempt,
            "duration": duration,
            "delay": delay,
            "error": None if error is None else str(error) or type(error).__name__,
        }
        if isinstance(error, BaseException):
            fields["error_type"] = type(error).__name__
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        level = logging.INFO if outcome in (Outcome.DELETED, Outcome.UNSTARTED) else logging.WARNING
        self.log.log(level, "job %s", text, extra=fields)


class Worker(Registry):
    """Runs handlers in ``concurrency`` threads, each with its own connection (a clone of the
    client or pool given, with bytes bodies and automatic reconnect)."""

    def __init__(
        self,
        source: CloneableSource,
        tubes: Sequence[str] | str = ("default",),
        *,
        concurrency: int = 1,
        max_attempts: int = 5,
        backoff: Backoff = DEFAULT_BACKOFF,
        attempts_from: AttemptsFrom = "reserves",
        reserve_timeout: float = 1.0,
        logger: logging.Logger | None = None,
        batch: int = 1,
    ) -> None:
        """``batch`` > 1: each slot takes up to that many jobs per reserve (beanq's
        ``beanq-reserve-batch``; one at a time again against a server without it) and runs
        them one after the other, saving a round trip per job. A job whose turn comes after
        half its TTR is touched first, and one whose TTR may have run out is released
        unstarted if it is still held (another worker may have it by then)."""
        super().__init__(
            tubes,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=backoff,
            attempts_from=attempts_from,
            reserve_timeout=reserve_timeout,
            logger=logger,
            batch=batch,
        )
        self._source = source
        self._stopping = threading.Event()
        self._heartbeat = Heartbeat(self.log)

    def _check_handler(self, func: Callable[..., Any]) -> None:
        if inspect.iscoroutinefunction(func):
            raise TypeError("a coroutine handler needs AsyncWorker (trio)")

    def replace_source(self, source: CloneableSource) -> None:
        """Take connections from ``source`` from now on (``beanq-worker -a``)."""
        self._source = source

    def stop(self) -> None:
        """Stop reserving; running handlers finish. Safe from any thread or signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, burst: bool = False, handle_signals: bool = True) -> None:
        """Work until ``stop()`` or SIGTERM/SIGINT (handled when called from the main thread),
        or with ``burst=True`` until every slot finds no job within ``reserve_timeout``."""
        self._stopping.clear()
        self._declare_periodics()
        beat = threading.Thread(target=self._heartbeat.run, name="beanq-heartbeat", daemon=True)
        beat.start()
        slots = [
            threading.Thread(target=self._slot, args=(burst,), name=f"beanq-slot-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        with self._signals(handle_signals):
            for thread in slots:
                thread.start()
            for thread in slots:
                while thread.is_alive():
                    thread.join(0.1)  # short joins let the main thread take signals
        self._heartbeat.stop()
        beat.join(5)

    def _declare_periodics(self) -> None:
        """Add (or replace) the schedules of ``@periodic`` handlers on the server."""
        if not self.periodics:
            return
        conn: Any = self._source.raw_clone(reconnect=True)
        try:
            for p in self.periodics.values():
                conn.schedule_add(p.name, p.tube, p.body, **p.options)
                self.log.info("schedule %s declared on tube %s", p.name, p.tube)
        finally:
            conn.close()

    @contextlib.contextmanager
    def _signals(self, enabled: bool) -> Iterator[None]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.log.info("signal %s: finishing running jobs", signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _slot(self, burst: bool) -> None:
        conn = self._source.raw_clone(reconnect=True)
        ready = False
        batch = self.batch
        held: deque[tuple[Job[bytes], float]] = deque()  # the rest of the last batch
        try:
            while not self._stopping.is_set():
                if held:
                    job, reserved_at = held.popleft()
                    self._process(conn, job, reserved_at)
                    continue
                try:
                    if not ready:
                        for command, tube in self.tube_commands():
                            getattr(conn, command)(tube)
                        ready = True
                    if batch > 1:
                        jobs = conn.reserve_batch(batch, timeout=self.reserve_timeout)
                        job = jobs[0]
                        now = self.clock()
                        held.extend((other, now) for other in jobs[1:])
                    else:
                        job = conn.reserve(timeout=self.reserve_timeout)
                except UnknownCommandError:
                    batch = 1  # beanstalkd: one job per reserve
                    continue
                except TimedOutError:
                    if burst:
                        return
                    continue
                except BeanstalkConnectionError as exc:
                    self.log.warning(
                        "connection failed, retrying in %ss: %s", CONNECTION_RETRY, exc
                    )
                    self._stopping.wait(CONNECTION_RETRY)
                    continue
                if self._stopping.is_set():
                    self._release_unstarted(conn, job)
                    return
                self._process(conn, job)
        finally:
            for job, _ in held:
                self._release_unstarted(conn, job)
            conn.close()

    def _release_unstarted(self, conn: Source, job: Job[bytes]) -> None:
        try:
            conn.release(job)
        except BeanstalkError as exc:
            # The server puts it back when this connection closes, which is about to happen.
            self.record(job, Outcome.LOST, error=exc)
        else:
            self.record(job, Outcome.UNSTARTED)

    def _process(self, conn: Source, job: Job[bytes], reserved_at: float | None = None) -> None:
        """Run one job; ``reserved_at``: it waited its turn in a batch since then."""
        started = self.clock()
        try:
            stats = conn.stats_job(job)
            turn = None if reserved_at is None else self.batch_turn(stats, started - reserved_at)
            if turn == "release":  # (NOT_FOUND if someone else holds it by now)
                conn.release(job, priority=stats["pri"])
                self.record(job, Outcome.UNSTARTED, started=started)
                return
            if turn == "touch":
                conn.touch(job)
        except (NotFoundError, BeanstalkConnectionError) as exc:
            self.record(job, Outcome.LOST, started=started, error=exc)
            return
        plan = self.plan(job, stats)
        error: BaseException | str | None = plan.problem
        if plan.task is not None:
            period = max(stats["ttr"] / 2, MIN_TOUCH_PERIOD)
            with self._heartbeat.keep_alive(lambda: conn.touch(job), period):
                try:
                    plan.task.func(*plan.args, **plan.kwargs)
                except Exception as exc:
                    error = exc
        settle = self.settle(plan, stats, error if isinstance(error, BaseException) else None)
        try:
            self._apply(conn, job, stats, settle)
        except (CommandError, BeanstalkConnectionError) as exc:
            self.record(
                job, Outcome.LOST, task=plan.name, attempt=plan.attempt, started=started, error=exc
            )
            return
        self.record(
            job,
            settle.outcome,
            task=plan.name,
            attempt=plan.attempt,
            started=started,
            delay=settle.delay if settle.outcome in (Outcome.RELEASED, Outcome.RETRIED) else None,
            error=error,
            tube=stats["tube"],
        )

    @staticmethod
    def _apply(conn: Source, job: Job[bytes], stats: JobStats, settle: Settle) -> None:
        if settle.outcome is Outcome.DELETED:
            conn.delete(job)
        elif settle.outcome is Outcome.BURIED:
            conn.bury(job, priority=settle.priority)
        elif settle.outcome is Outcome.RELEASED:
            conn.release(job, priority=settle.priority, delay=settle.delay)
        else:
            assert settle.body is not None
            conn.use(stats["tube"])
            conn.put(settle.body, priority=settle.priority, delay=settle.delay, ttr=stats["ttr"])
            conn.delete(job)


class Heartbeat:
    """One thread that touches every running job of a ``Worker`` when it is due."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, float, Callable[[], None]]] = {}
        self._next_key = 0
        self._stopped = False

    @contextlib.contextmanager
    def keep_alive(self, touch: Callable[[], None], period: float) -> Iterator[None]:
        with self._cond:
            key = self._next_key
            self._next_key += 1
            self._due[key] = (time.monotonic() + period, period, touch)
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                del self._due[key]

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [(k, e) for k, e in self._due.items() if e[0] <= now]
                if not due:
                    soonest = min((e[0] for e in self._due.values()), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)
                    continue
                for key, (_, period, touch) in due:
                    self._due[key] = (now + period, period, touch)
            for _key, (_, _period, touch) in due:
                try:
                    touch()
                except BeanstalkError as exc:
                    # The job may have been settled meanwhile; if not, its TTR will say so.
                    self._log.debug("touch failed: %s", exc)
