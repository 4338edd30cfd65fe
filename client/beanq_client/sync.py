"""The blocking client: one socket, one command at a time (threads take turns on a lock).

Replies are matched to commands in order, so anything that interrupts a command between its
write and its reply (a socket timeout, a signal, a broken pipe) leaves the conversation out of
step; the client then drops the connection rather than guess, and reports the loss with
``BeanstalkConnectionError(sent=True)``. A later command opens a new connection only if
``reconnect=True``.
"""

from __future__ import annotations

import functools
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, overload

import attrs

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

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")
R = TypeVar("R")

RECV_SIZE = 65536


def open_socket(address: Address, timeout: float) -> socket.socket:
    if address.unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address.unix_path)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if address.tls:
        try:
            return tls_context(address).wrap_socket(sock, server_hostname=address.host)
        except BaseException:
            sock.close()
            raise
    return sock


def tls_context(address: Address) -> ssl.SSLContext:
    """For ``beanstalks://``: the system's CAs or ``ca``, and a client certificate if any.
    Made once per set of files."""
    return _tls_context(address.ca_file, address.cert_file, address.key_file)


@functools.lru_cache(maxsize=16)
def _tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    import ssl  # (only for beanstalks://)

    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def peer_closed(fd: int) -> bool:
    """Whether the server has closed (or written unasked to) an idle connection.

    Checked before each write: a server that restarted has closed its end, and finding that out
    before sending means the command certainly did not reach it and can go on a new
    connection instead of being reported as lost."""
    poller = select.poll()  # not select(): it cannot take descriptors above 1023
    poller.register(fd, select.POLLIN)
    if not poller.poll(0):
        return False
    probe = socket.socket(fileno=fd)
    try:
        probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        probe.detach()  # the fd belongs to the caller
    # EOF, or bytes nobody asked for: either way this conversation is over.
    return True


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out waiting for the server"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Client(Generic[T]):
    """A blocking connection to one beanstalkd or beanq server.

    The connection opens on first use (or in ``connect()`` / ``with``). ``address`` defaults to
    ``$BEANSTALK_URL``, else 127.0.0.1:11300."""

    @overload
    def __init__(
        self: Client[bytes],
        address: AddressLike | None = None,
        *,
        encoding: None = None,
        serializer: None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
    ) -> None: ...

    @overload
    def __init__(
        self: Client[str],
        address: AddressLike | None = None,
        *,
        encoding: str,
        serializer: None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
    ) -> None: ...

    @overload
    def __init__(
        self: Client[Any],
        address: AddressLike | None = None,
        *,
        encoding: None = None,
        serializer: Serializer,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
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
    ) -> None:
        self._setup(
            default_address() if address is None else parse_address(address),
            make_codec(encoding, serializer),
            Options(timeout, connect_timeout, reconnect),
        )

    def _setup(self, address: Address, codec: BodyCodec[Any], options: Options) -> None:
        self.address = address
        self.options = options
        self._codec: BodyCodec[T] = codec
        self._tubes = TubeState.starting_at(address.tube)
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._reader = ReplyReader()
        self._replies: deque[Reply] = deque()
        self._connections = 0
        self._closed = False

    def clone(self) -> Client[T]:
        """A new, unconnected client with the same address and settings, at the tubes this one
        is at now: for another thread, or another reservation."""
        other: Client[T] = Client.__new__(Client)
        other._setup(self.address, self._codec, self.options)
        other._tubes = TubeState(self._tubes.using, list(self._tubes.watching))
        return other

    def raw_clone(self, *, reconnect: bool | None = None) -> Client[bytes]:
        """Like ``clone`` but with bytes bodies (the worker layer decodes payloads itself),
        and optionally another ``reconnect`` setting."""
        other: Client[bytes] = Client.__new__(Client)
        options = (
            self.options if reconnect is None else attrs.evolve(self.options, reconnect=reconnect)
        )
        other._setup(self.address, RAW, options)
        other._tubes = TubeState(self._tubes.using, list(self._tubes.watching))
        return other

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "not connected"
        return f"<Client {self.address} {state}>"

    # --- connection -------------------------------------------------------------------------

    def connect(self) -> Self:
        """Open the connection now (also after ``close`` or a loss, whatever ``reconnect``
        says), restoring the used tube and the watch list."""
        with self._lock:
            self._closed = False
            if self._sock is not None and peer_closed(self._sock.fileno()):
                self._drop()
            if self._sock is None:
                self._open()
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _fail(self, message: str, *, sent: bool) -> BeanstalkConnectionError:
        return BeanstalkConnectionError(message, sent=sent, address=self.address.endpoint)

    def _open(self) -> socket.socket:
        try:
            sock = open_socket(self.address, self.options.connect_timeout)
        except OSError as exc:
            raise self._fail(f"cannot connect: {describe(exc)}", sent=False) from exc
        self._sock = sock
        self._reader = ReplyReader()
        self._replies.clear()
        restore = self._tubes.opening(self.address.token)
        if restore:
            try:
                replies = self._send_and_read(
                    sock, b"".join(r.data for r in restore), len(restore), 0.0
                )
                for request, reply in zip(restore, replies, strict=True):
                    request.parse(reply)
            except BaseException as exc:
                self._drop()
                if isinstance(exc, UnauthorizedError):  # the token was refused: say so
                    raise
                if isinstance(exc, OSError | ProtocolError | CommandError):
                    raise self._fail(
                        f"cannot restore tubes on a new connection: {describe(exc)}", sent=False
                    ) from exc
                raise
        self._connections += 1
        return sock

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._replies.clear()
        self._reader = ReplyReader()

    def _ready_socket(self) -> socket.socket:
        if self._closed:
            raise self._fail("the client is closed", sent=False)
        sock = self._sock
        if sock is not None and peer_closed(sock.fileno()):
            self._drop()
            sock = None
            if not self.options.reconnect:
                raise self._fail("the server closed the connection", sent=False)
        if sock is None:
            if self._connections and not self.options.reconnect:
                raise self._fail("the connection was lost (reconnect=False)", sent=False)
            sock = self._open()
        return sock

    def _send_and_read(
        self, sock: socket.socket, data: bytes, count: int, wait: float | None
    ) -> list[Reply]:
        timeout = self.options.timeout
        limit = None if timeout is None or wait is None else timeout + wait
        sock.settimeout(limit)
        sock.sendall(data)
        deadline = None if limit is None else time.monotonic() + limit
        replies = self._replies
        while len(replies) < count:
            if deadline is not None:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            replies.extend(self._reader.feed(chunk))
        return [replies.popleft() for _ in range(count)]

    def _exchange(self, data: bytes, count: int, wait: float | None) -> list[Reply]:
        with self._lock:
            sock = self._ready_socket()
            try:
                return self._send_and_read(sock, data, count, wait)
            except BaseException as exc:
                # Whatever stopped us (timeout, reset, KeyboardInterrupt) left replies owed
                # on this connection: drop it rather than read them as answers to later
                # commands.
                self._drop()
                if isinstance(exc, OSError | ProtocolError):
                    raise self._fail(describe(exc), sent=True) from exc
                raise

    def _call(self, request: Request[R]) -> R:
        (reply,) = self._exchange(request.data, 1, request.wait)
        return request.parse(reply)

    def _exchange_batch(self, data: bytes, wait: float | None) -> list[Reply]:
        """A command answered by RESERVED_BATCH k and k more replies (or by one error)."""
        with self._lock:
            sock = self._ready_socket()
            try:
                replies = self._send_and_read(sock, data, 1, wait)
                head = replies[0]
                if head.word == "RESERVED_BATCH" and len(head.args) == 1:
                    if not head.args[0].isdigit():
                        raise ProtocolError(f"bad RESERVED_BATCH reply: {head.args!r}")
                    replies += self._send_and_read(sock, b"", int(head.args[0]), 0.0)
                return replies
            except BaseException as exc:
                self._drop()  # (as in _exchange: replies may still be owed)
                if isinstance(exc, OSError | ProtocolError):
                    raise self._fail(describe(exc), sent=True) from exc
                raise

    def _job(self, found: tuple[int, bytes]) -> Job[T]:
        id, data = found
        try:
            body = self._codec.decode(data)
        except Exception as exc:
            raise DecodeError(id, data, exc) from exc
        return Job(id, body)

    def execute_raw(self, data: bytes) -> Reply:
        """Send bytes as they are and read one reply (error replies still raise). For server
        extensions and for probing servers with malformed input."""
        return self._call(commands.raw(data))

    # --- producer ---------------------------------------------------------------------------

    def put(
        self,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> int:
        return self._call(commands.put(self._codec.encode(body), priority, delay, ttr))

    def pipeline(self) -> Pipeline[T]:
        return Pipeline(self)

    def use(self, tube: str) -> str:
        name = self._call(commands.use(tube))
        self._tubes.using = name
        return name

    # --- consumer ---------------------------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> Job[T]:
        """Wait for a job (``timeout`` seconds at most, rounded up; None: forever). Raises
        ``TimedOutError`` or ``DeadlineSoonError``."""
        return self._job(self._call(commands.reserve(timeout)))

    def reserve_job(self, job: JobLike) -> Job[T]:
        return self._job(self._call(commands.reserve_job(job_id(job))))

    def delete(self, job: JobLike) -> None:
        self._call(commands.delete(job_id(job)))

    def release(
        self, job: JobLike, *, priority: int | None = None, delay: int = DEFAULT_DELAY
    ) -> None:
        """``priority`` defaults to the job's current one, read with ``stats-job`` (no other
        client can change it while this connection holds the job)."""
        if priority is None:
            priority = self.stats_job(job)["pri"]
        self._call(commands.release(job_id(job), priority, delay))

    def bury(self, job: JobLike, *, priority: int | None = None) -> None:
        if priority is None:
            priority = self.stats_job(job)["pri"]
        self._call(commands.bury(job_id(job), priority))

    def touch(self, job: JobLike) -> None:
        self._call(commands.touch(job_id(job)))

    def watch(self, tube: str) -> int:
        count = self._call(commands.watch(tube))
        self._tubes.watched(tube)
        return count

    def ignore(self, tube: str) -> int:
        count = self._call(commands.ignore(tube))
        self._tubes.ignored(tube)
        return count

    # --- other ------------------------------------------------------------------------------

    def peek(self, job: JobLike) -> Job[T]:
        return self._job(self._call(commands.peek(job_id(job))))

    def peek_ready(self) -> Job[T]:
        return self._job(self._call(commands.peek_state("ready")))

    def peek_delayed(self) -> Job[T]:
        return self._job(self._call(commands.peek_state("delayed")))

    def peek_buried(self) -> Job[T]:
        return self._job(self._call(commands.peek_state("buried")))

    def kick(self, bound: int) -> int:
        return self._call(commands.kick(bound))

    def kick_job(self, job: JobLike) -> None:
        self._call(commands.kick_job(job_id(job)))

    def stats(self) -> ServerStats:
        return self._call(commands.stats())

    def stats_tube(self, tube: str) -> TubeStats:
        return self._call(commands.stats_tube(tube))

    def stats_job(self, job: JobLike) -> JobStats:
        return self._call(commands.stats_job(job_id(job)))

    def tubes(self) -> list[str]:
        return self._call(commands.list_tubes())

    def using(self) -> str:
        return self._call(commands.list_tube_used())

    def watching(self) -> list[str]:
        return self._call(commands.list_tubes_watched())

    def pause_tube(self, tube: str, delay: int) -> None:
        self._call(commands.pause_tube(tube, delay))

    # --- beanq's extensions (beanstalkd answers UnknownCommandError) -------------------------

    def capabilities(self) -> list[str]:
        """The extensions the server supports (``flush``, ``list``, ...); [] for beanstalkd."""
        return self._call(commands.capabilities())

    def put_unique(
        self,
        key: str,
        body: T,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> Unique:
        """Put unless a live job put with ``key`` is in the used tube (any state, reserved
        too): ``Unique(id, inserted)``; the key is free again once that job is deleted."""
        return self._call(commands.put_unique(key, self._codec.encode(body), priority, delay, ttr))

    def put_task(
        self,
        name: str,
        *args: Any,
        unique_key: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
        **kwargs: Any,
    ) -> int:
        """Put ``encode_task(name, *args, **kwargs)`` (whatever the client's codec). With
        ``unique_key`` (beanq only) it is put only if no live job put with that key is in the
        used tube: the id returned is then that job's (what Celery Once does with a lock,
        without the lock)."""
        return self._call(commands.put_task(name, args, kwargs, unique_key, priority, delay, ttr))

    def flush(self, tube: str, state: str = "all") -> int:
        """Delete every ready, delayed or buried job (``state``, or ``all`` three) of
        ``tube`` at once; reserved jobs stay. Returns how many went."""
        return self._call(commands.flush(tube, state))

    def schedule_add(self, name: str, tube: str, body: T, **options: Any) -> bool:
        """Add the periodic schedule ``name`` (beanq only), or replace the one of that name
        (its counts and last fire carry over): True if it replaced one. ``options`` are
        ``commands.schedule_definition``'s: ``cron`` (5 or 6 fields) with ``tz``, or
        ``every`` seconds with ``start``; ``priority``, ``ttr``, ``delay`` of the jobs;
        ``overlap`` (skip, allow), ``catchup`` (none, one, all), ``grace`` seconds."""
        definition = commands.schedule_definition(tube, self._codec.encode(body), **options)
        return self._call(commands.schedule_add(name, definition))

    def schedule_remove(self, name: str) -> None:
        """NotFoundError if there is no such schedule (as for the other schedule commands)."""
        self._call(commands.schedule_command("rm", name))

    def schedule_pause(self, name: str) -> None:
        self._call(commands.schedule_command("pause", name))

    def schedule_resume(self, name: str) -> None:
        """Times that passed while paused are not caught up: the next one comes next."""
        self._call(commands.schedule_command("resume", name))

    def schedule(self, name: str) -> dict[str, Any]:
        """One schedule: its definition, next and last fire (Unix seconds), counts, paused."""
        return self._call(commands.schedule_show(name))

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, by name (as ``schedule``)."""
        return self._call(commands.schedule_list())

    def list_jobs(
        self, tube: str, state: str = "ready", *, after: int = 0, page: int = MAX_LIST
    ) -> Iterator[int]:
        """The ids of ``tube``'s jobs in ``state`` (ready, delayed, buried, reserved) above
        ``after``, ascending, fetched ``page`` at a time; nothing is reserved or counted."""
        while True:
            ids = self._call(commands.list_page(tube, state, after, page))
            yield from ids
            if len(ids) < page:
                return
            after = ids[-1]

    def move(self, source: str, target: str, state: str = "ready", limit: int = U32_MAX) -> int:
        """Move up to ``limit`` jobs in ``state`` (ready, delayed, buried) from ``source`` to
        ``target``, keeping ids, priorities, TTRs, delays, counters and buried state."""
        return self._call(commands.move(source, target, state, limit))

    def reserve_batch(self, n: int, timeout: float | None = None) -> list[Job[T]]:
        """Wait like ``reserve`` for a job (``timeout`` seconds at most, rounded up; None:
        forever), then take up to ``n`` at once, in the order single reserves would; each
        has its own TTR. Raises ``TimedOutError`` or ``DeadlineSoonError``."""
        request = commands.reserve_batch(n, timeout)
        head, *rest = self._exchange_batch(request.data, request.wait)
        count = request.parse(head)
        if count != len(rest):
            raise ProtocolError(f"RESERVED_BATCH {count} came with {len(rest)} jobs")
        return [self._job(commands.parse_reserved(reply)) for reply in rest]


class Pipeline(Generic[T]):
    """Puts (and ``use``) batched into one write; replies are read after it.

    Used as a context manager it executes on a clean exit. If the connection breaks during
    ``execute`` some puts may have been inserted: the error says ``sent=True``."""

    def __init__(self, client: Client[T]) -> None:
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

    def execute(self) -> list[int]:
        """Send everything; return the new job ids in order. Raises ``PipelineError`` (after
        reading every reply) if any put failed."""
        requests, self._requests = self._requests, []
        uses, self._uses = self._uses, {}
        if not requests:
            return []
        replies = self._client._exchange(b"".join(r.data for r in requests), len(requests), 0.0)
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.execute()
