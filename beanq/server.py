"""Sockets, timers, signals and trio: everything that waits or touches the operating system.

Theory of operation
-------------------
One loop owns every client socket through a private epoll set. Each wake-up reads every ready
socket once, feeds the bytes to that client's ``Connection`` (which parses and answers all
complete commands at once), delivers the engine's notices to blocked clients, and then writes
each client's replies with a single ``send``. Waking once per batch rather than once per
command per task is what makes a Python server keep pace with beanstalkd: the cost is in
wake-ups and system calls, not in parsing.

trio hosts that loop: the loop task waits in its own epoll set (at most until the engine's
next timer) and checkpoints into trio every few milliseconds, so that other tasks can take
signals. A thread of its own runs the binlog's fsyncs, one at a time, and reports through an
eventfd in the same epoll set (see ``_Syncer``): with ``-f 0`` before the replies that wait for
them (group commit), with ``-f MS`` when the loop's deadline for the next one comes. trio takes
~130 ms to import, and programs that spawn a queue server in their tests talk to it ~100 ms
later, so the socket is bound and served by the same loop, driven by a plain ``epoll.poll``,
while trio is imported on a helper thread; then trio takes over the waiting.

``StreamServer`` serves the same ``Hub`` over trio streams, one task per connection; the tests
use it with memory streams and trio's autojump clock, so TTRs, delays and pauses run instantly.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import gc
import logging
import math
import os
import queue
import resource
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from beanq import __version__, buildinfo, protocol
from beanq.config import Config, StartupError
from beanq.dispatch import BinlogStats, Connection, HostInfo, Hub
from beanq.tubes import Engine, Job

if TYPE_CHECKING:
    import trio

    from beanq.auth import Audit
    from beanq.binlog import BinlogMetrics
    from beanq.listener import Endpoint

log = logging.getLogger("beanq")

# Room for a 64 KiB put with its line in one read: with 64 KiB it took two reads and a join
# (50 connections cycling 64 KiB jobs: 4 -> 3 reads per cycle). recv shrinks what it returns
# to what came, so small reads cost the same.
RECV_SIZE = 128 << 10
# A client alone (or nearly) on the server and pipelining gets the replies to the first few
# commands of a read at once, and the rest when these are sent: it starts on them while the
# server answers the others, instead of both sides taking turns to be idle. With more clients
# ready at once, one send per client per round costs the server less, and nobody waits idle.
FIRST_BURST = 4
FIRST_BURST_READY = 2  # ready connections in one wake-up, at most, for an early first burst
OUTPUT_HIGH_WATER = 1 << 20  # stop reading a client whose unsent replies exceed this
HELD_HIGH_WATER = 1_000  # ... or that has this many commands queued behind a blocked reserve
GATHER_MAX = 64  # reply parts one sendmsg takes, at most (the kernel's limit is 1,024)
ACCEPT_BATCH = 64
ACCEPT_RETRY = 0.1  # seconds to stop accepting after EMFILE/ENFILE
LOCAL: Final = "local"  # the address of a unix socket's clients
SWEEP_INTERVAL = 0.25  # seconds between looks for idle clients and stalled TLS handshakes
# Descriptors clients may never take: importing trio opens files, trio.run makes an epoll set
# and a socketpair, the binlog opens segments and its directory. A herd of clients arriving
# at start-up under a low limit took them all, and trio's start-up died of EMFILE.
FD_RESERVE = 32


class Journal(Protocol):
    """What the loop needs from the binlog (``beanq.binlog.Binlog``)."""

    def write(
        self,
        jobs: list[Job],
        now: float,
        wall: float,
        ops: list[tuple[int, int, list[Job]]] | None = None,
    ) -> None: ...

    @property
    def unsynced(self) -> bool: ...

    def sync(self) -> bool: ...

    @property
    def stalled(self) -> bool: ...

    def can_put(self, body_size: int) -> bool: ...

    def stats(self) -> BinlogStats: ...

    def job_file(self, job: Job) -> int: ...

    def metrics(self) -> BinlogMetrics: ...

    def close(self) -> None: ...


def host_info() -> HostInfo:
    uname = os.uname()

    def rusage() -> tuple[float, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime, ru.ru_stime

    return HostInfo(
        version=f"beanq-{__version__}+{buildinfo.build()}",  # beanq-0.1.0+mypyc
        pid=os.getpid(),
        hostname=uname.nodename,
        os=uname.version,
        platform=uname.machine,
        instance_id=os.urandom(8).hex(),
        rusage=rusage,
    )


MEMORY_CHECK_INTERVAL = 0.25
# Release memory once jobs weighing this much are gone, and 7/8 of the peak. A job weighs its
# body and what holding it costs besides (~430 bytes: 533 per 100-byte job in make bench).
BURST_BYTES = 10 << 20
JOB_OVERHEAD = 430


def _weight(jobs: int, body_bytes: int) -> int:
    return jobs * JOB_OVERHEAD + body_bytes


def tune_collector() -> None:
    """Jobs live long, and the engine and dispatcher break their own reference cycles (see
    tests/test_collector.py), so CPython's automatic collections, which walk every new job
    one to several times as it ages, find nothing and cost a tenth of the CPU while a queue
    grows. The server collects on its own schedule instead (``collect_survivors``)."""
    gc.freeze()
    gc.disable()


def collect_survivors(everything: bool = False) -> None:
    """Collect the objects made since the last call (a few milliseconds' work even under full
    load), then freeze the survivors: freezing costs nothing, and no object is walked twice.
    Frozen objects that later become cyclic garbage wait for ``everything``, which runs when a
    burst has drained and the heap is small."""
    if everything:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(0)
    gc.freeze()


# glibc's mallopt parameters, and how much free heap to keep (see _tune_malloc)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
KEEP_FREE_HEAP: Final = 32 << 20


def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of the C library (glibc's malloc controls), or None where it has none."""
    import ctypes  # only here: it is needed off the start-up path

    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


def _malloc_trim() -> None:
    """glibc keeps freed memory for reuse; malloc_trim hands it back. Elsewhere, nothing."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def _tune_malloc() -> None:
    """Big bodies come and go by the thousand a second: each 64 KiB put is a received chunk
    and the body copied out of it, both freed soon after. With glibc's defaults, whenever more
    than 128 KiB at the top of the heap is free it goes back to the OS, and the next
    allocations fault its pages in again (50 connections cycling 64 KiB jobs: 5% of the CPU
    in page faults, 7% of the throughput; at 500, a fifth of it). So keep up to 32 MiB of
    free heap, and take bodies up to that size from the heap instead of fresh mmaps (glibc's
    own dynamic rule, which setting the first turns off, would end up near there). After a
    burst, _malloc_trim still gives it all back."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_HEAP)
        mallopt(_M_MMAP_THRESHOLD, KEEP_FREE_HEAP)


# --- the epoll loop ----------------------------------------------------------------------------

_READ = select.EPOLLIN | select.EPOLLRDHUP
_WRITE = select.EPOLLOUT


class _Client:
    __slots__ = ("addr", "conn", "fd", "ip", "mask", "seen", "sock", "wbuf")

    def __init__(self, sock: socket.socket, conn: Connection, addr: Any, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = conn
        self.wbuf = bytearray()  # replies the socket did not take yet
        self.mask = _READ
        self.addr = addr  # the peer's address as accept() gave it (for the HTTP console)
        self.seen = now  # when it last sent something (--idle-timeout, the HTTP console)
        self.ip = ""  # its address, kept for --max-connections-per-ip


class Gate(Protocol):
    """What a listener with auth=required|optional does to its connections (beanq.auth)."""

    def attach(self, conn: Connection, peer: str) -> None: ...

    def certified(self, conn: Connection, subject: str) -> None: ...

    def audit(self) -> Audit: ...  # what it counted, for /metrics


class TlsServer(Protocol):
    """What a tls:// listener does to its accepted sockets (beanq.tls)."""

    def wrap(
        self, sock: socket.socket, on_subject: Callable[[str], None] | None
    ) -> socket.socket: ...

    def handshaken(self, sock: socket.socket) -> bool: ...


class Listening:
    """A listening socket, and what its connections go through before they are served: a TLS
    handshake (``tls``), authentication (``gate``). Plain ones have neither, and their
    accepted connections take the same path as ever."""

    __slots__ = ("fd", "gate", "sock", "tls")

    def __init__(
        self,
        sock: socket.socket | _socket.socket,
        tls: TlsServer | None = None,
        gate: Gate | None = None,
    ) -> None:
        if not isinstance(sock, socket.socket):  # beanq.listener's bare one
            sock = socket.socket(fileno=sock.detach())
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = tls
        self.gate = gate


class _Syncer:
    """-f 0 group commit (and -f MS): one fsync at a time, on a thread of its own, so the loop
    goes on reading and writing the binlog while the disk works; every batch written meanwhile is
    covered by the next fsync, so concurrent producers share fsyncs. The thread says it is
    done through an eventfd in the loop's epoll set: the loop learns it in the same wait as
    socket input, with no round through trio (a worker-thread call there costs more CPU than
    the handful of puts an fsync covers)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.busy = False  # an fsync was asked for and its completion not yet taken
        self.synced_seq = 0  # written batches that the last successful fsync covers
        self.failed = False  # the last fsync failed: nothing new is durable
        self._asks: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="fsync", daemon=True)
        self._worker.start()

    def ask(self, seq: int) -> None:
        """fsync everything written so far: batches up to ``seq``."""
        self.busy = True
        self._asks.put(seq)

    def done(self) -> int:
        """Take the completion the eventfd signalled; return the batches it covers."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        self.busy = False
        return self.synced_seq

    def _run(self) -> None:
        while (seq := self._asks.get()) is not None:
            try:
                ok = self.journal.sync()
            except Exception:
                log.exception("internal error in fsync")
                ok = False
            if ok:
                self.synced_seq = seq
            self.failed = not ok
            os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        self._asks.put(None)
        self._worker.join()
        os.close(self.fd)


class EpollLoop:
    """The socket side of the server, driven one batch at a time by ``step``."""

    def __init__(
        self,
        listener: socket.socket | list[Listening],
        hub: Hub,
        clock: Callable[[], float] = time.monotonic,
        journal: Journal | None = None,
        sync_before_reply: bool = False,
    ) -> None:
        listening = [Listening(listener)] if isinstance(listener, socket.socket) else listener
        self.listeners = {each.fd: each for each in listening}
        self.hub = hub
        self.clock = clock
        self.journal = journal
        # -f 0: replies wait for the fsync that covers their batch's records (group commit).
        self.sync_before_reply = journal is not None and sync_before_reply
        self._held: deque[tuple[int, list[tuple[_Client, bytes]]]] = deque()
        self.written_seq = 0  # batches written to the journal
        self._first = 0  # commands answered before the first send, this step (0: all)
        # (with -f 0 replies wait for an fsync anyway: an early burst would split the groups)
        self._first_burst = 0 if self.sync_before_reply else FIRST_BURST
        self._retry_at: float | None = None  # when to retry binlog writes the disk refused
        self.epoll = select.epoll()
        for fd in self.listeners:
            self.epoll.register(fd, select.EPOLLIN)
        self._syncer: _Syncer | None = None
        self._sync_fd = -1
        self._sync_period = 0.0  # -f MS: fsync every this many seconds (see sync_every)
        self._sync_due = 0.0  # ... not before this
        if journal is not None and self.sync_before_reply:
            self._syncer = _Syncer(journal)
            self._sync_fd = self._syncer.fd
            self.epoll.register(self._sync_fd, select.EPOLLIN)
        self.clients: dict[int, _Client] = {}
        self._by_conn: dict[Connection, _Client] = {}
        self._accept_paused_until: float | None = None
        self._accept_warned = False
        self.max_connections: int | None = None
        self.client_budget: int | None = None  # clients at most, so that FD_RESERVE stays free
        self._refused_warned = False
        self._peak_weight = 0
        self._memory_checked = 0.0
        self._stepped = False  # input came since the last memory check
        self._sync_waiters: list[tuple[int, Callable[[], None]]] = []  # see settle
        self.max_per_ip: int | None = None  # --max-connections-per-ip
        self._per_ip: dict[str, int] = {}
        self.idle_timeout: float | None = None  # --idle-timeout
        self.handshake_timeout = 10.0  # a TLS client's handshake takes this long at most
        # TLS clients in their handshake, fd: (deadline, client, their listener's TLS)
        self._handshakes: dict[int, tuple[float, _Client, TlsServer]] = {}
        self._sweep_at = 0.0  # when next to look for idle clients and stalled handshakes
        self.reload: Callable[[], None] = _nothing  # SIGHUP: certificates and tokens again
        # Signals, and changes made outside the loop (settle), wake it through an eventfd in
        # the epoll set, so that an idle loop can sleep until its next deadline instead of
        # waking to look for them.
        self._signals: list[int] = []
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.epoll.register(self._wake_fd, select.EPOLLIN)
        self.stopping = False  # SIGTERM or SIGINT came: the loop ends

    def close(self) -> None:
        now = self.clock()
        for client in list(self.clients.values()):
            self._drop(client, now)
        self._journal_changes(now)
        if self._syncer is not None:
            self._syncer.close()
        if self.journal is not None:
            if self.journal.unsynced:
                self.journal.sync()
            self.journal.close()
        self.epoll.close()
        os.close(self._wake_fd)
        for each in self.listeners.values():
            each.sock.close()

    def sync_every(self, period: float) -> None:
        """-f MS: fsync at most every ``period`` seconds, and also after the last write of a
        burst. The fsync runs on the thread that ``-f 0`` uses (see ``_Syncer``), started by
        the loop's own deadlines: through trio, each fsync cost a worker-thread round trip in
        interpreted code (~80 us of CPU) beside the loop."""
        journal = self.journal
        if journal is None or self._syncer is not None:
            return
        self._sync_period = period
        self._sync_due = self.clock() + period
        self._syncer = _Syncer(journal)
        self._sync_fd = self._syncer.fd
        self.epoll.register(self._sync_fd, select.EPOLLIN)

    def next_deadline(self) -> float | None:
        """Run due timers; return when the loop must next wake up without input."""
        now = self.clock()
        hub = self.hub
        timers = hub.engine.timers
        if timers and timers[0][0] <= now:
            try:
                when = hub.tick(now)
            except Exception:
                log.exception("internal error in timers")
                when = now + 0.1
            if hub.dirty or hub.engine.changes or hub.engine.ops:
                self._flush_dirty(now)
        else:
            when = timers[0][0] if timers else None  # (a stale entry just wakes us early)
        if now - self._memory_checked >= MEMORY_CHECK_INTERVAL:
            self._memory_checked = now
            self._stepped = False
            self._manage_memory()
        elif self._stepped:  # one more look after the last input, however long the idle
            look = self._memory_checked + MEMORY_CHECK_INTERVAL
            when = look if when is None else min(when, look)
        resume = self._accept_paused_until
        if resume is not None:
            if resume <= now:
                self._resume_accepting()
            else:
                when = resume if when is None else min(when, resume)
        retry = self._retry_at
        if retry is not None:
            if retry <= now:
                self._retry_at = None
                self._retry_journal()
            else:
                when = retry if when is None else min(when, retry)
        if self._sync_period:
            due = self._periodic_sync(now)
            if due is not None:
                when = due if when is None else min(when, due)
        if self._handshakes or self.idle_timeout is not None:
            if now >= self._sweep_at:
                self._sweep(now)
            when = self._sweep_at if when is None else min(when, self._sweep_at)
        return when

    def _sweep(self, now: float) -> None:
        """Drop TLS clients stalled in their handshake, and (--idle-timeout) clients idle too
        long, unless they wait in a reserve or hold reserved jobs. Every quarter second at
        most: the timeouts are in seconds, and the plaintext path pays nothing per command."""
        self._sweep_at = now + SWEEP_INTERVAL
        for fd, (deadline, client, tls) in list(self._handshakes.items()):
            if self.clients.get(fd) is not client or tls.handshaken(client.sock):
                del self._handshakes[fd]
            elif deadline <= now:
                del self._handshakes[fd]
                log.info("TLS handshake timed out on %d", fd, extra={"connection": fd})
                self._drop(client, now)
        idle = self.idle_timeout
        if idle is None:
            return
        for client in list(self.clients.values()):
            conn = client.conn
            if now - client.seen >= idle and not conn.blocked and not conn.session.reserved:
                log.info("closing idle connection %d", client.fd, extra={"connection": client.fd})
                self._drop(client, now)

    def _periodic_sync(self, now: float) -> float | None:
        """-f MS: start the fsync once it is due and something is unsynced; return when the
        loop must wake up for the next one (None: nothing to sync, or one is running)."""
        syncer = self._syncer
        journal = self.journal
        if syncer is None or journal is None or syncer.busy or not journal.unsynced:
            return None
        if now < self._sync_due:
            return self._sync_due
        syncer.ask(self.written_seq)
        return None

    def _manage_memory(self) -> None:
        """Collect (then freeze) what survived young collections lately. Once a large burst
        of jobs has drained to an eighth of its peak, give the memory back: shrink the job
        table, collect everything, and ask malloc to return free pages to the OS. Only then,
        because a collection of everything is slow with millions of jobs. A burst is weighed
        in bytes, bodies included: ten thousand 64 KiB jobs are as big as a million small
        ones (and beanstalkd, whose job bodies are each one malloc, gives them back too)."""
        engine = self.hub.engine
        collect_survivors()
        weight = _weight(len(engine.jobs), engine.body_bytes)
        self._peak_weight = max(self._peak_weight, _weight(*engine.take_peak()))
        if weight * 8 < self._peak_weight and self._peak_weight - weight >= BURST_BYTES:
            started = time.perf_counter()
            engine.shrink()
            collect_survivors(everything=True)
            _malloc_trim()
            log.info(
                "released memory after a burst of %.0f MB of jobs (%.0f ms)",
                self._peak_weight / 1e6,
                (time.perf_counter() - started) * 1000,
            )
            self._peak_weight = weight

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for socket events and handle them (bootstrap only)."""
        try:
            events = self.epoll.poll(timeout)
        except InterruptedError:
            return
        if events:
            self.step(events)

    def signalled(self, signum: int) -> None:
        """The process's handler for SIGTERM, SIGINT, SIGUSR1 and SIGHUP. Python runs it in
        this thread between two operations, or when a system call such as the epoll wait is
        interrupted (and then retried: the eventfd makes the retry return at once); the
        signal itself is acted on by the loop, in ``step``."""
        self._signals.append(signum)
        os.eventfd_write(self._wake_fd, 1)

    def _take_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum == signal.SIGUSR1:
                _enter_drain_mode(self.hub)
            elif signum == signal.SIGHUP:
                self.reload()
            elif not self.stopping:
                log.info("got signal %d, shutting down", signum)
                self.stopping = True

    def step(self, events: list[tuple[int, int]]) -> None:
        now = self.clock()
        self._stepped = True
        self._first = self._first_burst if len(events) <= FIRST_BURST_READY else 0
        clients = self.clients
        for fd, mask in events:
            client = clients.get(fd)
            if client is None:
                listening = self.listeners.get(fd)
                if listening is not None:
                    self._accept(listening, now)
                elif fd == self._sync_fd:
                    self._synced()
                elif fd == self._wake_fd:
                    self._take_signals()  # (or a wake-up from settle: the deadline again)
                continue
            try:
                if mask & _WRITE:
                    self._send(client, b"")
                if client.mask & select.EPOLLIN:
                    if mask & (_READ | select.EPOLLHUP | select.EPOLLERR):
                        self._read(client, now)
                elif mask & (select.EPOLLHUP | select.EPOLLERR):
                    self._drop(client, now)  # gone while we were not reading it
                elif mask & select.EPOLLRDHUP:
                    # hung up while blocked in reserve with commands held: TIMED_OUT, as
                    # beanstalkd answers a waiting client that half-closes
                    self._set_mask(client, client.mask & ~select.EPOLLRDHUP)
                    client.conn.peer_hung_up(now)
            except Exception:
                # A bug must cost one connection, never the server.
                log.exception(
                    "internal error on connection %d; closing it", fd, extra={"connection": fd}
                )
                self._drop(client, now)
        self._flush_dirty(now)

    def _read(self, client: _Client, now: float) -> None:
        conn = client.conn
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client, now)
            return
        client.seen = now
        if data:
            conn.receive(data, now, self._first)  # (the rest: when these are sent)
            if conn.held > HELD_HIGH_WATER:  # behind a blocked reserve, or a slow reader's
                # stop reading; a blocked client still gets TIMED_OUT if it hangs up
                hangup = select.EPOLLRDHUP if conn.blocked else 0
                self._set_mask(client, (client.mask & ~_READ) | hangup)
        else:
            conn.receive_eof(now)
            self._set_mask(client, client.mask & ~_READ)
        self._close_if_done(client, now)

    def _close_if_done(self, client: _Client, now: float) -> None:
        """Close a connection that quit or half-closed once nothing of it is left to send."""
        conn = client.conn
        if (
            (conn.closing or conn.eof)
            and conn.finished
            and not conn.out
            and not client.wbuf
            and not self._is_held(client)
        ):
            self._drop(client, now)

    def _flush_dirty(self, now: float) -> None:
        hub = self.hub
        hub.deliver(now)
        by_conn = self._by_conn
        while hub.dirty:
            held = self._hold_group(self._journal_changes(now))
            for conn in hub.take_dirty():
                client = by_conn.get(conn)
                if client is None:
                    conn.out.clear()
                    continue
                out = conn.out
                if held is None and not client.wbuf and client.mask == _READ and not conn.held:
                    self._send_now(client, out, now)
                    continue
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                if held is not None:
                    held.append((client, data))
                else:
                    self._send(client, data)  # closes the client too, once all is out
            hub.deliver(now)
        self._journal_changes(now)

    def _send_now(self, client: _Client, out: list[bytes], now: float) -> None:
        """The common case: nothing is queued for the client, so its replies go straight to
        the socket in one call, joined into one buffer or, when they carry big bodies, as they
        are (``sendmsg``: a 64 KiB body is copied only into the socket). What the socket does
        not take goes to ``_send``."""
        conn = client.conn
        gather = conn.unsent >= protocol.BIG_BODY and 1 < len(out) <= GATHER_MAX
        if gather:
            data = b""
            total = sum([len(part) for part in out])
        else:
            data = out[0] if len(out) == 1 else b"".join(out)
            total = len(data)
        try:
            sent = client.sock.sendmsg(out) if gather else client.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            out.clear()
            self._drop(client, now)
            return
        if sent == total:
            out.clear()
            conn.unsent = 0
            self._close_if_done(client, now)
            return
        if gather:
            data = b"".join(out)  # (the socket is full: rare, and a copy is fine)
        out.clear()
        self._send(client, data[sent:])

    def _journal_changes(self, now: float) -> bool:
        engine = self.hub.engine
        changes = engine.changes
        if not changes and not engine.ops:
            return False
        ops = engine.ops
        if ops:
            engine.ops = []
        if self.journal is None:
            changes.clear()
            return False
        batch = changes[:]
        changes.clear()
        self.journal.write(batch, now, time.time(), ops)
        self.written_seq += 1
        return True

    def _hold_group(self, wrote: bool) -> list[tuple[_Client, bytes]] | None:
        """Where this batch's replies wait, if they must wait for an fsync: a new group when
        the batch wrote records, else the newest group (so a client's replies stay in order)."""
        if not self.sync_before_reply:
            return None
        if wrote:
            self._held.append((self.written_seq, []))
            self._ask_sync()
        elif not self._held:
            return None
        return self._held[-1][1]

    def _ask_sync(self) -> None:
        """Start the fsync that the held replies wait for, unless one runs (the next one
        starts when it ends) or the binlog could not write their records yet."""
        syncer = self._syncer
        if syncer is None or syncer.busy or self._retry_at is not None:
            return
        assert self.journal is not None
        if self.journal.stalled:
            # Records the disk refused (full, failing) are queued in the binlog; the replies
            # that depend on them wait until a retry gets them written.
            self._retry_at = self.clock() + STALL_RETRY
            return
        syncer.ask(self.written_seq)

    def _synced(self) -> None:
        """An fsync ended: send the replies it covers, and start the next one if more wait."""
        assert self._syncer is not None and self.journal is not None
        seq = self._syncer.done()
        if self._sync_period:  # -f MS: no reply waits; a failed fsync is retried when due
            self._sync_due = self.clock() + self._sync_period
            return
        if self._syncer.failed:
            # The disk refused the fsync (logged by the binlog): the replies keep waiting, and
            # the fsync is tried again after a pause rather than in a loop.
            self._retry_at = self.clock() + STALL_RETRY
            return
        if not self.journal.stalled:
            self._release(seq)
        if self._held:
            self._ask_sync()

    def _retry_journal(self) -> None:
        """Ask the binlog to write the records it had to queue, then fsync them."""
        assert self.journal is not None
        self.journal.write([], self.clock(), time.time())
        if self._held:
            self._ask_sync()

    def _release(self, synced_seq: int) -> None:
        """An fsync covering batches up to ``synced_seq`` finished: send their replies."""
        now = self.clock()
        if self._sync_waiters:
            waiters = self._sync_waiters
            self._sync_waiters = [w for w in waiters if w[0] > synced_seq]
            for seq, callback in waiters:
                if seq <= synced_seq:
                    callback()
        held = self._held
        while held and held[0][0] <= synced_seq:
            for client, data in held.popleft()[1]:
                if client.fd not in self.clients or self.clients[client.fd] is not client:
                    continue
                self._send(client, data)  # closes the client too, once all is out
        self._flush_dirty(now)  # connections that drained may have answered more

    # --- for the HTTP console ----------------------------------------------------------------

    def settle(self, now: float, synced: Callable[[], None]) -> bool:
        """After a change made outside any connection (the HTTP console's actions, through
        ``beanq.operations``): hand what it made ready to waiting reserves, write its binlog
        records and send the replies, as after a batch of commands. With -f 0 the change is
        acknowledged once durable, like a command's reply: returns True when ``synced`` will
        be called after the fsync that covers it, False when there is nothing to wait for."""
        os.eventfd_write(self._wake_fd, 1)  # (its wait's deadline came before the change)
        written = self.written_seq
        self._flush_dirty(now)
        if not self.sync_before_reply or self.written_seq == written:
            return False
        self._sync_waiters.append((self.written_seq, synced))
        self._held.append((self.written_seq, []))
        self._ask_sync()
        return True

    def peer(self, conn: Connection | None) -> tuple[str, float] | None:
        """The connection's peer address and when it last sent something (None: gone)."""
        client = None if conn is None else self._by_conn.get(conn)
        if client is None:
            return None
        addr = client.addr
        if isinstance(addr, tuple):
            host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
            return f"{host}:{addr[1]}", client.seen
        return f"unix:{addr or ''}", client.seen

    def _send(self, client: _Client, data: bytes) -> None:
        """Send what the socket takes; keep the rest, and stop reading a client whose unsent
        replies pile up. When everything is out, the connection may answer what it held."""
        wbuf = client.wbuf
        try:
            if wbuf:
                wbuf += data
                del wbuf[: client.sock.send(wbuf)]
            elif data:
                sent = client.sock.send(data)
                if sent < len(data):
                    wbuf += memoryview(data)[sent:]
        except (BlockingIOError, InterruptedError):
            if data and not wbuf:
                wbuf += data
        except OSError:
            self._drop(client, self.clock())
            return
        conn = client.conn
        if wbuf:
            mask = client.mask | _WRITE
            if len(wbuf) > OUTPUT_HIGH_WATER:
                mask &= ~_READ  # a client that does not read gets no more service
            self._set_mask(client, mask)
            return
        if client.mask & _WRITE or not client.mask & select.EPOLLIN:
            mask = client.mask & ~_WRITE
            if not conn.eof and conn.held <= HELD_HIGH_WATER:
                mask |= _READ
            self._set_mask(client, mask)
        now = self.clock()
        conn.drained(now)
        self._close_if_done(client, now)

    def _is_held(self, client: _Client) -> bool:
        return any(c is client for _, group in self._held for c, _ in group)

    def _set_mask(self, client: _Client, mask: int) -> None:
        if mask != client.mask and client.fd in self.clients:
            client.mask = mask
            self.epoll.modify(client.fd, mask)

    def _accept(self, listening: Listening, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.client_budget is not None and len(self.clients) >= self.client_budget:
                self._pause_accepting(now, OSError(errno.EMFILE, "descriptor reserve reached"))
                return
            try:
                sock, addr = listening.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(now, exc)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("accept(): %s", exc.strerror)
                return
            if self.max_connections is not None and len(self.clients) >= self.max_connections:
                sock.close()
                self._refuse(now)
                continue
            ip = _peer_ip(addr)
            if self.max_per_ip is not None and ip != LOCAL:  # (unix sockets: no address)
                if self._per_ip.get(ip, 0) >= self.max_per_ip:
                    sock.close()
                    log.info("too many connections from %s; closing a new one", ip)
                    continue
                self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            sock.setblocking(False)
            conn = self.hub.open()
            gate = listening.gate
            if gate is not None:
                gate.attach(conn, ip)
            tls = listening.tls
            if tls is not None:  # the handshake runs in its recv (see beanq.tls)
                sock = tls.wrap(sock, partial(gate.certified, conn) if gate else None)
            client = _Client(sock, conn, addr, now)
            client.ip = ip
            if tls is not None:
                self._handshakes[client.fd] = (now + self.handshake_timeout, client, tls)
            self.clients[client.fd] = client
            self._by_conn[conn] = client
            self.epoll.register(client.fd, client.mask)
            self._accept_warned = False
            log.info("accept %d", client.fd, extra={"connection": client.fd})

    def _refuse(self, now: float) -> None:
        if not self._refused_warned:
            log.warning(
                "connection limit (%d) reached; closing new connections", self.max_connections
            )
            self._refused_warned = True

    def _pause_accepting(self, now: float, exc: OSError) -> None:
        """Out of descriptors: stop accepting for a moment rather than spin on the listener.
        Warn once per burst; existing connections carry on."""
        if not self._accept_warned:
            log.warning("accept(): %s; pausing accepts for %.1fs", exc.strerror, ACCEPT_RETRY)
            self._accept_warned = True
        for fd in self.listeners:
            self.epoll.unregister(fd)
        self._accept_paused_until = now + ACCEPT_RETRY

    def _resume_accepting(self) -> None:
        self._accept_paused_until = None
        for fd in self.listeners:
            self.epoll.register(fd, select.EPOLLIN)

    def _drop(self, client: _Client, now: float) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        del self._by_conn[client.conn]
        if self.max_per_ip is not None and client.ip != LOCAL:
            left = self._per_ip.pop(client.ip, 1) - 1
            if left:
                self._per_ip[client.ip] = left
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(client.fd)
        client.sock.close()
        log.info("close %d", client.fd, extra={"connection": client.fd})
        client.conn.close(now)


def _nothing() -> None:
    pass


def _peer_ip(addr: Any) -> str:
    """The address a connection came from (its host part), or "local" for a Unix socket."""
    return str(addr[0]) if isinstance(addr, tuple) else LOCAL


# --- running -----------------------------------------------------------------------------------


def make_hub(config: Config, engine: Engine, journal: Journal | None) -> Hub:
    if journal is None:
        hub = Hub(engine, host_info(), max_job_size=config.max_job_size)
    else:
        hub = Hub(
            engine,
            host_info(),
            max_job_size=config.max_job_size,
            binlog_stats=journal.stats,
            job_file=journal.job_file,
            can_put=journal.can_put,
        )
    hub.max_jobs = config.max_jobs
    hub.quote_yaml = config.yaml != "1.12"
    return hub


def open_journal(config: Config, engine: Engine, lock: tuple[int, str] | None) -> Journal | None:
    """Replay the binlog directory into ``engine`` (only with ``-b``), under ``lock``, its
    lock, when the caller took it already (``beanq.binlog.lock_dir``)."""
    if config.binlog_dir is None:
        return None
    from beanq import binlog

    try:
        journal = binlog.Binlog.open(
            config.binlog_dir,
            segment_size=config.segment_size,
            max_job_size=config.max_job_size,
            fsync=config.fsync_ms is not None,
            lock=lock,
        )
    except binlog.BinlogError as exc:
        raise StartupError(str(exc), exc.code) from exc
    journal.replay(engine, time.monotonic(), time.time())
    return journal


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one: each client costs a descriptor, and
    10,000 idle clients are a normal day for a shared queue."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d: %s", soft, exc)
    log.info("descriptor limit %d", soft)
    return soft


def client_budget(limit: int) -> int:
    """How many clients fit in the descriptor limit beside what is open now and FD_RESERVE
    (half of what is free, under a limit too low for the whole reserve)."""
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 16
    spare = max(0, limit - in_use)
    return max(1, spare - min(FD_RESERVE, spare // 2))


def run(config: Config, bound: list[Endpoint], lock: tuple[int, str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT on ``bound`` (``beanq.listener``'s bare sockets).
    Serving starts at once; trio joins when imported."""
    from beanq import peers

    listeners, reload = peers.listeners(config, bound)
    log.info("beanq %s, %s", __version__, buildinfo.describe())
    fd_limit = raise_fd_limit()
    engine = Engine(time.monotonic())
    engine.wall_offset = time.time() - time.monotonic()  # (schedules' fire times are wall-clock)
    journal = open_journal(config, engine, lock)
    tune_collector()
    hub = make_hub(config, engine, journal)
    loop = EpollLoop(listeners, hub, journal=journal, sync_before_reply=config.fsync_ms == 0)
    loop.max_connections = config.max_connections
    loop.max_per_ip = config.max_connections_per_ip
    loop.idle_timeout = config.idle_timeout
    loop.handshake_timeout = config.tls_handshake_timeout
    loop.reload = reload
    loop.client_budget = client_budget(fd_limit)
    token = _read_token(config.http_token_file) if config.http is not None else None
    _bootstrap(loop)
    if loop.stopping:
        loop.close()
        return
    import trio

    try:
        trio.run(_serve, loop, config.fsync_ms, config, token)
    except BaseExceptionGroup as group:
        matched, _ = group.split(StartupError)
        failed: BaseException | None = matched
        while isinstance(failed, BaseExceptionGroup):
            failed = failed.exceptions[0]
        if failed is not None:
            raise failed from None
        raise


def _read_token(path: str | None) -> str | None:
    """--http-token-file: the whole file, less surrounding white space, is the token."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"--http-token-file {path}: {exc}", 5) from exc
    if not token:
        raise StartupError(f"--http-token-file {path} is empty", 5)
    return token


def _bootstrap(loop: EpollLoop) -> None:
    """Serve with a plain epoll wait while trio is imported on a helper thread. The signal
    handlers installed here stay for the process's life: the loop acts on the signals."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(signum, _handler(loop))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    importer = threading.Thread(target=_import_trio, name="import-trio", daemon=True)
    importer.start()
    while importer.is_alive() and not loop.stopping:
        when = loop.next_deadline()
        timeout = 0.005 if when is None else min(0.005, max(0.0, when - loop.clock()))
        loop.poll(timeout)


def _handler(loop: EpollLoop) -> Callable[[int, object], None]:
    def handle(signum: int, _frame: object) -> None:
        loop.signalled(signum)

    return handle


def _import_trio() -> None:
    import trio  # noqa: F401


def _enter_drain_mode(hub: Hub) -> None:
    if not hub.draining:
        hub.draining = True
        log.info("entering drain mode")


def _set_drain_mode(hub: Hub, on: bool) -> None:
    """Drain mode from the HTTP console: on as SIGUSR1 sets it, or off again."""
    if on:
        _enter_drain_mode(hub)
    elif hub.draining:
        hub.draining = False
        log.info("leaving drain mode")


async def _serve(
    loop: EpollLoop,
    fsync_ms: int | None,
    config: Config | None = None,
    token: str | None = None,
) -> None:
    import trio

    _tune_malloc()  # (here, not on the way to the first answer: loading ctypes takes 3 ms)
    log.info("trio is up")  # start-up is over: what the process holds from here on is its own
    http = config is not None and config.http is not None
    async with trio.open_nursery() as nursery:
        if fsync_ms:  # (-f 0 syncs before replying: see _Syncer)
            loop.sync_every(fsync_ms / 1000)
        if config is not None and http:
            nursery.start_soon(_serve_http, loop, config, token)
        try:
            await _epoll_forever(loop, cooperative=http)
            nursery.cancel_scope.cancel()  # (the HTTP side)
        finally:
            loop.close()
            log.info("shut down")


def _import_http() -> None:
    import beanq.http  # noqa: F401


async def _serve_http(loop: EpollLoop, config: Config, token: str | None) -> None:
    """--http: the beanstalk socket answers already; import the HTTP stack on a helper thread
    (the loop keeps serving meanwhile), bind, and serve it on this trio run."""
    import trio

    await trio.to_thread.run_sync(_import_http)
    from beanq import http

    assert config.http is not None
    host, port = config.http
    try:
        sock = http.bind(host, port)
    except OSError as exc:
        raise StartupError(f"--http {host}:{port}: {exc.strerror}", 111) from exc
    hub = loop.hub
    hub.engine.observe()
    gates = [each.gate for each in loop.listeners.values() if each.gate is not None]
    view = http.EngineView(
        hub.engine,
        hub.host,
        max_job_size=hub.max_job_size,
        clock=loop.clock,
        draining=lambda: hub.draining,
        sessions=hub.connections.keys,
        binlog=loop.journal,
        peer=lambda session: loop.peer(hub.connections.get(session)),
        auth=gates[0].audit() if gates else None,  # (one token store, one audit, for all)
    )

    async def settle(now: float) -> None:
        synced = trio.Event()
        if loop.settle(now, synced.set):
            await synced.wait()

    from beanq.operations import Operations

    operations = Operations(hub.engine, loop.clock, settle, lambda on: _set_drain_mode(hub, on))
    settings = http.Settings(
        token=token, show_bodies=config.http_show_bodies, max_tubes=config.metrics_max_tubes
    )
    await http.serve(view, settings, sock, operations)


STALL_RETRY = 0.1  # seconds between retries of binlog writes the disk refused
CHECKPOINT_INTERVAL = 0.005  # how often the loop lets trio's other tasks run, at most
SPIN = 50e-6  # how long the loop polls without sleeping after input
SPIN_BACKOFF_MAX = 64  # after fruitless spins, spin again only every this many wake-ups
IDLE_GRACE = 0.001  # --http: idle this long, the loop waits through trio (see below)


async def _epoll_forever(loop: EpollLoop, cooperative: bool = False) -> None:
    """Wait in our own epoll set, until input or the next deadline, and let trio's other
    tasks (HTTP) run at a checkpoint every few milliseconds. That spares each wake-up a round
    through trio's scheduler (~10 us, as much as the command itself). Signals come through
    the epoll set too (``EpollLoop.signalled``), so an idle server sleeps: it used to wake
    every 50 ms to let trio look for them, ~0.5 % of a core doing nothing. Ends on SIGTERM
    or SIGINT.

    ``cooperative`` (--http): trio's other tasks serve sockets of their own, which must not
    wait for our next wake-up, so once the loop has been idle for IDLE_GRACE the rest of
    the wait goes through trio (our epoll set is readable when it has events). Not at once:
    a wait through trio costs tens of microseconds more, and under load the gaps between
    batches are shorter than the grace (going through trio at every gap cost a quarter of
    put throughput at 50 connections); HTTP tasks then run at the checkpoints."""
    import trio

    epoll = loop.epoll
    clock = loop.clock
    checkpointed = clock()
    busy = False
    skip = 0  # wake-ups to go before spinning again, after spins that found nothing
    backoff = 1
    while not loop.stopping:
        when = loop.next_deadline()
        now = clock()
        events: list[tuple[int, int]] = []
        if busy and not skip:
            # Input came a moment ago: poll for a few microseconds more before sleeping, so
            # that clients keeping requests coming find the loop awake (putting the process
            # to sleep and waking it costs more than these polls). Spins that find nothing
            # are tried less and less often, so sparse traffic costs next to no CPU.
            spin_until = now + SPIN
            while not events and clock() < spin_until:
                events = epoll.poll(0)
            if events:
                backoff = 1
            else:
                skip = backoff
                backoff = min(backoff * 2, SPIN_BACKOFF_MAX)
        elif skip and busy:
            skip -= 1
        if not events:
            timeout = -1.0 if when is None else max(0.0, when - clock())  # (-1: no deadline)
            if cooperative and (timeout < 0 or timeout > IDLE_GRACE):
                events = epoll.poll(IDLE_GRACE)
                if not events:
                    with trio.move_on_after(math.inf if timeout < 0 else timeout - IDLE_GRACE):
                        await trio.lowlevel.wait_readable(epoll.fileno())
                    checkpointed = clock()
                    events = epoll.poll(0)
            else:
                events = epoll.poll(timeout)
        busy = bool(events)
        if events:
            loop.step(events)
        now = clock()
        if now - checkpointed >= CHECKPOINT_INTERVAL or not events:
            await trio.lowlevel.checkpoint()
            checkpointed = now


# --- serving trio streams (tests, embedding) ---------------------------------------------------


class StreamServer:
    """Serves a ``Hub`` over trio streams, one task per connection, on trio's clock.

    Start ``run_timers`` in a nursery, then ``handle(stream)`` for each connection."""

    def __init__(self, hub: Hub) -> None:
        import trio

        self.hub = hub
        self._wakeups: dict[Connection, trio.Event] = {}
        self._poke = trio.Event()

    async def run_timers(self) -> None:
        import trio

        while True:
            when = self.hub.tick(trio.current_time())
            self._signal_writers()
            self._poke = trio.Event()
            with trio.move_on_at(when if when is not None else float("inf")):
                await self._poke.wait()

    def _after_input(self) -> None:
        import trio

        self.hub.deliver(trio.current_time())
        self._signal_writers()
        self._poke.set()

    def _signal_writers(self) -> None:
        for conn in self.hub.take_dirty():
            event = self._wakeups.get(conn)
            if event is not None:
                event.set()

    async def handle(self, stream: trio.abc.Stream) -> None:
        import trio

        conn = self.hub.open()
        self._wakeups[conn] = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, conn, stream, nursery.cancel_scope)
                await self._read(conn, stream)
        finally:
            del self._wakeups[conn]
            conn.close(trio.current_time())
            self._after_input()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read(self, conn: Connection, stream: trio.abc.Stream) -> None:
        import trio

        while not conn.finished:
            try:
                data = await stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.closing = True
                break
            if data:
                conn.receive(bytes(data), trio.current_time())
            else:
                conn.receive_eof(trio.current_time())
            self._after_input()
        # let the writer finish sending, then stop it
        self._wakeups[conn].set()

    async def _write(self, conn: Connection, stream: trio.abc.Stream, scope: Any) -> None:
        import trio

        while True:
            await self._wakeups[conn].wait()
            self._wakeups[conn] = trio.Event()
            if conn.out:
                data = b"".join(conn.out)
                conn.out.clear()
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    scope.cancel()
                    return
                conn.drained(trio.current_time())  # may answer commands held by the cap
                self._after_input()
            if conn.finished and not conn.out:
                scope.cancel()
                return
