"""Several servers used as one queue: put to one, reserve from all.

A ``put`` goes to the server the strategy picks (round-robin, or a stable hash of a key so that
related jobs share a server and keep their order). A server that fails is skipped for
``retry_after`` seconds, then tried again. A put moves on to the next server only when the
failure proves it never reached the first one (``BeanstalkConnectionError.sent`` is False);
otherwise it is reported, because the job may exist, and putting it again could run it twice.

Reserving polls every live server with ``reserve-with-timeout 0``, starting from a rotating
position so no server starves, and sleeps between rounds (growing to ``poll_interval``). Polling
costs up to ``poll_interval`` of latency when the queues are empty; the alternative, a blocking
reserve on every server at once, would have to abandon all but one of them per job, which a
beanstalk connection can only do by closing.

Jobs from a pool carry the server they came from, so delete/release/bury/touch go back to the
connection that holds them.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, overload

import attrs

from beanq.protocol import U32_MAX
from beanq_client.address import Address, AddressLike, parse_address
from beanq_client.commands import Unique
from beanq_client.errors import (
    BeanstalkConnectionError,
    NoServerAvailableError,
    NotFoundError,
    TimedOutError,
)
from beanq_client.jobs import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    RAW,
    BodyCodec,
    Job,
    JobRef,
    Serializer,
    make_codec,
)
from beanq_client.options import Options
from beanq_client.stats import JobStats, ServerStats
from beanq_client.sync import Client

T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")
Strategy = Literal["round-robin", "hash"]
PoolJob = Job[Any] | JobRef

FIRST_POLL_DELAY = 0.01


@attrs.frozen
class Settings:
    """What a pool was made with, kept so that ``clone`` can make another."""

    addresses: list[Address]
    codec: BodyCodec[Any]
    options: Options
    strategy: Strategy
    retry_after: float
    poll_interval: float
    connectors: dict[str, Any] = attrs.Factory(dict)  # trio pools: address -> connector


@attrs.define
class Member(Generic[C]):
    name: str
    client: C
    down_until: float = 0.0
    failures: int = 0


class Ring(Generic[C]):
    """Which server to try, in which order; shared by the blocking and the trio pool."""

    def __init__(
        self,
        members: list[Member[C]],
        strategy: Strategy,
        retry_after: float,
        clock: Callable[[], float],
    ) -> None:
        if not members:
            raise ValueError("a pool needs at least one server")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"a server appears twice in the pool: {names}")
        if strategy not in ("round-robin", "hash"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.members = members
        self.strategy = strategy
        self.retry_after = retry_after
        self.clock = clock
        self._next_put = 0
        self._next_reserve = 0

    def by_name(self, job: PoolJob) -> Member[C]:
        if job.server is None:
            raise ValueError("this job did not come from a pool (it has no server)")
        for member in self.members:
            if member.name == job.server:
                return member
        raise ValueError(f"server {job.server} is not in this pool")

    def _up(self) -> Iterator[int]:
        now = self.clock()
        return (i for i, m in enumerate(self.members) if m.down_until <= now)

    def _rotated(self, start: int) -> list[int]:
        n = len(self.members)
        up = set(self._up())
        return [(start + k) % n for k in range(n) if (start + k) % n in up]

    def put_order(self, key: str | bytes | None) -> list[Member[C]]:
        if key is not None:
            data = key.encode() if isinstance(key, str) else key
            start = zlib.crc32(data) % len(self.members)
        elif self.strategy == "hash":
            raise ValueError("the hash strategy needs a key for each put")
        else:
            start = self._next_put
            self._next_put = (self._next_put + 1) % len(self.members)
        return [self.members[i] for i in self._rotated(start)]

    def reserve_order(self) -> list[Member[C]]:
        start = self._next_reserve
        self._next_reserve = (self._next_reserve + 1) % len(self.members)
        return [self.members[i] for i in self._rotated(start)]

    def down(self, member: Member[C]) -> None:
        member.failures += 1
        member.down_until = self.clock() + self.retry_after

    def up(self, member: Member[C]) -> None:
        member.failures = 0
        member.down_until = 0.0

    def no_server(self) -> NoServerAvailableError:
        names = ", ".join(m.name for m in self.members)
        return NoServerAvailableError(f"no server of the pool is up ({names})", sent=False)


class Pool(Generic[T]):
    """Blocking pool; see the module docstring. Holds one ``Client`` per server."""

    @overload
    def __init__(
        self: Pool[bytes],
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: None = None,
        serializer: None = None,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
    ) -> None: ...

    @overload
    def __init__(
        self: Pool[str],
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: str,
        serializer: None = None,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
    ) -> None: ...

    @overload
    def __init__(
        self: Pool[Any],
        addresses: Sequence[AddressLike],
        *,
        strategy: Strategy = "round-robin",
        retry_after: float = 5.0,
        poll_interval: float = 0.5,
        encoding: None = None,
        serializer: Serializer,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
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
    ) -> None:
        self._setup(
            Settings(
                [parse_address(a) for a in addresses],
                make_codec(encoding, serializer),
                Options(timeout, connect_timeout, reconnect=True),
                strategy,
                retry_after,
                poll_interval,
            )
        )

    def _setup(self, settings: Settings) -> None:
        self._settings = settings
        members: list[Member[Client[T]]] = []
        for address in settings.addresses:
            client: Client[T] = Client.__new__(Client)
            client._setup(address, settings.codec, settings.options)
            members.append(Member(address.endpoint, client))
        self._ring = Ring(members, settings.strategy, settings.retry_after, time.monotonic)
        self.poll_interval = settings.poll_interval

    def clone(self) -> Pool[T]:
        """A new pool of unconnected clients with the same servers, settings and tubes."""
        other: Pool[T] = Pool.__new__(Pool)
        other._setup(self._settings)
        other._copy_tubes(self)
        return other

    def raw_clone(self, *, reconnect: bool | None = None) -> Pool[bytes]:
        """``clone`` with bytes bodies. A pool always reconnects (after ``retry_after``);
        ``reconnect`` is accepted so that pools and clients can stand in for each other."""
        other: Pool[bytes] = Pool.__new__(Pool)
        other._setup(attrs.evolve(self._settings, codec=RAW))
        other._copy_tubes(self)
        return other

    def _copy_tubes(self, source: Pool[Any]) -> None:
        for mine, theirs in zip(self._ring.members, source._ring.members, strict=True):
            mine.client._tubes = attrs.evolve(
                theirs.client._tubes, watching=list(theirs.client._tubes.watching)
            )

    @property
    def servers(self) -> list[str]:
        return [m.name for m in self._ring.members]

    def is_up(self, server: str) -> bool:
        return any(
            m.name == server and m.down_until <= time.monotonic() for m in self._ring.members
        )

    def close(self) -> None:
        for member in self._ring.members:
            member.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _on(self, member: Member[Client[T]], call: Callable[[Client[T]], Any]) -> Any:
        try:
            result = call(member.client)
        except BeanstalkConnectionError:
            self._ring.down(member)
            raise
        self._ring.up(member)
        return result

    # --- producer ---------------------------------------------------------------------------

    def put(
        self,
        body: T,
        *,
        key: str | bytes | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> JobRef:
        """Put on the server chosen for ``key`` (or the next one, round-robin), skipping
        servers that are down."""
        for member in self._ring.put_order(key):
            try:
                job_id: int = self._on(
                    member, lambda c: c.put(body, priority=priority, delay=delay, ttr=ttr)
                )
            except BeanstalkConnectionError as exc:
                if exc.sent:
                    raise
                continue
            return JobRef(member.name, job_id)
        raise self._ring.no_server()

    def use(self, tube: str) -> None:
        """Use ``tube`` on every server (servers that are down use it when they come back)."""
        self._each(lambda c: c.use(tube), lambda c: setattr(c._tubes, "using", tube))

    def watch(self, tube: str) -> None:
        self._each(lambda c: c.watch(tube), lambda c: c._tubes.watched(tube))

    def ignore(self, tube: str) -> None:
        self._each(lambda c: c.ignore(tube), lambda c: c._tubes.ignored(tube))

    def _each(
        self, call: Callable[[Client[T]], object], offline: Callable[[Client[T]], None]
    ) -> None:
        for member in self._ring.members:
            if not member.client.connected:
                offline(member.client)
                continue
            try:
                self._on(member, call)
            except BeanstalkConnectionError:
                offline(member.client)

    # --- consumer ---------------------------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> Job[T]:
        """A job from any server that is up; ``TimedOutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_POLL_DELAY
        while True:
            for member in self._ring.reserve_order():
                try:
                    job: Job[T] = self._on(member, lambda c: c.reserve(timeout=0))
                except (TimedOutError, BeanstalkConnectionError):
                    continue
                return Job(job.id, job.body, server=member.name)
            wait = pause if deadline is None else min(pause, deadline - time.monotonic())
            if wait <= 0:
                raise TimedOutError()
            time.sleep(wait)
            pause = min(pause * 2, self.poll_interval)

    def _job_call(self, job: PoolJob, call: Callable[[Client[T]], Any]) -> Any:
        return self._on(self._ring.by_name(job), call)

    def delete(self, job: PoolJob) -> None:
        self._job_call(job, lambda c: c.delete(job.id))

    def release(
        self, job: PoolJob, *, priority: int | None = None, delay: int = DEFAULT_DELAY
    ) -> None:
        self._job_call(job, lambda c: c.release(job.id, priority=priority, delay=delay))

    def bury(self, job: PoolJob, *, priority: int | None = None) -> None:
        self._job_call(job, lambda c: c.bury(job.id, priority=priority))

    def touch(self, job: PoolJob) -> None:
        self._job_call(job, lambda c: c.touch(job.id))

    def stats_job(self, job: PoolJob) -> JobStats:
        stats: JobStats = self._job_call(job, lambda c: c.stats_job(job.id))
        return stats

    def peek(self, job: PoolJob) -> Job[T]:
        found: Job[T] = self._job_call(job, lambda c: c.peek(job.id))
        return Job(found.id, found.body, server=job.server)

    # --- beanq's extensions ------------------------------------------------------------------

    def put_unique(
        self,
        key: str,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> tuple[JobRef, bool]:
        """``Client.put_unique`` on the server the key hashes to (whatever the strategy), so
        that one key is checked in one place: (the job, whether it was inserted). While that
        server is down the put goes to the next one, where the key is not known."""
        for member in self._ring.put_order(key):
            try:
                got: Unique = self._on(
                    member,
                    lambda c: c.put_unique(key, body, priority=priority, delay=delay, ttr=ttr),
                )
            except BeanstalkConnectionError as exc:
                if exc.sent:
                    raise
                continue
            return JobRef(member.name, got.id), got.inserted
        raise self._ring.no_server()

    def _total(self, call: Callable[[Client[T]], int]) -> int:
        return sum(self._results(call).values())

    def _results(self, call: Callable[[Client[T]], R]) -> dict[str, R]:
        """``call`` on every server that answers, by server."""
        result: dict[str, R] = {}
        for member in self._ring.members:
            try:
                result[member.name] = self._on(member, call)
            except BeanstalkConnectionError:
                continue
        return result

    def flush(self, tube: str, state: str = "all") -> int:
        """``Client.flush`` on every server that answers; how many jobs went in all."""
        return self._total(lambda c: c.flush(tube, state))

    def move(self, source: str, target: str, state: str = "ready", limit: int = U32_MAX) -> int:
        """``Client.move`` on every server that answers (``limit`` per server)."""
        return self._total(lambda c: c.move(source, target, state, limit))

    def list_jobs(self, tube: str, state: str = "ready") -> Iterator[JobRef]:
        """Every server's jobs in ``state``, one server after the other, by id."""
        for member in self._ring.members:
            for listed in self._on(member, lambda c: list(c.list_jobs(tube, state))):
                yield JobRef(member.name, listed)

    def capabilities(self) -> dict[str, list[str]]:
        return self._results(lambda c: c.capabilities())

    def schedule_add(self, name: str, tube: str, body: T, **options: Any) -> tuple[str, bool]:
        """``Client.schedule_add`` on one server, the one ``name`` hashes to (as a
        ``put_unique`` key), so that the schedule fires once for the pool: (that server,
        whether it replaced a schedule). While it is down, the next server takes it; the
        commands below act on every server, so ``schedule_remove`` clears a leftover too."""
        for member in self._ring.put_order(name):
            try:
                replaced: bool = self._on(
                    member, lambda c: c.schedule_add(name, tube, body, **options)
                )
            except BeanstalkConnectionError as exc:
                if exc.sent:
                    raise
                continue
            return member.name, replaced
        raise self._ring.no_server()

    def _on_every(self, word: str, name: str) -> None:
        """A schedule command on every server that answers; NotFoundError if none had it."""
        found = self._results(lambda c: _schedule_found(c, word, name))
        if not any(found.values()):
            raise NotFoundError()

    def schedule_remove(self, name: str) -> None:
        self._on_every("rm", name)

    def schedule_pause(self, name: str) -> None:
        self._on_every("pause", name)

    def schedule_resume(self, name: str) -> None:
        self._on_every("resume", name)

    def schedules(self) -> list[dict[str, Any]]:
        """Every server's schedules, each with its ``server``."""
        out: list[dict[str, Any]] = []
        for server, items in self._results(lambda c: c.schedules()).items():
            out.extend({**item, "server": server} for item in items)
        return out

    def reserve_batch(self, n: int, timeout: float | None = None) -> list[Job[T]]:
        """Up to ``n`` jobs from one server, polled as ``reserve`` polls."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_POLL_DELAY
        while True:
            for member in self._ring.reserve_order():
                try:
                    jobs: list[Job[T]] = self._on(member, lambda c: c.reserve_batch(n, 0))
                except (TimedOutError, BeanstalkConnectionError):
                    continue
                return [Job(job.id, job.body, server=member.name) for job in jobs]
            wait = pause if deadline is None else min(pause, deadline - time.monotonic())
            if wait <= 0:
                raise TimedOutError()
            time.sleep(wait)
            pause = min(pause * 2, self.poll_interval)

    def stats(self) -> dict[str, ServerStats]:
        """Stats of every server that answers, by server."""
        result: dict[str, ServerStats] = {}
        for member in self._ring.members:
            try:
                result[member.name] = self._on(member, lambda c: c.stats())
            except BeanstalkConnectionError:
                continue
        return result


def _schedule_found(client: Client[Any], word: str, name: str) -> bool:
    act = {"rm": client.schedule_remove, "pause": client.schedule_pause}
    try:
        act.get(word, client.schedule_resume)(name)
    except NotFoundError:
        return False
    return True
