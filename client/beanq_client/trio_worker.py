"""The trio worker: ``worker.Worker``'s rules (see there) with one task per slot.

Handlers may be ``async def`` (awaited in the slot's task) or plain functions (run in a worker
thread with ``trio.to_thread``). While one runs, a sibling task touches the job every half TTR.
On ``stop()`` the slots waiting in ``reserve`` are cancelled, which closes their connections; a
job the server handed out at that instant goes back to ready with the connection.
"""

from __future__ import annotations

import inspect
import logging
import signal
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

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
from beanq_client.worker import (
    CONNECTION_RETRY,
    DEFAULT_BACKOFF,
    MIN_TOUCH_PERIOD,
    AttemptsFrom,
    Backoff,
    Outcome,
    Registry,
    Settle,
)


class AsyncSource(Protocol):
    """What a slot needs: an ``AsyncClient`` or an ``AsyncPool`` (with bytes bodies)."""

    async def reserve(self, timeout: float | None = None) -> Job[bytes]: ...  # noqa: ASYNC109
    async def reserve_batch(
        self,
        n: int,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Job[bytes]]: ...
    async def stats_job(self, job: Job[Any]) -> JobStats: ...
    async def delete(self, job: Job[Any]) -> None: ...
    async def release(
        self, job: Job[Any], *, priority: int | None = None, delay: int = 0
    ) -> None: ...
    async def bury(self, job: Job[Any], *, priority: int | None = None) -> None: ...
    async def touch(self, job: Job[Any]) -> None: ...
    async def use(self, tube: str) -> object: ...
    async def watch(self, tube: str) -> object: ...
    async def ignore(self, tube: str) -> object: ...
    async def put(
        self, body: bytes, *, priority: int = ..., delay: int = ..., ttr: int = ...
    ) -> object: ...
    async def close(self) -> None: ...


class AsyncCloneableSource(Protocol):
    def raw_clone(self, *, reconnect: bool | None = None) -> AsyncSource: ...


class AsyncWorker(Registry):
    """Runs handlers in ``concurrency`` trio tasks, each with its own connection (a clone of
    the client or pool given, with bytes bodies and automatic reconnect).

    ``reserve_timeout`` may be None (wait for jobs without polling): ``stop()`` cancels the
    waiting reserves anyway. With a pool it bounds each polling round instead."""

    def __init__(
        self,
        source: AsyncCloneableSource,
        tubes: Sequence[str] | str = ("default",),
        *,
        concurrency: int = 1,
        max_attempts: int = 5,
        backoff: Backoff = DEFAULT_BACKOFF,
        attempts_from: AttemptsFrom = "reserves",
        reserve_timeout: float | None = 1.0,
        logger: logging.Logger | None = None,
        batch: int = 1,
    ) -> None:
        """``batch``: as ``Worker``'s (jobs per reserve, with beanq's batch reserve)."""
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
        self.clock = trio.current_time
        self._stopping = False
        self._waiting: set[trio.CancelScope] = set()

    def replace_source(self, source: AsyncCloneableSource) -> None:
        """Take connections from ``source`` from now on (``beanq-worker -a``)."""
        self._source = source

    def stop(self) -> None:
        """Stop reserving; running handlers finish. Call from the worker's trio thread."""
        self._stopping = True
        for scope in self._waiting:
            scope.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(
        self,
        *,
        burst: bool = False,
        handle_signals: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Work until ``stop()`` or SIGTERM/SIGINT (when run in the main thread), or with
        ``burst=True`` until every slot finds no job within ``reserve_timeout``. With
        ``nursery.start`` it returns once the slots are started."""
        self._stopping = False
        await self._declare_periodics()
        async with trio.open_nursery() as outer:
            if handle_signals and _main_thread():
                await outer.start(self._watch_signals)
            async with trio.open_nursery() as slots:
                for _ in range(self.concurrency):
                    slots.start_soon(self._slot, burst)
                task_status.started()
            outer.cancel_scope.cancel()

    async def _declare_periodics(self) -> None:
        """Add (or replace) the schedules of ``@periodic`` handlers on the server."""
        if not self.periodics:
            return
        conn: Any = self._source.raw_clone(reconnect=True)
        try:
            for p in self.periodics.values():
                await conn.schedule_add(p.name, p.tube, p.body, **p.options)
                self.log.info("schedule %s declared on tube %s", p.name, p.tube)
        finally:
            await conn.close()

    async def _watch_signals(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                self.log.info("signal %s: finishing running jobs", signal.Signals(signum).name)
                self.stop()

    async def _slot(self, burst: bool) -> None:
        conn = self._source.raw_clone(reconnect=True)
        ready = False
        batch = self.batch
        held: deque[tuple[Job[bytes], float]] = deque()  # the rest of the last batch
        try:
            while not self._stopping:
                if held:
                    await self._process(conn, *held.popleft())
                    continue
                job = None
                with trio.CancelScope() as scope:
                    self._waiting.add(scope)
                    try:
                        if not ready:
                            for command, tube in self.tube_commands():
                                await getattr(conn, command)(tube)
                            ready = True
                        if batch > 1:
                            jobs = await conn.reserve_batch(batch, timeout=self.reserve_timeout)
                            job = jobs[0]
                            now = self.clock()
                            held.extend((other, now) for other in jobs[1:])
                        else:
                            job = await conn.reserve(timeout=self.reserve_timeout)
                    except UnknownCommandError:
                        batch = 1  # beanstalkd: one job per reserve
                    except TimedOutError:
                        if burst:
                            return
                    except BeanstalkConnectionError as exc:
                        self.log.warning(
                            "connection failed, retrying in %ss: %s", CONNECTION_RETRY, exc
                        )
                        await trio.sleep(CONNECTION_RETRY)
                    finally:
                        self._waiting.discard(scope)
                if job is None:
                    continue
                if self._stopping:
                    await self._release_unstarted(conn, job)
                    return
                await self._process(conn, job)
        finally:
            with trio.CancelScope(shield=True):
                for job, _ in held:
                    await self._release_unstarted(conn, job)
                await conn.close()

    async def _release_unstarted(self, conn: AsyncSource, job: Job[bytes]) -> None:
        try:
            await conn.release(job)
        except BeanstalkError as exc:
            self.record(job, Outcome.LOST, error=exc)
        else:
            self.record(job, Outcome.UNSTARTED)

    async def _keep_alive(self, conn: AsyncSource, job: Job[bytes], period: float) -> None:
        while True:
            await trio.sleep(period)
            try:
                await conn.touch(job)
            except BeanstalkError as exc:
                self.log.debug("touch failed: %s", exc)

    async def _run_handler(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        if inspect.iscoroutinefunction(func):
            await func(*args, **kwargs)
        else:
            await trio.to_thread.run_sync(lambda: func(*args, **kwargs))

    async def _process(
        self, conn: AsyncSource, job: Job[bytes], reserved_at: float | None = None
    ) -> None:
        """Run one job; ``reserved_at``: it waited its turn in a batch since then."""
        started = self.clock()
        try:
            stats = await conn.stats_job(job)
            turn = None if reserved_at is None else self.batch_turn(stats, started - reserved_at)
            if turn == "release":  # (NOT_FOUND if someone else holds it by now)
                await conn.release(job, priority=stats["pri"])
                self.record(job, Outcome.UNSTARTED, started=started)
                return
            if turn == "touch":
                await conn.touch(job)
        except (NotFoundError, BeanstalkConnectionError) as exc:
            self.record(job, Outcome.LOST, started=started, error=exc)
            return
        plan = self.plan(job, stats)
        error: BaseException | str | None = plan.problem
        if plan.task is not None:
            period = max(stats["ttr"] / 2, MIN_TOUCH_PERIOD)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_alive, conn, job, period)
                try:
                    await self._run_handler(plan.task.func, plan.args, plan.kwargs)
                except Exception as exc:
                    error = exc
                nursery.cancel_scope.cancel()
        settle = self.settle(plan, stats, error if isinstance(error, BaseException) else None)
        try:
            await self._apply(conn, job, stats, settle)
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
    async def _apply(conn: AsyncSource, job: Job[bytes], stats: JobStats, settle: Settle) -> None:
        if settle.outcome is Outcome.DELETED:
            await conn.delete(job)
        elif settle.outcome is Outcome.BURIED:
            await conn.bury(job, priority=settle.priority)
        elif settle.outcome is Outcome.RELEASED:
            await conn.release(job, priority=settle.priority, delay=settle.delay)
        else:
            assert settle.body is not None
            await conn.use(stats["tube"])
            await conn.put(
                settle.body, priority=settle.priority, delay=settle.delay, ttr=stats["ttr"]
            )
            await conn.delete(job)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
