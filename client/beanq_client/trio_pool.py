"""The trio pool: ``pool.Pool``'s rules (see there) over ``AsyncClient`` connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

import attrs
import trio

from beanq.protocol import U32_MAX
from beanq_client.address import AddressLike, parse_address
from beanq_client.commands import Unique
from beanq_client.errors import BeanstalkConnectionError, NotFoundError, TimedOutError
from beanq_client.jobs import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    RAW,
    Job,
    JobRef,
    Serializer,
    make_codec,
)
from beanq_client.options import Options
from beanq_client.pool import FIRST_POLL_DELAY, Member, PoolJob, Ring, Settings, Strategy
from beanq_client.stats import JobStats, ServerStats
from beanq_client.trio_client import AsyncClient, Connector

T = TypeVar("T")


class AsyncPool(Generic[T]):
    """Trio pool; holds one ``AsyncClient`` per server. ``connectors`` (tests) maps a server's
    address to a stream factory, as ``AsyncClient(connector=)``."""

    @overload
    def __init__(
        self: AsyncPool[bytes],
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: None = None,
        serializer: None = None,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
        connectors: dict[str, Connector] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncPool[str],
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: str,
        serializer: None = None,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
        connectors: dict[str, Connector] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncPool[Any],
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: None = None,
        serializer: Serializer,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
        connectors: dict[str, Connector] | None = None,
    ) -> None: ...

    def __init__(
        self,
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: str | None = None,
        serializer: Serializer | None = None,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
        connectors: dict[str, Connector] | None = None,
    ) -> None:
        self._setup(
            Settings(
                [parse_address(a) for a in addresses],
                make_codec(encoding, serializer),
                Options(timeout, connect_timeout, reconnect=True),
                strategy,
                retry_after,
                poll_interval,
                connectors or {},
            )
        )

    def _setup(self, settings: Settings) -> None:
        self._settings = settings
        members: list[Member[AsyncClient[T]]] = []
        for address in settings.addresses:
            client: AsyncClient[T] = AsyncClient.__new__(AsyncClient)
            connector: Connector | None = settings.connectors.get(address.endpoint)
            client._setup(address, settings.codec, settings.options, connector)
            members.append(Member(address.endpoint, client))
        self._ring = Ring(members, settings.strategy, settings.retry_after, trio.current_time)
        self.poll_interval = settings.poll_interval

    def clone(self) -> AsyncPool[T]:
        other: AsyncPool[T] = AsyncPool.__new__(AsyncPool)
        other._setup(self._settings)
        other._copy_tubes(self)
        return other

    def raw_clone(self, *, reconnect: bool | None = None) -> AsyncPool[bytes]:
        """``clone`` with bytes bodies; pools always reconnect (see ``Pool.raw_clone``)."""
        other: AsyncPool[bytes] = AsyncPool.__new__(AsyncPool)
        other._setup(attrs.evolve(self._settings, codec=RAW))
        other._copy_tubes(self)
        return other

    def _copy_tubes(self, source: AsyncPool[Any]) -> None:
        for mine, theirs in zip(self._ring.members, source._ring.members, strict=True):
            mine.client._tubes = attrs.evolve(
                theirs.client._tubes, watching=list(theirs.client._tubes.watching)
            )

    @property
    def servers(self) -> list[str]:
        return [m.name for m in self._ring.members]

    async def close(self) -> None:
        for member in self._ring.members:
            await member.client.close()

    aclose = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _on(
        self, member: Member[AsyncClient[T]], call: Callable[[AsyncClient[T]], Awaitable[Any]]
    ) -> Any:
        try:
            result = await call(member.client)
        except BeanstalkConnectionError:
            self._ring.down(member)
            raise
        self._ring.up(member)
        return result

    async def put(
        self,
        body: T,
        *,
        key: str | bytes | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> JobRef:
        for member in self._ring.put_order(key):
            try:
                job_id: int = await self._on(
                    member, lambda c: c.put(body, priority=priority, delay=delay, ttr=ttr)
                )
            except BeanstalkConnectionError as exc:
                if exc.sent:
                    raise
                continue
            return JobRef(member.name, job_id)
        raise self._ring.no_server()

    async def use(self, tube: str) -> None:
        await self._each(lambda c: c.use(tube), lambda c: setattr(c._tubes, "using", tube))

    async def watch(self, tube: str) -> None:
        await self._each(lambda c: c.watch(tube), lambda c: c._tubes.watched(tube))

    async def ignore(self, tube: str) -> None:
        await self._each(lambda c: c.ignore(tube), lambda c: c._tubes.ignored(tube))

    async def _each(
        self,
        call: Callable[[AsyncClient[T]], Awaitable[object]],
        offline: Callable[[AsyncClient[T]], None],
    ) -> None:
        for member in self._ring.members:
            if not member.client.connected:
                offline(member.client)
                continue
            try:
                await self._on(member, call)
            except BeanstalkConnectionError:
                offline(member.client)

    async def reserve(self, timeout: float | None = None) -> Job[T]:  # noqa: ASYNC109
        """A job from any server that is up; ``TimedOutError`` after ``timeout`` seconds
        (named as the client's, for code that takes either)."""
        deadline = None if timeout is None else trio.current_time() + timeout
        pause = FIRST_POLL_DELAY
        while True:
            for member in self._ring.reserve_order():
                try:
                    job: Job[T] = await self._on(member, lambda c: c.reserve(timeout=0))
                except (TimedOutError, BeanstalkConnectionError):
                    continue
                return Job(job.id, job.body, server=member.name)
            wait = pause if deadline is None else min(pause, deadline - trio.current_time())
            if wait <= 0:
                raise TimedOutError()
            await trio.sleep(wait)
            pause = min(pause * 2, self.poll_interval)

    async def _job_call(
        self, job: PoolJob, call: Callable[[AsyncClient[T]], Awaitable[Any]]
    ) -> Any:
        return await self._on(self._ring.by_name(job), call)

    async def delete(self, job: PoolJob) -> None:
        await self._job_call(job, lambda c: c.delete(job.id))

    async def release(
        self, job: PoolJob, *, priority: int | None = None, delay: int = DEFAULT_DELAY
    ) -> None:
        await self._job_call(job, lambda c: c.release(job.id, priority=priority, delay=delay))

    async def bury(self, job: PoolJob, *, priority: int | None = None) -> None:
        await self._job_call(job, lambda c: c.bury(job.id, priority=priority))

    async def touch(self, job: PoolJob) -> None:
        await self._job_call(job, lambda c: c.touch(job.id))

    async def stats_job(self, job: PoolJob) -> JobStats:
        stats: JobStats = await self._job_call(job, lambda c: c.stats_job(job.id))
        return stats

    async def peek(self, job: PoolJob) -> Job[T]:
        found: Job[T] = await self._job_call(job, lambda c: c.peek(job.id))
        return Job(found.id, found.body, server=job.server)

    # --- beanq's extensions: as ``Pool``'s ----------------------------------------------------

    async def put_unique(
        self,
        key: str,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> tuple[JobRef, bool]:
        for member in self._ring.put_order(key):
            try:
                got: Unique = await self._on(
                    member,
                    lambda c: c.put_unique(key, body, priority=priority, delay=delay, ttr=ttr),
                )
            except BeanstalkConnectionError as exc:
                if exc.sent:
                    raise
                continue
            return JobRef(member.name, got.id), got.inserted
        raise self._ring.no_server()

    async def _results(self, call: Callable[[AsyncClient[T]], Awaitable[Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for member in self._ring.members:
            try:
                result[member.name] = await self._on(member, call)
            except BeanstalkConnectionError:
                continue
        return result

    async def flush(self, tube: str, state: str = "all") -> int:
        return sum((await self._results(lambda c: c.flush(tube, state))).values())

    async def move(
        self, source: str, target: str, state: str = "ready", limit: int = U32_MAX
    ) -> int:
        done = await self._results(lambda c: c.move(source, target, state, limit))
        return sum(done.values())

    async def list_jobs(self, tube: str, state: str = "ready") -> AsyncIterator[JobRef]:
        for member in self._ring.members:

            async def every(c: AsyncClient[T]) -> list[int]:
                return [listed async for listed in c.list_jobs(tube, state)]

            for listed in await self._on(member, every):
                yield JobRef(member.name, listed)

    async def capabilities(self) -> dict[str, list[str]]:
        return await self._results(lambda c: c.capabilities())

    async def schedule_add(self, name: str, tube: str, body: T, **options: Any) -> tuple[str, bool]:
        """On the server ``name`` hashes to, as ``Pool.schedule_add``."""
        for member in self._ring.put_order(name):
            try:
                replaced: bool = await self._on(
                    member, lambda c: c.schedule_add(name, tube, body, **options)
                )
            except BeanstalkConnectionError as exc:
                if exc.sent:
                    raise
                continue
            return member.name, replaced
        raise self._ring.no_server()

    async def _on_every(self, word: str, name: str) -> None:
        async def found(c: AsyncClient[T]) -> bool:
            act = {"rm": c.schedule_remove, "pause": c.schedule_pause}
            try:
                await act.get(word, c.schedule_resume)(name)
            except NotFoundError:
                return False
            return True

        if not any((await self._results(found)).values()):
            raise NotFoundError()

    async def schedule_remove(self, name: str) -> None:
        await self._on_every("rm", name)

    async def schedule_pause(self, name: str) -> None:
        await self._on_every("pause", name)

    async def schedule_resume(self, name: str) -> None:
        await self._on_every("resume", name)

    async def schedules(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for server, items in (await self._results(lambda c: c.schedules())).items():
            out.extend({**item, "server": server} for item in items)
        return out

    async def reserve_batch(self, n: int, timeout: float | None = None) -> list[Job[T]]:  # noqa: ASYNC109
        deadline = None if timeout is None else trio.current_time() + timeout
        pause = FIRST_POLL_DELAY
        while True:
            for member in self._ring.reserve_order():
                try:
                    jobs: list[Job[T]] = await self._on(member, lambda c: c.reserve_batch(n, 0))
                except (TimedOutError, BeanstalkConnectionError):
                    continue
                return [Job(job.id, job.body, server=member.name) for job in jobs]
            wait = pause if deadline is None else min(pause, deadline - trio.current_time())
            if wait <= 0:
                raise TimedOutError()
            await trio.sleep(wait)
            pause = min(pause * 2, self.poll_interval)

    async def stats(self) -> dict[str, ServerStats]:
        result: dict[str, ServerStats] = {}
        for member in self._ring.members:
            try:
                result[member.name] = await self._on(member, lambda c: c.stats())
            except BeanstalkConnectionError:
                continue
        return result
