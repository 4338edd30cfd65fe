"""The trio client: one connection that any number of tasks can share.

Requests are written in the order tasks get the send lock, each followed by a waiter in a FIFO;
replies come back in the same order, so whichever waiting task holds the receive lock reads the
socket and hands each reply to the waiter at the head of the FIFO. No background task is needed,
so the client works in any nursery layout.

Cancellation: a task cancelled while its reply is outstanding gives the reply up; it is read
and discarded when it comes. The exception is a cancelled ``reserve``: its reply may never come,
and if it does it hands over a job nobody would handle, so the connection is closed instead
(the server then puts back every job the connection held, and other tasks waiting on it get
``BeanstalkConnectionError``). That is why the worker layer gives each slot its own connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

import attrs
import trio

from beanq.protocol import MAX_LIST, U32_MAX, ProtocolError, Reply, ReplyReader
from beanq_client import commands
from beanq_client.address import Address, AddressLike, default_address, parse_address
from beanq_client.commands import Request, TubeState, Unique
from beanq_client.errors import (
    BeanstalkConnectionError,
    CommandError,
    DecodeError,
    PipelineError,
    UnauthorizedError,
)
from beanq_client.jobs import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    RAW,
    BodyCodec,
    Job,
    JobLike,
    Serializer,
    job_id,
    make_codec,
)
from beanq_client.options import Options
from beanq_client.stats import JobStats, ServerStats, TubeStats
from beanq_client.sync import describe, peer_closed, tls_context

T = TypeVar("T")
R = TypeVar("R")

RECV_SIZE = 65536
Connector = Callable[[], Awaitable[trio.abc.Stream]]
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Waiter:
    """One request's place in the reply FIFO."""

    __slots__ = ("batch", "count", "error", "holds_jobs", "replies")

    def __init__(self, count: int, holds_jobs: bool, batch: bool = False) -> None:
        self.count = count
        self.holds_jobs = holds_jobs
        self.batch = batch  # RESERVED_BATCH k: k more replies belong to this request
        self.replies: list[Reply] = []
        self.error: BeanstalkConnectionError | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or len(self.replies) == self.count


class AsyncClient(Generic[T]):
    """A trio connection to one beanstalkd or beanq server; see the module docstring for how
    tasks share it.

    ``connector`` replaces the TCP/unix connect with any coroutine returning a trio stream
    (tests run it against an in-process server over memory streams)."""

    @overload
    def __init__(
        self: AsyncClient[bytes],
        address: AddressLike | None = None,
        *,
        encoding: None = None,
        serializer: None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
        connector: Connector | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncClient[str],
        address: AddressLike | None = None,
        *,
        encoding: str,
        serializer: None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
        connector: Connector | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncClient[Any],
        address: AddressLike | None = None,
        *,
        encoding: None = None,
        serializer: Serializer,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
        connector: Connector | None = None,
    ) -> None: ...

    def __init__(
        self,
        address: AddressLike | None = None,
        *,
        encoding: str | None = None,
        serializer: Serializer | None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
        connector: Connector | None = None,
    ) -> None:
        self._setup(
            default_address() if address is None else parse_address(address),
            make_codec(encoding, serializer),
            Options(timeout, connect_timeout, reconnect),
            connector,
        )

    def _setup(
        self,
        address: Address,
        codec: BodyCodec[Any],
        options: Options,
        connector: Connector | None,
    ) -> None:
        self.address = address
        self.options = options
        self._codec: BodyCodec[T] = codec
        self._connector = connector
        self._tubes = TubeState.starting_at(address.tube)
        self._stream: trio.abc.Stream | None = None
        self._reader = ReplyReader()
        self._pending: deque[_Waiter] = deque()
        self._send_lock = trio.Lock()
        self._recv_lock = trio.Lock()
        self._connect_lock = trio.Lock()
        self._connections = 0
        self._closed = False

    def clone(self) -> AsyncClient[T]:
        """A new, unconnected client with the same address, settings and current tubes."""
        other: AsyncClient[T] = AsyncClient.__new__(AsyncClient)
        other._setup(self.address, self._codec, self.options, self._connector)
        other._tubes = TubeState(self._tubes.using, list(self._tubes.watching))
        return other

    def raw_clone(self, *, reconnect: bool | None = None) -> AsyncClient[bytes]:
        """Like ``clone`` but with bytes bodies, and optionally another ``reconnect``."""
        other: AsyncClient[bytes] = AsyncClient.__new__(AsyncClient)
        options = (
            self.options if reconnect is None else attrs.evolve(self.options, reconnect=reconnect)
        )
        other._setup(self.address, RAW, options, self._connector)
        other._tubes = TubeState(self._tubes.using, list(self._tubes.watching))
        return other

    def __repr__(self) -> str:
        state = "connected" if self._stream is not None else "not connected"
        return f"<AsyncClient {self.address} {state}>"

    # --- connection -------------------------------------------------------------------------

    def _fail(self, message: str, *, sent: bool) -> BeanstalkConnectionError:
        return BeanstalkConnectionError(message, sent=sent, address=self.address.endpoint)

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def connect(self) -> Self:
        """Open the connection now (also after ``close`` or a loss, whatever ``reconnect``
        says), restoring the used tube and the watch list."""
        async with self._connect_lock:
            self._closed = False
            stream = self._stream
            if stream is not None and not self._pending and self._stale(stream):
                await self._abort(stream, "the server closed the connection")
            if self._stream is None:
                await self._open()
        return self

    async def close(self) -> None:
        """Close the connection. Tasks still waiting for replies on it get
        ``BeanstalkConnectionError``."""
        self._closed = True
        if self._stream is not None:
            await self._abort(self._stream, "the client was closed")

    aclose = close  # trio's name for it

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _dial(self) -> trio.abc.Stream:
        if self._connector is not None:
            return await self._connector()
        if self.address.unix_path is not None:
            return await trio.open_unix_socket(self.address.unix_path)
        if self.address.tls:
            return await trio.open_ssl_over_tcp_stream(
                self.address.host, self.address.port, ssl_context=tls_context(self.address)
            )
        return await trio.open_tcp_stream(self.address.host, self.address.port)

    async def _open(self) -> trio.abc.Stream:
        try:
            with trio.fail_after(self.options.connect_timeout):
                stream = await self._dial()
        except (OSError, trio.TooSlowError) as exc:
            raise self._fail(f"cannot connect: {describe(exc)}", sent=False) from exc
        reader = ReplyReader()
        restore = self._tubes.opening(self.address.token)
        try:
            if restore:
                await stream.send_all(b"".join(r.data for r in restore))
                replies: list[Reply] = []
                while len(replies) < len(restore):
                    data = await stream.receive_some(RECV_SIZE)
                    if not data:
                        raise trio.BrokenResourceError("the server closed the connection")
                    replies += reader.feed(bytes(data))
                for request, reply in zip(restore, replies, strict=True):
                    request.parse(reply)
        except BaseException as exc:
            await trio.aclose_forcefully(stream)
            if isinstance(exc, UnauthorizedError):  # the token was refused: say so
                raise
            if isinstance(exc, (*_STREAM_ERRORS, ProtocolError, CommandError, ValueError)):
                raise self._fail(
                    f"cannot restore tubes on a new connection: {describe(exc)}", sent=False
                ) from exc
            raise
        self._stream = stream
        self._reader = reader
        self._connections += 1
        return stream

    @staticmethod
    def _stale(stream: trio.abc.Stream) -> bool:
        if isinstance(stream, trio.SocketStream):
            return peer_closed(stream.socket.fileno())
        return False

    async def _ready_stream(self) -> trio.abc.Stream:
        async with self._connect_lock:
            if self._closed:
                raise self._fail("the client is closed", sent=False)
            stream = self._stream
            if stream is not None and not self._pending and self._stale(stream):
                await self._abort(stream, "the server closed the connection")
                stream = None
                if not self.options.reconnect:
                    raise self._fail("the server closed the connection", sent=False)
            if stream is None:
                if self._connections and not self.options.reconnect:
                    raise self._fail("the connection was lost (reconnect=False)", sent=False)
                stream = await self._open()
            return stream

    async def _abort(self, stream: trio.abc.Stream, message: str) -> None:
        """Give up on ``stream``: every reply still owed on it is lost."""
        if self._stream is stream:
            self._stream = None
            self._reader = ReplyReader()
            pending, self._pending = self._pending, deque()
            for waiter in pending:
                waiter.error = self._fail(message, sent=True)
        await trio.aclose_forcefully(stream)

    def _deliver(self, reply: Reply) -> None:
        if not self._pending:
            raise ProtocolError(f"unrequested reply {reply.word}")
        head = self._pending[0]
        head.replies.append(reply)
        if head.batch and len(head.replies) == 1 and reply.word == "RESERVED_BATCH":
            if len(reply.args) != 1 or not reply.args[0].isdigit():
                raise ProtocolError(f"bad RESERVED_BATCH reply: {reply.args!r}")
            head.count = 1 + int(reply.args[0])
        if head.done:
            self._pending.popleft()

    async def _exchange(
        self, data: bytes, count: int, holds_jobs: bool, batch: bool = False
    ) -> list[Reply]:
        stream = await self._ready_stream()
        waiter = _Waiter(count, holds_jobs, batch)
        async with self._send_lock:
            if self._stream is not stream:
                raise self._fail("the connection was lost before sending", sent=False)
            self._pending.append(waiter)
            try:
                await stream.send_all(data)
            except BaseException as exc:
                # A partial write leaves the server mid-command: the connection is unusable.
                await self._abort(stream, describe(exc))
                if isinstance(exc, _STREAM_ERRORS):
                    raise self._fail(describe(exc), sent=True) from exc
                raise
        try:
            while not waiter.done:
                async with self._recv_lock:
                    if waiter.done:
                        break
                    await self._receive(stream)
        except BaseException:
            # Cancelled (or interrupted): an ordinary reply is read and dropped when it comes,
            # as the waiter stays in the FIFO; a reserve's may never come.
            if not waiter.done and waiter.holds_jobs:
                await self._abort(stream, "a reserve was cancelled")
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.replies

    async def _receive(self, stream: trio.abc.Stream) -> None:
        if self._stream is not stream:
            return  # aborted while we waited for the lock; our waiter has its error
        try:
            data = await stream.receive_some(RECV_SIZE)
            if not data:
                raise trio.BrokenResourceError("the server closed the connection")
            for reply in self._reader.feed(bytes(data)):
                self._deliver(reply)
        except (*_STREAM_ERRORS, ProtocolError) as exc:
            await self._abort(stream, describe(exc))

    async def _call(self, request: Request[R]) -> R:
        (reply,) = await self._exchange(request.data, 1, request.holds_jobs)
        return request.parse(reply)

    def _job(self, found: tuple[int, bytes]) -> Job[T]:
        id, data = found
        try:
            body = self._codec.decode(data)
        except Exception as exc:
            raise DecodeError(id, data, exc) from exc
        return Job(id, body)

    async def execute_raw(self, data: bytes) -> Reply:
        """Send bytes as they are and read one reply (error replies still raise)."""
        return await self._call(commands.raw(data))

    # --- producer ---------------------------------------------------------------------------

    async def put(
        self,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> int:
        return await self._call(commands.put(self._codec.encode(body), priority, delay, ttr))

    def pipeline(self) -> AsyncPipeline[T]:
        return AsyncPipeline(self)

    async def use(self, tube: str) -> str:
        name = await self._call(commands.use(tube))
        self._tubes.using = name
        return name

    # --- consumer ---------------------------------------------------------------------------

    async def reserve(self, timeout: float | None = None) -> Job[T]:  # noqa: ASYNC109
        """Wait for a job (``timeout`` seconds at most, rounded up; None: forever). Raises
        ``TimedOutError`` or ``DeadlineSoonError``.

        ``timeout`` is the server's (``reserve-with-timeout``), which a trio cancel scope
        cannot replace: cancelling a reserve costs the connection (see the module doc)."""
        return self._job(await self._call(commands.reserve(timeout)))

    async def reserve_job(self, job: JobLike) -> Job[T]:
        return self._job(await self._call(commands.reserve_job(job_id(job))))

    async def delete(self, job: JobLike) -> None:
        await self._call(commands.delete(job_id(job)))

    async def release(
        self, job: JobLike, *, priority: int | None = None, delay: int = DEFAULT_DELAY
    ) -> None:
        """``priority`` defaults to the job's current one (read with ``stats-job``)."""
        if priority is None:
            priority = (await self.stats_job(job))["pri"]
        await self._call(commands.release(job_id(job), priority, delay))

    async def bury(self, job: JobLike, *, priority: int | None = None) -> None:
        if priority is None:
            priority = (await self.stats_job(job))["pri"]
        await self._call(commands.bury(job_id(job), priority))

    async def touch(self, job: JobLike) -> None:
        await self._call(commands.touch(job_id(job)))

    async def watch(self, tube: str) -> int:
        count = await self._call(commands.watch(tube))
        self._tubes.watched(tube)
        return count

    async def ignore(self, tube: str) -> int:
        count = await self._call(commands.ignore(tube))
        self._tubes.ignored(tube)
        return count

    # --- other ------------------------------------------------------------------------------

    async def peek(self, job: JobLike) -> Job[T]:
        return self._job(await self._call(commands.peek(job_id(job))))

    async def peek_ready(self) -> Job[T]:
        return self._job(await self._call(commands.peek_state("ready")))

    async def peek_delayed(self) -> Job[T]:
        return self._job(await self._call(commands.peek_state("delayed")))

    async def peek_buried(self) -> Job[T]:
        return self._job(await self._call(commands.peek_state("buried")))

    async def kick(self, bound: int) -> int:
        return await self._call(commands.kick(bound))

    async def kick_job(self, job: JobLike) -> None:
        await self._call(commands.kick_job(job_id(job)))

    async def stats(self) -> ServerStats:
        return await self._call(commands.stats())

    async def stats_tube(self, tube: str) -> TubeStats:
        return await self._call(commands.stats_tube(tube))

    async def stats_job(self, job: JobLike) -> JobStats:
        return await self._call(commands.stats_job(job_id(job)))

    async def tubes(self) -> list[str]:
        return await self._call(commands.list_tubes())

    async def using(self) -> str:
        return await self._call(commands.list_tube_used())

    async def watching(self) -> list[str]:
        return await self._call(commands.list_tubes_watched())

    async def pause_tube(self, tube: str, delay: int) -> None:
        await self._call(commands.pause_tube(tube, delay))

    # --- beanq's extensions: as ``Client``'s --------------------------------------------------

    async def capabilities(self) -> list[str]:
        return await self._call(commands.capabilities())

    async def put_unique(
        self,
        key: str,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> Unique:
        return await self._call(
            commands.put_unique(key, self._codec.encode(body), priority, delay, ttr)
        )

    async def put_task(
        self,
        name: str,
        *args: Any,
        unique_key: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
        **kwargs: Any,
    ) -> int:
        return await self._call(
            commands.put_task(name, args, kwargs, unique_key, priority, delay, ttr)
        )

    async def flush(self, tube: str, state: str = "all") -> int:
        return await self._call(commands.flush(tube, state))

    async def schedule_add(self, name: str, tube: str, body: T, **options: Any) -> bool:
        definition = commands.schedule_definition(tube, self._codec.encode(body), **options)
        return await self._call(commands.schedule_add(name, definition))

    async def schedule_remove(self, name: str) -> None:
        await self._call(commands.schedule_command("rm", name))

    async def schedule_pause(self, name: str) -> None:
        await self._call(commands.schedule_command("pause", name))

    async def schedule_resume(self, name: str) -> None:
        await self._call(commands.schedule_command("resume", name))

    async def schedule(self, name: str) -> dict[str, Any]:
        return await self._call(commands.schedule_show(name))

    async def schedules(self) -> list[dict[str, Any]]:
        return await self._call(commands.schedule_list())

    async def list_jobs(
        self, tube: str, state: str = "ready", *, after: int = 0, page: int = MAX_LIST
    ) -> AsyncIterator[int]:
        while True:
            ids = await self._call(commands.list_page(tube, state, after, page))
            for listed in ids:
                yield listed
            if len(ids) < page:
                return
            after = ids[-1]

    async def move(
        self, source: str, target: str, state: str = "ready", limit: int = U32_MAX
    ) -> int:
        return await self._call(commands.move(source, target, state, limit))

    async def reserve_batch(self, n: int, timeout: float | None = None) -> list[Job[T]]:  # noqa: ASYNC109
        request = commands.reserve_batch(n, timeout)
        head, *rest = await self._exchange(request.data, 1, True, batch=True)
        count = request.parse(head)
        if count != len(rest):
            raise ProtocolError(f"RESERVED_BATCH {count} came with {len(rest)} jobs")
        return [self._job(commands.parse_reserved(reply)) for reply in rest]


class AsyncPipeline(Generic[T]):
    """Puts (and ``use``) batched into one write, as ``sync.Pipeline``; executes on a clean
    exit from ``async with``."""

    def __init__(self, client: AsyncClient[T]) -> None:
        self._client = client
        self._requests: list[Request[Any]] = []
        self._uses: dict[int, str] = {}
        self.results: list[int] = []

    def __len__(self) -> int:
        return len(self._requests)

    def put(
        self,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> None:
        self._requests.append(commands.put(self._client._codec.encode(body), priority, delay, ttr))

    def use(self, tube: str) -> None:
        self._uses[len(self._requests)] = tube
        self._requests.append(commands.use(tube))

    async def execute(self) -> list[int]:
        requests, self._requests = self._requests, []
        uses, self._uses = self._uses, {}
        if not requests:
            return []
        replies = await self._client._exchange(
            b"".join(r.data for r in requests), len(requests), False
        )
        results: list[int | CommandError] = []
        for index, (request, reply) in enumerate(zip(requests, replies, strict=True)):
            if index in uses:
                self._client._tubes.using = request.parse(reply)
                continue
            try:
                results.append(request.parse(reply))
            except CommandError as exc:
                results.append(exc)
        ids = [r for r in results if isinstance(r, int)]
        if len(ids) != len(results):
            raise PipelineError(results)
        self.results = ids
        return ids

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.execute()
