"""The binlog (``-b DIR``): every durable job change, on disk, replayed at start-up.

Theory of operation
-------------------
This module is the only code that touches the binlog directory. The engine never writes: it
lists in ``engine.changes`` every job whose durable state changed (put, reserve, release,
bury, kick, delete, TTR expiry, delay promotion), and the server hands those lists to
``Binlog.write`` (a ``pwrite``, no fsync) and calls ``Binlog.sync`` from a worker thread when
its policy (``-f``/``-F``) says so. ``write`` and ``sync`` share a lock held only for
bookkeeping, never across an fsync; ``can_put`` takes it only to grow the current segment or
start the next one.

Format. The directory holds ``binlog.N`` segment files, N increasing (beanstalkd's names, so
``binlog-oldest-index`` and ``binlog-current-index`` mean what they mean there), and the
``lock`` file that beanstalkd locks too. A segment starts with a 32-byte header (magic,
version, CRC, then the highest job id and the next stamp when it was started), then *frames*,
one per ``pwrite``: a 12-byte header (magic, length, CRC-32 of what follows) and records back
to back. A record is an 80-byte little-endian header (magic, CRC-32 of the rest of the record,
length, priority, id, stamp, delay deadline and creation time as wall-clock seconds, delay,
TTR, the five counters, state, tube-name length), then, in a *full* record only, the tube name
and the body. Every record holds the job's whole state. A job's first record is a full one;
later changes are 80-byte *short* records; a deletion is a short record in state 0 (a
*tombstone*). Full records are written again only by compaction.

Order. A job's records reach the log in the order they happened (segments in order, records
in file order, a rewrite after what it copies), so at replay the last record read for a job
wins. Per live job the binlog remembers two segments, in the job's ``logged`` field: its
*anchor* (its newest full record, where its body is) and its *latest* record; both are
pinned. A tombstone must outlive every full record of its job, so its segment is also pinned
by the segment of the job's anchor, and a segment that received rewritten records is pinned
by the segments they were copied from. A segment with no pins is garbage: it is unlinked
once the records that superseded it are on disk, by the next ``sync`` (and in order: a
directory fsync comes before the pins it held on newer segments are released), or at once if
the server never syncs (``fsync=False``, ``-F``).
Stamps come from one counter that never goes back; a buried job's record keeps the stamp of
its bury, even when rewritten, and buried jobs come back in stamp order: the bury order.

Compaction. When the old segments that would not go by themselves hold more than twice the
live data (each live job's full record, plus its latest record when that is apart), the oldest
one holding live records is evacuated: its live jobs are rewritten as full records into the
current segment, within a budget per ``write`` proportional to what the call wrote. The
directory thus stays within about three times the live data plus the current segment, whatever
the workload: a job released with a delay a million times (beanstalkd #622) leaves a full
record and a few short ones; long-lived jobs among heavy churn get moved along.

Space. Segments are preallocated (``posix_fallocate``) and written in place, so a write inside
the preallocated room cannot fail for lack of space. The binlog owes room: the tombstone of
every live job and the record of every put ``can_put`` accepted. The current segment always
holds that much free preallocated room (it is grown, or the next segment is started, before a
promise is made), so a put refused by ``can_put`` (OUT_OF_MEMORY) changes nothing, an accepted
put is always written whole, and deletes always succeed. Other changes use the room left; when
there is none (disk full), or a write fails, the jobs concerned stay queued in memory, the
problem is logged (then every 10 s while it lasts), and every ``write`` retries them;
``stalled`` is true meanwhile. A write that failed halfway is zeroed out before it is retried.

Replay. Segments are read whole, in order. A frame whose CRC matches is applied without
looking at record checksums (the fast path: one ``unpack_from`` and one ``Job`` per record, no
lookup for a record about an id above every id seen so far). Any other bytes are *salvaged*:
every record whose own magic, length and CRC hold is kept, each damaged run is reported on
stderr as ``file:offset`` and skipped, and reading goes on after it and in later segments.
Jobs go to the engine in one ``Engine.restore`` call per tube; the collector is off meanwhile
and the result frozen (millions of objects, none of them garbage). Ids continue past the
highest id in any record or segment header (the id of a job put and deleted before it was
written is kept by a tombstone, so it is never handed out again).

Schedules. ``beanq.schedules`` hands its changes over as ``Engine.ops`` (OP_SCHEDULE): each
is a D_SCHEDULE record (id 0) in its own frame, written in order with the job records (a fire's
before the put of its job). After each new segment, a snapshot of every schedule follows in
parts (D_SCHEDULE records of about ``SNAP_MIN`` bytes, or what the write wrote, each written
at the end of a ``write`` once everything before it is: ten thousand schedules are 2.5 MB of
JSON, 80 ms of work that in one piece stalled the loop at each new segment). The last record
read for a schedule wins, and a complete snapshot replaces them all (``schedules.Replay``).
Every segment from the one holding the first part of the last complete snapshot on is kept
(``_sched_floor``): replay then reads that snapshot and every schedule record since. Files
written before 2026-12-08 hold one whole snapshot as the first frame of each segment; they
read the same way.

Migration. Files written by beanstalkd 1.12 (format 7) or 1.4.4 to 1.10 (format 5) are read by
``beanq.binlog_v7``, which translates their records into beanq records in memory. They take
part in replay and compaction as read-only segments: new records are written in beanq's
format, and compaction rewrites the imported jobs into beanq segments until the beanstalkd
files can be deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import logging
import os
import re
import struct
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from beanq import binlog_v7
from beanq.dispatch import BinlogStats
from beanq.tubes import (
    OP_FLUSH,
    OP_SCHEDULE,
    Engine,
    Job,
    KeyedJob,
    State,
    Tube,
    restored_job,
    restored_keyed_job,
)

try:  # zlib's CRC-32, ~20x as fast on a frame (carry-less multiplication); same values
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - a platform without isal's wheels
    from zlib import crc32

log = logging.getLogger("beanq")

SEG_MAGIC: Final = b"BEANQSEG"
SEG_VERSION: Final = 1
SEG_HEADER: Final = struct.Struct("<8sIIQQ")  # magic, version, crc, max id, next stamp
FRAME_MAGIC: Final = b"bqF\x01"
FRAME: Final = struct.Struct("<4sII")  # magic, length of the records, crc32 of the records
# A record checked by its frame alone (written since 2026-12-07): its crc field is 0. Like
# Kafka's record batches, a frame is the unit of integrity: one checksum over the joined
# records costs ~45 ns a record, a checksum of each record ~170 ns more (zlib's per-call cost
# on ~200 bytes), a sixth of what the binlog adds to a pipelined put. A frame is written by
# one pwritev before any of its changes is acknowledged, so a torn frame (kill -9 or power
# loss mid-write) holds nothing acknowledged, and a frame damaged later loses its records
# together (reported), where per-record checksums kept its intact ones.
REC_MAGIC: Final = b"bqR\x02"
# A record with a checksum of its own (the crc field: of the record from `length` on), as
# beanq wrote them before: still read, and salvaged one by one from a damaged frame. (Records
# translated from beanstalkd's binlog are made in memory as REC_MAGIC ones.)
REC_MAGIC_CHECKED: Final = b"bqR\x01"
# magic, crc, length, pri, id, stamp, deadline, created, delay, ttr,
# reserves, timeouts, releases, buries, kicks, state, tube length, (pad)
REC: Final = struct.Struct("<4sIIIQQddIIIIIIIBBH")
# REC without magic and crc; its last field (pad) is the key length of a beanq-put-unique job
REC_BODY: Final = struct.Struct("<8xIIQQddIIIIIIIBBH")
# REC of a ready job with all counters at zero (a put, usually): the zeros are padding
FRESH_REC: Final = struct.Struct("<4s4xIIQQ8xdII20xBB2x")
REC_LENGTH_ID: Final = struct.Struct("<8xI4xQ")  # REC's length and id
# REC of a tombstone: magic, length, pri 0, id, stamp, then zeros (0.0 packs as zero bytes too)
TOMB_REC: Final = struct.Struct("<4s4xIIQQ48x")
# Sizes as literals, so that compiled code folds them into constants
HS: Final = 80  # REC.size: a short record, a tombstone, the header of a full record
FS: Final = 12  # FRAME.size
assert REC.size == HS and FRAME.size == FS and FRESH_REC.size == HS and TOMB_REC.size == HS
# Bound once: compiled code then calls them straight, without a look-up per record
_crc32: Final = crc32
_pack_rec: Final = REC.pack
_pack_tomb: Final = TOMB_REC.pack
_pack_frame: Final = FRAME.pack
MAX_TUBE: Final = 200
U32: Final = 0xFFFFFFFF
LOW: Final = U32  # Job.logged: anchor seq << 32 | latest seq
NAME_RE: Final = re.compile(r"binlog\.([0-9]+)\Z")

# On-disk states (beanstalkd's numbering, so translated records need no table)
D_DELETED: Final = 0
D_READY: Final = 1
D_RESERVED: Final = 2
D_BURIED: Final = 3
D_DELAYED: Final = 4
# A record of many deletions at once (beanq-flush): the header (id: the highest of them), then
# the ids, ascending, as runs: varint(gap from the end of the previous run), varint(length)
D_FLUSH: Final = 8
D_SCHEDULE: Final = 9  # a schedule's state, its removal, or a segment's snapshot of them all
_LAST_JOB_STATE: Final = 4  # D_DELAYED, as a constant the compiled replay loop inlines

_FROM_DISK: Final = (State.DELETED, State.READY, State.RESERVED, State.BURIED, State.DELAYED)

DEL: Final = HS + FS  # room owed for a tombstone (alone in its frame, at worst)
PUT_ROOM: Final = HS + MAX_TUBE + FS + DEL  # room can_put promises, besides the body
PAGE: Final = 4096
EXTEND_STEP: Final = 1 << 20  # growth of the current segment beyond what is needed
COMPACT_MIN: Final = 64 << 10  # bytes of live data compaction may rewrite per write() call
SNAP_MIN: Final = 8 << 10  # bytes of schedules' snapshot written per write() call, at least
RETRY_LOG_INTERVAL: Final = 10.0
ROLL_RETRY: Final = 0.5  # seconds between attempts to create a segment after a failure


class BinlogError(Exception):
    """The binlog cannot be used; ``code`` is beanstalkd's exit status for the same failure."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Segment:
    """One ``binlog.N`` file and the bookkeeping that decides when it can go."""

    __slots__ = (
        "cap",
        "dead_at",
        "dependents",
        "fd",
        "foreign",
        "path",
        "pins",
        "refs",
        "seq",
        "used",
    )

    def __init__(self, seq: int, path: str, used: int, *, foreign: bool = False) -> None:
        self.seq = seq
        self.path = path
        self.used = used  # bytes written (the end of the last frame)
        self.cap = used  # bytes preallocated
        self.fd = -1  # open only while current, or until fsynced after it stopped being current
        self.foreign = foreign  # a beanstalkd file: read-only
        self.refs = 0  # live jobs whose anchor or latest record is here (a job may count twice)
        self.pins = 0  # reasons to outlive older segments (see Binlog._pin)
        self.dependents: dict[int, int] = {}  # newer seq -> pins this segment holds on it
        self.dead_at: int | None = None  # garbage since this write position

    def __repr__(self) -> str:
        return f"<Segment {self.seq} used={self.used} refs={self.refs} pins={self.pins}>"


class _Batch:
    """Records for the current segment, not yet written: one frame."""

    __slots__ = ("effects", "parts", "puts", "released", "size")

    def __init__(self) -> None:
        # emptied in place once written (_flush and _compact hold on to the lists)
        self.parts: list[bytes] = []
        self.size = 0  # bytes, frame header included once there is a record
        self.released = 0  # owed room these records use up
        self.effects: list[Effect] = []
        # The full records of promised puts of jobs that are not buried, the bulk of most
        # frames: what they do to the bookkeeping follows from the job alone, no Effect needed.
        self.puts: list[Job] = []

    def add(self, parts: list[bytes], effect: Effect, released: int) -> None:
        if not self.parts:
            self.size = FS
        self.parts.extend(parts)
        self.size += effect[4]
        self.released += released
        self.effects.append(effect)


# What a record does to the bookkeeping once written: (kind, id, job or None, stamp, size).
Effect = tuple[int, int, "Job | None", int, int]


# effect kinds (Final literals: compiled, they are constants, not look-ups in the module)
_PUT: Final = 0
_PUT_RESERVED: Final = 1
_UPDATE: Final = 2
_TOMB: Final = 3
_REWRITE: Final = 4
_MARK: Final = 5


def _rec_header(
    job: Job,
    length: int,
    stamp: int,
    offset: float,
    tube_length: int,
    key_length: int = 0,
    tube: bytes = b"",
) -> bytes:
    """The REC of a record of ``job``'s current state (``offset``: wall - engine), its
    counters modulo 2**32, followed by ``tube``; ``key_length``: of a job put with a key (0
    for others)."""
    state = job.state
    if (
        state is State.READY
        and not (key_length | job.reserves | job.timeouts | job.releases | job.buries | job.kicks)
        and len(tube) <= MAX_TUBE
    ):  # a put, mostly: 9 fields to convert instead of 16, the tube packed along
        return _fresh_packer(len(tube))(
            REC_MAGIC,
            length,
            job.pri,
            job.id,
            stamp,
            job.created + offset,
            job.delay,
            job.ttr,
            D_READY,
            tube_length,
            tube,
        )
    header = _pack_rec(
        REC_MAGIC,
        0,
        length,
        job.pri,
        job.id,
        stamp,
        job.deadline + offset if state is State.DELAYED else 0.0,
        job.created + offset,
        job.delay,
        job.ttr,
        job.reserves & U32,
        job.timeouts & U32,
        job.releases & U32,
        job.buries & U32,
        job.kicks & U32,
        _disk_state(state),
        tube_length,
        key_length,
    )
    return header + tube if tube else header


def _disk_state(state: State) -> int:
    """``state`` in beanstalkd's numbering (compared, not hashed: an enum hashes in Python)."""
    if state is State.READY:
        return D_READY
    if state is State.RESERVED:
        return D_RESERVED
    if state is State.BURIED:
        return D_BURIED
    if state is State.DELAYED:
        return D_DELAYED
    return D_DELETED


def _record(parts: list[bytes], job: Job, stamp: int, offset: float, full: bool = True) -> None:
    """Append to ``parts`` a record of live ``job``: a full one (with its tube and body) or a
    short one (its state only). The parts are joined once, with the frame."""
    if not full:
        parts.append(_rec_header(job, HS, stamp, offset, 0))
        return
    tube = job.tube.name
    body = job.body
    tlen = len(tube)
    if isinstance(job, KeyedJob):
        key = job.key
        length = HS + tlen + len(key) + len(body)
        parts.append(_rec_header(job, length, stamp, offset, tlen, len(key), tube))
        parts.append(key)
    else:
        parts.append(_rec_header(job, HS + tlen + len(body), stamp, offset, tlen, 0, tube))
    parts.append(body)


_FRESH_PACKERS: Final[list[Callable[..., bytes] | None]] = [None] * (MAX_TUBE + 1)


def _fresh_packer(tube_length: int) -> Callable[..., bytes]:
    """``FRESH_REC`` followed by a tube name of ``tube_length`` bytes (made when first
    needed: a server sees a handful of name lengths)."""
    pack = _FRESH_PACKERS[tube_length]
    if pack is None:
        pack = struct.Struct(f"{FRESH_REC.format}{tube_length}s").pack
        _FRESH_PACKERS[tube_length] = pack
    return pack


def _repeats(jobs: list[Job]) -> bool:
    """Whether some job is listed twice. Ids that only go up (a run of puts, the bulk of a
    busy log) prove that none is, without hashing every job into a set."""
    last = -1
    for job in jobs:
        if job.id <= last:
            return len(set(jobs)) != len(jobs)
        last = job.id
    return False


def _payload(job: Job) -> int:
    """Bytes of a job's full record beside the header and tube name: its body (and key)."""
    if isinstance(job, KeyedJob):
        return len(job.body) + len(job.key)
    return len(job.body)


def _full_size(job: Job) -> int:
    """Bytes of a full record of ``job``: the header, its tube's name, its body (and key)."""
    return HS + len(job.tube.name) + _payload(job)


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)


def _encode_ids(ids: list[int]) -> bytes:
    """Ascending ids as runs of consecutive ids (a flush of a tube filled by one producer is
    a few bytes, however many jobs)."""
    out = bytearray()
    end = 0  # one past the previous run
    i = 0
    n = len(ids)
    while i < n:
        start = ids[i]
        j = i + 1
        while j < n and ids[j] == start + (j - i):
            j += 1
        _varint(out, start - end)
        _varint(out, j - i)
        end = start + (j - i)
        i = j
    return bytes(out)


def _decode_ids(buf: bytes, p: int, stop: int) -> list[int]:
    ids: list[int] = []
    end = 0
    while p < stop:
        values = [0, 0]
        for k in range(2):
            shift = 0
            n = 0
            while True:
                b = buf[p]
                p += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            values[k] = n
        start = end + values[0]
        end = start + values[1]
        ids.extend(range(start, end))
    return ids


def _flush_record(ids: list[int], stamp: int) -> list[bytes]:
    payload = _encode_ids(ids)
    head = TOMB_REC.pack(REC_MAGIC, HS + len(payload), 0, ids[-1], stamp)
    return [head[:-4] + bytes([D_FLUSH, 0, 0, 0]), payload]


def _schedule_record(payload: bytes, stamp: int) -> list[bytes]:
    """A D_SCHEDULE record: ``payload`` is beanq.schedules' (no job id: 0)."""
    head = TOMB_REC.pack(REC_MAGIC, HS + len(payload), 0, 0, stamp)
    return [head[:-4] + bytes([D_SCHEDULE, 0, 0, 0]), payload]


def _tombstone(parts: list[bytes], jid: int, stamp: int) -> None:
    parts.append(_pack_tomb(REC_MAGIC, HS, 0, jid, stamp))


# --- reading segments ----------------------------------------------------------------------


class _Scan(NamedTuple):
    """What a segment file holds: record ranges to apply, where the data ends, and more."""

    ranges: list[tuple[bytes, int, int]]  # (buffer, start, end) of records, in file order
    end: int  # offset just past the last intact frame or record
    zero_tail: bool  # only zeros (preallocated room) follow `end`
    max_id: int
    next_stamp: int


def _header(max_id: int, next_stamp: int) -> bytes:
    crc = crc32(SEG_HEADER.pack(SEG_MAGIC, SEG_VERSION, 0, max_id, next_stamp))
    return SEG_HEADER.pack(SEG_MAGIC, SEG_VERSION, crc, max_id, next_stamp)


def _read_header(buf: bytes) -> tuple[int, int] | None:
    if len(buf) < SEG_HEADER.size:
        return None
    magic, version, crc, max_id, next_stamp = SEG_HEADER.unpack_from(buf)
    if magic != SEG_MAGIC or version != SEG_VERSION:
        return None
    if crc32(SEG_HEADER.pack(magic, version, 0, max_id, next_stamp)) != crc:
        return None
    return max_id, next_stamp


def _record_ok(buf: bytes, mv: memoryview, q: int, n: int) -> int:
    """The length of the intact record at ``q``, or 0."""
    if not buf.startswith(REC_MAGIC_CHECKED, q) or q + HS > n:
        return 0  # (a record without a checksum of its own cannot be vouched for)
    _, crc, length, *_, state, tlen, klen = REC.unpack_from(buf, q)
    if length < HS or q + length > n or tlen + klen > length - HS:
        return 0
    if state > D_DELAYED and state != D_FLUSH and state != D_SCHEDULE:
        return 0
    if state == D_DELETED and length != HS:
        return 0
    return length if crc32(mv[q + 8 : q + length]) == crc else 0


def _frame_ok(buf: bytes, mv: memoryview, p: int, n: int) -> int:
    """The end of the intact frame at ``p``, or 0."""
    if not buf.startswith(FRAME_MAGIC, p) or p + FS > n:
        return 0
    _, length, crc = FRAME.unpack_from(buf, p)
    end: int = p + FS + length
    if length < HS or end > n or crc32(mv[p + FS : end]) != crc:
        return 0
    return end


def _next_magic(buf: bytes, q: int, limit: int) -> int:
    hits = [
        i
        for i in (buf.find(REC_MAGIC_CHECKED, q, limit), buf.find(FRAME_MAGIC, q, limit))
        if i >= 0
    ]
    return min(hits) if hits else limit


def _salvage(buf: bytes, p: int, limit: int, path: str | None) -> tuple[bytes, int, int]:
    """Intact records from ``p`` up to the next intact frame (or ``limit``, where the zeros
    start). Reports each damaged run (unless ``path`` is None). Returns (records, where to
    go on, end of the last intact record)."""
    mv = memoryview(buf)
    n = len(buf)
    out: list[bytes] = []
    q = p
    good_end = p
    bad: int | None = None
    while q < limit:
        if q > p and _frame_ok(buf, mv, q, n):
            break
        length = _record_ok(buf, mv, q, n)
        if length:
            if bad is not None and path is not None:
                _report(path, bad, q - bad)
            bad = None
            out.append(buf[q : q + length])
            q = good_end = q + length
            continue
        if buf.startswith(FRAME_MAGIC, q) and q + FS <= n:
            if path is not None:
                log.warning(
                    "%s:%d: frame is cut short or fails its checksum; its records are lost"
                    " (but any that carry a checksum of their own)",
                    path,
                    q,
                )
            q += FS  # its records may still be whole
            continue
        if bad is None:
            bad = q
        q = _next_magic(buf, q + 1, limit)
    if bad is not None and path is not None:
        _report(path, bad, q - bad)
    return b"".join(out), q, good_end


def _report(path: str, offset: int, size: int) -> None:
    log.warning(
        "%s:%d: %d bytes of torn or corrupt data (bad length or checksum) skipped",
        path,
        offset,
        size,
    )


def _zeros_from(buf: bytes) -> int:
    """Where the run of zero bytes that ends ``buf`` starts (without copying ``buf``)."""
    end = len(buf)
    while end:
        start = max(0, end - 65536)
        if buf.count(0, start, end) != end - start:
            return start + len(buf[start:end].rstrip(b"\0"))
        end = start
    return 0


def _scan(buf: bytes, path: str, report: bool = True) -> _Scan:
    """Split a beanq segment into trusted frames and salvaged records."""
    n = len(buf)
    limit = _zeros_from(buf)  # zeros past here are preallocated room
    if limit == 0:
        return _Scan([], 0, True, 0, 0)  # created, never written
    mv = memoryview(buf)
    ranges: list[tuple[bytes, int, int]] = []
    header = _read_header(buf)
    if header is None and report:
        log.warning("%s:0: damaged segment header; salvaging its records", path)
    if header is None:
        max_id, next_stamp = 0, 0
        p = end = 0
    else:
        max_id, next_stamp = header
        p = end = SEG_HEADER.size
    while p < limit:
        frame_end = _frame_ok(buf, mv, p, n)
        if frame_end:
            ranges.append((buf, p + FS, frame_end))
            p = end = frame_end
            continue
        records, p, good_end = _salvage(buf, p, limit, path if report else None)
        if records:
            ranges.append((records, 0, len(records)))
            end = max(end, good_end)
    return _Scan(ranges, end, end >= limit, max_id, next_stamp)


# --- replay ----------------------------------------------------------------------------------


class _Replay:
    """Everything read back from the segments, before it goes to the engine.

    Records of one job appear in the log in the order they were written (segments in order,
    records in file order; a rewrite is a later record), so the last record read wins."""

    def __init__(self, now: float, wall: float) -> None:
        self.offset = now - wall  # wall-clock seconds -> engine clock
        self.jobs: dict[int, Job] = {}  # live jobs, each with its ``logged`` (see Binlog)
        self.dead: dict[int, tuple[int, int]] = {}  # id -> (tombstone seq, anchor seq or 0)
        self.extra: dict[int, set[int]] = {}  # id -> other segments holding a full record
        self.order: dict[int, int] = {}  # id -> stamp of its last bury (buried jobs' order)
        self.tubes: dict[bytes, Tube] = {}
        self.keyed: list[KeyedJob] = []  # jobs put with beanq-put-unique (some may be dead)
        self.schedules: Any = None  # schedules.Replay, made at the first D_SCHEDULE record
        self.max_id = 0
        self.max_stamp = 0
        self.live = 0

    def apply(self, seq: int, buf: bytes, start: int, end: int) -> None:
        """Apply the intact records in ``buf[start:end]``, read from segment ``seq``.

        The hot loop of a replay: every name it uses is local, a record for an id above every
        id seen so far (a put, in the common case) needs no lookup at all, and the id object
        the record was unpacked into is the key of the job table and the job's id."""
        unpack = REC_BODY.unpack_from
        jobs = self.jobs
        dead = self.dead
        order = self.order
        tubes = self.tubes
        offset = self.offset
        max_id = self.max_id
        max_stamp = self.max_stamp
        live = self.live
        both = seq << 32 | seq
        tube: Tube | None = None
        name = b""
        old: Job | None
        s = start
        while s < end:
            rec = unpack(buf, s)
            length: int = rec[0]
            key = rec[2]
            jid: int = key
            stamp: int = rec[3]
            state: int = rec[13]
            tlen: int = rec[14]
            if length < HS:  # pragma: no cover - frames are checksummed
                break
            if stamp > max_stamp:
                max_stamp = stamp
            if state > _LAST_JOB_STATE:  # (D_FLUSH...: the records of extensions are rare)
                self.live = live
                if state == D_SCHEDULE:
                    self._scheduled(seq, buf[s + HS : s + length])
                else:
                    self._flushed(seq, buf, s + HS, s + length)
                live = self.live
                max_id = max(max_id, jid)
                s += length
                continue
            if jid > max_id:
                max_id = jid
                old = None
                fresh = True
            else:
                old = jobs.get(key)
                fresh = False
            if old is None:
                if not state:
                    prior = None if fresh else dead.get(key)
                    dead[key] = (seq, prior[1] if prior else 0)
                elif tlen:
                    if not fresh and dead:
                        dead.pop(key, None)
                    b = s + HS
                    if tube is None or tlen != len(name) or not buf.startswith(name, b):
                        name = buf[b : b + tlen]
                        tube = tubes.get(name)
                        if tube is None:
                            tube = tubes[name] = Tube(name)
                    deadline: float = rec[4]
                    created: float = rec[5]
                    klen: int = rec[15]
                    job = jobs[key] = restored_job(
                        jid,
                        rec[1],
                        rec[6],
                        rec[7],
                        buf[b + tlen + klen : s + length],
                        tube,
                        _FROM_DISK[state],
                        created + offset,
                        deadline + offset if deadline else 0.0,
                        rec[8],
                        rec[9],
                        rec[10],
                        rec[11],
                        rec[12],
                    )
                    if klen:
                        key_bytes = buf[b + tlen : b + tlen + klen]
                        job = jobs[key] = restored_keyed_job(job, key_bytes)
                        self.keyed.append(job)
                    if state == D_BURIED:
                        order[key] = stamp
                    job.logged = both
                    live += length
                # else: the state of a job whose full record is gone (deleted): stale
            else:
                job = old
                anchor = job.logged >> 32
                if not state:
                    del jobs[key]
                    dead[key] = (seq, anchor)
                    live -= _full_size(job)
                else:
                    job.pri = rec[1]
                    job.delay = rec[6]
                    job.ttr = rec[7]
                    job.state = _FROM_DISK[state]
                    if state == D_DELAYED:
                        job.deadline = rec[4] + offset
                    elif state == D_BURIED:
                        order[key] = stamp
                    job.reserves = rec[8]
                    job.timeouts = rec[9]
                    job.releases = rec[10]
                    job.buries = rec[11]
                    job.kicks = rec[12]
                    if tlen and not buf.startswith(job.tube.name, s + HS, s + HS + tlen):
                        self._moved(job, buf[s + HS : s + HS + tlen])
                    if tlen and seq != anchor:
                        self.extra.setdefault(jid, set()).add(anchor)
                        anchor = seq
                    job.logged = anchor << 32 | seq
            s += length
        self.max_id = max_id
        self.max_stamp = max_stamp
        self.live = live

    def _flushed(self, seq: int, buf: bytes, start: int, end: int) -> None:
        """A D_FLUSH record: a tombstone for each id it lists."""
        jobs = self.jobs
        dead = self.dead
        for jid in _decode_ids(buf, start, end):
            job = jobs.pop(jid, None)
            if job is None:
                prior = dead.get(jid)
                dead[jid] = (seq, prior[1] if prior else 0)
            else:
                dead[jid] = (seq, job.logged >> 32)
                self.live -= _full_size(job)

    def _scheduled(self, seq: int, payload: bytes) -> None:
        """A D_SCHEDULE record (rare: its module is imported only when one is found)."""
        if self.schedules is None:
            from beanq import schedules

            self.schedules = schedules.Replay()
        self.schedules.apply(payload, seq)

    def _moved(self, job: Job, name: bytes) -> None:
        """A full record put an existing job in another tube (beanq-move)."""
        tube = self.tubes.get(name)
        if tube is None:
            tube = self.tubes[name] = Tube(name)
        job.tube = tube


# --- the binlog ------------------------------------------------------------------------------

_LOCKED: set[str] = set()  # directories locked by this process (fcntl locks do not see them)
_LOCKED_GUARD = threading.Lock()


def _allocate(fd: int, offset: int, length: int) -> None:
    """Reserve disk blocks, so that later writes into them cannot fail for lack of space."""
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        # Not supported here: the room is not reserved, but writes may still succeed.


def lock_dir(directory: str) -> tuple[int, str]:
    """Lock ``DIR/lock`` as beanstalkd does (an fcntl write lock on the whole file). The daemon
    takes it before it listens, so that a second one on the same directory never accepts a
    connection; ``Binlog.open`` takes it for callers that have not."""
    failure = BinlogError(f"failed to lock wal dir {directory}", 10)
    key = os.path.realpath(directory)
    with _LOCKED_GUARD:
        if key in _LOCKED:
            raise failure
        try:
            fd = os.open(
                os.path.join(directory, "lock"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            log.warning("open %s/lock: %s", directory, exc.strerror)
            raise failure from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            log.warning("fcntl: %s", exc.strerror)
            raise failure from exc
        _LOCKED.add(key)
    return fd, key


def _cut(fd: int, used: int) -> None:
    """Give back a former current segment's preallocated room past what it holds (replay
    trims it too, if this never happened)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, used)


# Upper bounds (seconds) of the fsync latency histogram's buckets (metrics), the last +Inf.
FSYNC_BOUNDS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BinlogMetrics(NamedTuple):
    """What --http's /metrics reports of the binlog beyond stats."""

    bytes_written: int  # by this process, all segments
    fsyncs: int  # fsync rounds that succeeded
    fsync_counts: list[int]  # per FSYNC_BOUNDS bucket, not cumulative, then +Inf
    fsync_seconds: float  # their total time
    segments: int
    segment_bytes: int  # preallocated size of every segment file


class Binlog:
    """Segments of job records in one directory: see the module docstring."""

    def __init__(
        self,
        directory: str,
        lock: tuple[int, str],
        segment_size: int,
        max_job_size: int,
        fsync: bool,
    ) -> None:
        self.directory = directory
        self._lock_fd, self._lock_key = lock
        self.max_size = segment_size  # as given, for stats (beanstalkd does not round it)
        self.size = max(segment_size, PAGE)
        self.max_job_size = max_job_size
        self.fsync = fsync  # False: sync() is never called, so do not wait for it to unlink
        self.headroom = min(64 << 10, self.size // 8)  # room kept for state changes
        self._lock = threading.Lock()  # the segment table, the current segment, the counters
        self._sync_lock = threading.Lock()  # one sync() at a time
        # How blocks are reserved and bytes written: attributes, not methods, so that tests can
        # simulate a full or failing disk on a compiled binlog too.
        self.allocate: Callable[[int, int, int], None] = _allocate
        self.pwrite: Callable[[int, list[bytes], int], int] = os.pwritev
        self._segments: dict[int, Segment] = {}  # by seq, oldest first
        self._cur: Segment | None = None
        self._next_seq = 1
        self._bury_order: dict[int, int] = {}  # buried job id -> stamp of its bury
        self._engine: Engine | None = None  # whose jobs compaction rewrites (set by replay)
        self._stamp = 1
        self._max_id = 0
        self._owed = 0  # room promised: tombstones of live jobs, records of accepted puts
        # Puts that can_put accepted, not written yet. The server calls can_put before each put
        # and puts at once, so the next put written is one of them, and the sizes they owe
        # add up whatever the order.
        self._promised = 0
        self._pending: list[Job] = []  # changes not written yet (a failed write)
        self._ops: list[tuple[int, int, list[Job]]] = []  # as Engine.ops, within _pending
        self._mark = 0  # highest id of a job put and deleted before it was written
        self._poisoned = False  # a failed write could not be cleared from the current segment
        self._trouble: dict[str, float] = {}  # problems going on -> when last logged
        self._no_roll_until = 0.0  # creating a segment failed: do not retry before this
        self._appended = 0  # bytes written by this process, all segments
        # Schedules (see the module docstring): segments from this one on are kept for them
        # (None: the engine never had a schedule); a snapshot is wanted (a segment was
        # started), the names its next parts cover (None: none under way), the segment of its
        # first part
        self._sched_floor: int | None = None
        self._snap_wanted = False
        self._snap_names: list[bytes] | None = None
        self._snap_seq = 0
        self._synced = 0  # ... of which fsynced
        # Former current segments (fd, bytes used), to cut back to what they hold, fsync and
        # close: off the loop's thread when there is a sync (cutting a big preallocation waits
        # for the disk: up to 23 ms seen while the fsync thread wrote the same file back)
        self._rolled: list[tuple[int, int]] = []
        self._dir_dirty = False  # a segment was created since the last directory fsync
        self._garbage: list[Segment] = []  # unpinned segments, waiting to be unlinked
        self._old_used = 0  # bytes in non-current segments that are not garbage
        self._live = 0  # bytes of live data: full records plus separate latest records
        self._evac: tuple[int, list[int]] | None = None  # (seq, ids left to rewrite)
        self.records_written = 0
        self.records_migrated = 0
        self._fsyncs = 0
        self._fsync_counts = [0] * (len(FSYNC_BOUNDS) + 1)
        self._fsync_seconds = 0.0
        self._closed = False

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str,
        *,
        segment_size: int = 10 << 20,
        max_job_size: int = 65535,
        fsync: bool = True,
        lock: tuple[int, str] | None = None,
    ) -> Binlog:
        """Lock ``directory`` (which must exist) unless ``lock`` is its lock already
        (``lock_dir``). ``fsync=False`` (``-F``) tells the binlog
        that ``sync`` will not be called, so superseded segments are unlinked without
        waiting for one. Call ``replay`` next, even for an empty directory."""
        if lock is None:
            lock = lock_dir(directory)
        return cls(directory, lock, segment_size, max_job_size, fsync)

    def replay(self, engine: Engine, now: float, wall: float) -> None:
        """Read every segment, restore the jobs into ``engine``, and start a new segment."""
        started = time.perf_counter()
        ctx = _Replay(now, wall)
        files = self._list_files()
        collecting = gc.isenabled()
        gc.disable()  # millions of new objects, none of them garbage: do not scan them
        try:
            for seq, path in files:
                self._read_file(ctx, seq, path)
            self._next_seq = max((seq for seq, _ in files), default=0) + 1
            self._restore(ctx, engine, now)
            self._adopt(ctx)
        finally:
            # The replayed jobs are long-lived: keep the collector from scanning them all
            # again (a full pass over millions of objects) the moment it is back on.
            gc.freeze()
            if collecting:
                gc.enable()
        self._engine = engine  # (not engine.jobs: the engine may replace that table)
        try:
            self._start(now, wall)
        except BinlogError:
            self.close()  # let go of the lock
            raise
        if ctx.jobs or len(files) > 1:
            log.info(
                "binlog: %d jobs from %d files replayed in %.3fs",
                len(ctx.jobs),
                len(files),
                time.perf_counter() - started,
            )

    def _list_files(self) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(self.directory):
            match = NAME_RE.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def _read_file(self, ctx: _Replay, seq: int, path: str) -> None:
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except OSError as exc:
            log.warning("binlog: cannot read %s (%s); left alone", path, exc.strerror)
            return
        if binlog_v7.version(buf) is not None:
            recs = binlog_v7.translate(
                buf, path, ctx.max_stamp + 1, REC, REC_MAGIC, self.max_job_size
            )
            ctx.apply(seq, recs.data, 0, len(recs.data))
            self._segments[seq] = Segment(seq, path, len(buf), foreign=True)
            return
        scan = _scan(buf, path)
        for data, start, end in scan.ranges:
            ctx.apply(seq, data, start, end)
        ctx.max_id = max(ctx.max_id, scan.max_id)
        ctx.max_stamp = max(ctx.max_stamp, scan.next_stamp - 1)
        seg = Segment(seq, path, len(buf))
        if scan.zero_tail and scan.end < len(buf):
            seg.used = seg.cap = self._trim(path, scan.end, len(buf))
        self._segments[seq] = seg

    @staticmethod
    def _trim(path: str, end: int, size: int) -> int:
        """Give back the unused preallocated tail of a former current segment."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return size
        try:
            os.ftruncate(fd, end)
            return end
        except OSError:
            return size
        finally:
            os.close(fd)

    def _restore(self, ctx: _Replay, engine: Engine, now: float) -> None:
        """Hand the jobs to the engine: one ``restore`` per tube, buried ones in bury order."""
        groups: dict[Tube, dict[int, Job]] = {t: {} for t in ctx.tubes.values()}
        is_buried = State.BURIED
        buried = [j for j in ctx.jobs.values() if j.state is is_buried] if ctx.order else []
        if len(groups) == 1 and not buried:
            (only,) = groups
            groups[only] = ctx.jobs  # the common case: nothing to sort out
        else:
            for jid, job in ctx.jobs.items():
                if job.state is not is_buried:
                    groups[job.tube][jid] = job
        order = ctx.order
        buried.sort(key=lambda j: order[j.id])
        for job in buried:
            groups[job.tube][job.id] = job
        for tube, jobs in groups.items():
            if jobs:
                engine.restore(tube.name, jobs, now)
        engine.next_id = max(engine.next_id, ctx.max_id + 1)
        if ctx.keyed:
            engine.restore_keys(ctx.keyed)
        if ctx.schedules is not None:
            engine.schedule_book().restore(engine, list(ctx.schedules.records.values()))
        self._bury_order = {j.id: order[j.id] for j in buried}

    def _adopt(self, ctx: _Replay) -> None:
        """Take over the replayed bookkeeping: references, pins, owed room."""
        jobs = ctx.jobs
        self._max_id = ctx.max_id
        self._stamp = ctx.max_stamp + 1
        segments = self._segments
        split = 0
        for packed, count in Counter([job.logged for job in jobs.values()]).items():
            anchor, latest = packed >> 32, packed & LOW
            segments[anchor].refs += count
            segments[latest].refs += count
            if anchor != latest:
                split += count
        self._live = ctx.live + HS * split
        for jid, (seq, anchor) in ctx.dead.items():
            if anchor:
                self._pin(seq, anchor)
            for other in ctx.extra.get(jid, ()):
                self._pin(seq, other)
        for jid, others in ctx.extra.items():
            job = jobs.get(jid)
            if job is not None:
                for other in others:
                    self._pin(job.logged >> 32, other)
        self._owed = DEL * len(jobs)
        if ctx.schedules is not None:
            self._sched_floor = ctx.schedules.complete or ctx.schedules.first
        for seg in segments.values():
            self._old_used += seg.used
        for seg in list(segments.values()):
            self._check_dead(seg, dead_at=0)

    def _start(self, now: float, wall: float) -> None:
        """Make every replayed byte durable, start the current segment, drop garbage."""
        for seg in self._segments.values():
            self._fsync_path(seg.path)
        try:
            self._cur = self._create(self._owed + self.headroom)
        except OSError as exc:
            raise BinlogError(f"cannot create a binlog file in {self.directory}: {exc}", 1) from exc
        self._fsync_dir()
        self._dir_dirty = False
        self._collect(self._appended)

    @staticmethod
    def _fsync_path(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            log.warning("binlog: fsync %s: %s", path, exc.strerror)
        finally:
            os.close(fd)

    # --- space -----------------------------------------------------------------------------

    def can_put(self, body_size: int) -> bool:
        """Promise room for a new job's full record and its tombstone, or refuse.

        When the current segment has the room already (the common case), no lock: this
        reads and changes only what ``sync`` never touches (the owed room, the promises, the
        current segment's size and fill), all of it owned by the thread that calls
        ``write``. Growing the segment or starting the next one takes the lock."""
        need = PUT_ROOM + body_size
        cur = self._cur
        if cur is None or cur.used + self._owed + need + self.headroom > cur.cap:
            with self._lock:
                cur = self._current()
                if cur.used + need > self.size and self._roll(need):
                    cur = self._current()
                want = cur.used + self._owed + need + self.headroom
                if want > cur.cap and not self._grow(want):
                    return False
        self._owed += need
        self._promised += 1
        return True

    def _current(self) -> Segment:
        cur = self._cur
        if cur is None:
            raise RuntimeError("binlog: replay() was not called")
        return cur

    def _grow(self, need: int) -> bool:
        """Preallocate the current segment up to ``need`` bytes (or start a new one)."""
        cur = self._current()
        target = max(need, cur.cap + min(EXTEND_STEP, self.size // 4))
        target = -(-target // PAGE) * PAGE
        try:
            self.allocate(cur.fd, cur.cap, target - cur.cap)
        except OSError as exc:
            self._complain("space", "binlog: cannot preallocate %s: %s", cur.path, exc)
            return False
        cur.cap = target
        self._relieved("space", "binlog: disk space is available again")
        return True

    def _create(self, room: int) -> Segment:
        """A new current segment, preallocated with ``room`` bytes after its header."""
        seq = self._next_seq
        path = os.path.join(self.directory, f"binlog.{seq}")
        cap = max(self.size, -(-(SEG_HEADER.size + room) // PAGE) * PAGE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self.allocate(fd, 0, cap)
            header = _header(self._max_id, self._stamp)
            if self.pwrite(fd, [header], 0) != len(header):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._next_seq = seq + 1
        seg = Segment(seq, path, len(header))
        seg.cap = cap
        seg.fd = fd
        self._segments[seq] = seg
        self._appended += len(header)
        self._dir_dirty = True
        self._snap_wanted = True  # (if there are schedules)
        return seg

    def _roll(self, size: int) -> bool:
        """Start a new current segment with room for ``size`` bytes plus what is owed."""
        old = self._current()
        if time.monotonic() < self._no_roll_until:
            return False
        try:
            new = self._create(size + FS + self._owed + self.headroom)
        except OSError as exc:
            self._no_roll_until = time.monotonic() + ROLL_RETRY
            self._complain("space", "binlog: cannot create a new binlog file: %s", exc)
            return False
        old.cap = old.used
        self._rolled.append((old.fd, old.used))  # by the next sync (or write, without fsync)
        old.fd = -1
        self._poisoned = False
        self._relieved("space", "binlog: disk space is available again")
        self._cur = new
        self._old_used += old.used
        self._check_dead(old)
        return True

    # --- writing ---------------------------------------------------------------------------

    def write(
        self,
        jobs: list[Job],
        now: float,
        wall: float,
        ops: list[tuple[int, int, list[Job]]] | None = None,
    ) -> None:
        """Append one record per changed job (its state now), and the records of ``ops``
        (``Engine.ops``: flushes and moves, each after the changes it says came before it);
        then compact a little."""
        with self._lock:
            if ops:
                base = len(self._pending)
                self._ops.extend([(base + at, kind, done) for at, kind, done in ops])
            if jobs:
                self._pending.extend(jobs)
            before = self._appended
            if self._ops:
                self._flush_ops(wall - now)
            elif self._pending:
                self._flush(wall - now)
            if not self._pending and not self._ops:
                wrote = self._appended - before
                self._compact(wall - now, COMPACT_MIN + 2 * wrote)
                if self._snap_wanted:
                    self._snapshot_part(SNAP_MIN + wrote)
        if not self.fsync:
            self._close_rolled()
            self._collect(self._appended)

    def _close_rolled(self) -> None:
        """Without fsync, former current segments are closed at once (unless a sync that
        the server called anyway is using them)."""
        if self._rolled and self._sync_lock.acquire(blocking=False):
            try:
                with self._lock:
                    rolled, self._rolled = self._rolled, []
                for fd, used in rolled:
                    _cut(fd, used)
                    os.close(fd)
            finally:
                self._sync_lock.release()

    @property
    def unsynced(self) -> bool:
        """Bytes were written since the last ``sync`` began."""
        return self._appended != self._synced

    @property
    def stalled(self) -> bool:
        """Some changes could not be written yet (disk full or failing); ``sync`` does not
        cover them. They are retried on every ``write``."""
        return bool(self._pending or self._ops)

    # --- the extensions' records -----------------------------------------------------------

    def _flush_ops(self, offset: float) -> None:
        """Write the pending changes and the operations in the order they happened. An
        operation waits behind changes that could not be written, and holds back the changes
        after it: a move's records must follow its jobs' puts, and a flush's come after the
        records of the jobs it deleted."""
        while self._ops:
            at, kind, jobs = self._ops[0]
            rest = self._pending[at:]
            self._pending = self._pending[:at]
            if self._pending:
                self._flush(offset)
            held = len(self._pending)
            done = not held and self._write_op(kind, jobs, offset)
            if not done:
                self._ops = [(a - at + held, k, j) for a, k, j in self._ops]
                self._pending += rest
                return
            del self._ops[0]
            self._ops = [(a - at, k, j) for a, k, j in self._ops]
            self._pending = rest
        if self._pending:
            self._flush(offset)

    def _write_op(self, kind: int, jobs: list[Job], offset: float) -> bool:
        try:
            if kind == OP_SCHEDULE:
                return self._write_schedule(jobs)
            if kind == OP_FLUSH:
                return self._write_flush(jobs)
            return self._write_move(jobs, offset)
        except OSError as exc:
            self._complain("write", "binlog: write failed, changes kept for retry: %s", exc)
            return False

    def _write_flush(self, jobs: list[Job]) -> bool:
        """One record for every job of a flush: a tombstone each, in the room they owed."""
        logged = [job for job in jobs if job.logged]  # (the others never reached the disk)
        if not logged:
            return True
        logged.sort(key=lambda job: job.id)
        parts = _flush_record([job.id for job in logged], self._stamp)
        size = len(parts[0]) + len(parts[1])
        batch = _Batch()
        self._place(batch, size, owed=True, extra=0)
        self._stamp += 1
        batch.parts.extend(parts)
        batch.size = FRAME.size + size
        batch.effects.extend([(_TOMB, job.id, job, 0, 0) for job in logged])
        batch.released = DEL * len(logged)
        self._commit(batch)
        self.records_written += 1 - len(logged)  # (one record, however many tombstones)
        return True

    def _write_schedule(self, payloads: list[Any]) -> bool:
        """Schedules' records (beanq.schedules), in one frame unless a segment fills up.
        Without room, what is left waits (``payloads`` keeps only that)."""
        if self._sched_floor is None:  # the first ever: from here on, segments are kept
            self._sched_floor = self._current().seq
        batch = _Batch()
        written = 0
        for i, data in enumerate(payloads):
            size = HS + len(data)
            if not self._place(batch, size, owed=False, extra=0):
                self._commit(batch)
                self.records_written += written
                payloads[:] = payloads[i:]
                return False
            if not batch.parts:
                batch.size = FS
            batch.parts.extend(_schedule_record(data, self._next_stamp()))
            batch.size += size
            written += 1
        self._commit(batch)
        self.records_written += written
        return True

    def _snapshot_part(self, budget: int) -> None:
        """Write the next part of the schedules' snapshot (about ``budget`` bytes), starting
        one if none is under way; once it is complete, segments older than its first part
        are no longer kept for schedules. A part that cannot be written starts the snapshot
        over (its parts so far still count: replay takes their union, see
        ``schedules.Replay``)."""
        engine = self._engine
        book = engine.schedules if engine is not None else None
        if book is None:
            self._snap_wanted = False
            return
        from beanq import schedules

        names = self._snap_names
        if names is None:
            names = self._snap_names = list(book.by_name)
        data = schedules.snapshot_part(book, names, min(budget, self.size // 4))
        batch = _Batch()
        seq = 0
        try:
            placed = self._place(batch, HS + len(data), owed=False, extra=0)
            if placed:
                seq = self._current().seq
                batch.parts.extend(_schedule_record(data, self._next_stamp()))
                batch.size = FS + HS + len(data)
                self._commit(batch)
        except OSError as exc:
            self._complain("write", "binlog: write failed, changes kept for retry: %s", exc)
            placed = False
        if not placed:
            self._snap_names = None  # (over again, at the next write)
            return
        self.records_written += 1
        if not self._snap_seq:
            self._snap_seq = seq
        if not names:
            self._snapshot_done()

    def _snapshot_done(self) -> None:
        """A snapshot is complete: its first part's segment is the new floor."""
        floor = self._snap_seq
        self._snap_names = None
        self._snap_seq = 0
        # (if segments rolled meanwhile, the floor stays behind them until the next roll's
        # snapshot: snapshotting again at once doubled the snapshots when segments roll fast)
        self._snap_wanted = False
        old = self._sched_floor
        self._sched_floor = floor
        for seg in list(self._segments.values()):
            if seg.seq >= floor:
                break
            if old is None or seg.seq >= old:
                self._check_dead(seg)

    def _write_move(self, jobs: list[Job], offset: float) -> bool:
        """A full record of each moved job (its new tube, and its state now), as compaction
        rewrites them; buried jobs get new stamps: the end of their new tube's buried queue.
        Without room, what is left waits (``jobs`` keeps only that)."""
        batch = _Batch()
        migrated = self.records_migrated  # (moved, not migrated: put back after)
        buried: list[tuple[int, int]] = []
        try:
            for i, job in enumerate(jobs):
                if job.state is State.DELETED or not job.logged:
                    continue  # (its tombstone, or its put, says all)
                size = _full_size(job)
                if not self._place(batch, size, owed=False, extra=0):
                    self._commit(batch)
                    self._bury_order.update(buried)
                    jobs[:] = jobs[i:]
                    return False
                stamp = self._next_stamp()
                parts: list[bytes] = []
                _record(parts, job, stamp, offset)
                batch.add(parts, (_REWRITE, job.id, job, stamp, size), 0)
                if job.state is State.BURIED:
                    buried.append((job.id, stamp))
            self._commit(batch)
            self._bury_order.update(buried)
        finally:
            self.records_migrated = migrated
        return True

    def _flush(self, offset: float) -> None:
        """Write a record for each pending job (its state now), in one frame unless a
        segment fills up. The server's hot path: room is checked here, and ``_place`` called
        only when a record may not fit as things stand (it then writes the frame so far,
        grows or rolls)."""
        jobs = self._pending
        if _repeats(jobs):
            jobs = list(dict.fromkeys(reversed(jobs)))  # one record each, where last listed
            jobs.reverse()
        self._pending = []
        batch = _Batch()
        parts = batch.parts
        effects = batch.effects
        puts = batch.puts
        buried = State.BURIED
        left: list[Job] = []
        limit = self.size
        # The batch's end and room, kept in locals while records fit, and handed to (and
        # taken back from) the batch and self around each call to _place.
        cur = self._current()
        base = cur.used
        cap = -1 if self._poisoned else cur.cap  # poisoned: every record goes to _place
        pos = base + FS  # where the next record would end up
        released = 0
        stamp = self._stamp
        reached = 0  # jobs[reached:] are not placed yet (for the failure path)
        try:
            for i, job in enumerate(jobs):
                jid = job.id
                if job.state is State.DELETED:
                    if not job.logged:
                        self._collapse(job)  # nothing on disk: nothing to write
                        continue
                    kind = _TOMB
                    size = HS
                    owed = True
                    extra = 0
                elif not job.logged:
                    blen = len(job.body) if not isinstance(job, KeyedJob) else _payload(job)
                    size = HS + len(job.tube.name) + blen
                    owed = self._promised > 0  # room that can_put promised
                    kind = _PUT_RESERVED if owed else _PUT
                    extra = 0 if owed else DEL
                else:
                    kind = _UPDATE  # a short record
                    size = HS
                    owed = False
                    extra = 0
                end = pos + size
                if end > limit or (end if owed else end + self._owed - released + extra) > cap:
                    batch.size = pos - base if parts else 0
                    batch.released = released
                    self._stamp = stamp
                    reached = i  # (_place may write, and fail)
                    placed = self._place(batch, size, owed=owed, extra=extra)
                    cur = self._current()
                    base = cur.used
                    cap = -1 if self._poisoned else cur.cap
                    pos = base + (batch.size or FS)
                    released = batch.released
                    if not placed:
                        left.append(job)
                        continue
                    end = pos + size
                if kind == _TOMB:
                    _tombstone(parts, jid, stamp)
                    effects.append((_TOMB, jid, job, 0, HS))
                    released += DEL
                else:
                    _record(parts, job, stamp, offset, full=kind != _UPDATE)
                    if kind == _PUT_RESERVED and job.state is not buried:
                        puts.append(job)
                    else:
                        effects.append((kind, jid, job, stamp, size))
                    if owed:  # the promise is kept: its room is used up (but a tombstone's)
                        released += PUT_ROOM - DEL + blen
                        self._promised -= 1
                stamp += 1
                pos = end
            reached = len(jobs)
            batch.size = pos - base if parts else 0
            batch.released = released
            self._stamp = stamp
            if self._mark > self._max_id:
                self._add_mark(batch, self._mark)
            self._commit(batch)
        except OSError as exc:
            # Not written: the jobs of the failed frame, those without room, those not
            # reached. The puts among them keep their promises.
            unwritten = {id(left_job) for left_job in left}
            for kind, _, changed, _, _ in effects:
                unwritten.add(id(changed))
                if kind == _PUT_RESERVED:
                    self._promised += 1
            for put in puts:
                unwritten.add(id(put))
                self._promised += 1
            self._pending = [j for j in jobs[:reached] if id(j) in unwritten] + jobs[reached:]
            self._complain("write", "binlog: write failed, changes kept for retry: %s", exc)
            return
        self._pending = left
        if left:
            self._complain("room", "binlog: no room for %d changes; kept for retry", len(left))
        elif self._trouble:
            self._relieved("room", "binlog: room is back; every change is written")
            self._relieved("write", "binlog: writing works again; every change is written")

    def _collapse(self, job: Job) -> None:
        """A job put and deleted before its record was written: release its promise, and
        remember its id (the highest id handed out must reach the disk)."""
        if self._promised:
            self._promised -= 1
            self._owed -= PUT_ROOM + _payload(job)
        self._mark = max(self._mark, job.id)

    def _add_mark(self, batch: _Batch, jid: int) -> None:
        """A tombstone for the highest id handed out, so that ids are never reused."""
        if self._place(batch, HS, owed=False, extra=0):
            tomb: list[bytes] = []
            _tombstone(tomb, jid, self._next_stamp())
            batch.add(tomb, (_MARK, jid, None, 0, HS), 0)

    def _next_stamp(self) -> int:
        stamp = self._stamp
        self._stamp = stamp + 1
        return stamp

    def _place(self, batch: _Batch, size: int, *, owed: bool, extra: int) -> bool:
        """Make room for a record of ``size`` bytes at the end of ``batch``: in the current
        segment, or in a new one when the current one is full. Owed records always find room;
        others must leave the owed room (plus ``extra``) free, and may fail."""
        cur = self._current()
        pos = cur.used + (batch.size or FS)
        fresh = cur.used == SEG_HEADER.size and not batch.parts
        need = pos + size + (0 if owed else self._owed - batch.released + extra)
        if self._poisoned or (not fresh and (pos + size > self.size or need > cur.cap)):
            # full (or its room is): start the next segment, sized for what is owed
            self._commit(batch)
            if self._roll(size + extra):
                cur = self._current()
            pos = cur.used + FS
            need = pos + size + (0 if owed else self._owed + extra)
        return owed or need <= cur.cap or self._grow(need)

    def _commit(self, batch: _Batch) -> None:
        """Write the batch as one frame, then apply its effects. Raises OSError."""
        parts = batch.parts
        if not parts:
            return
        cur = self._current()
        body = b"".join(parts)
        head = _pack_frame(FRAME_MAGIC, len(body), _crc32(body))
        total = FS + len(body)
        try:
            written = self.pwrite(cur.fd, [head, body], cur.used)
            if written != total:
                raise OSError(errno.ENOSPC, f"short write ({written} of {total} bytes)")
        except OSError:
            self._erase(cur, total)
            raise
        cur.used += total
        self._appended += total
        self.records_written += len(batch.effects) + len(batch.puts)
        self._owed -= batch.released
        self._apply(cur, batch.effects, batch.puts)
        parts.clear()
        batch.effects.clear()
        batch.puts.clear()
        batch.size = batch.released = 0

    def _erase(self, cur: Segment, size: int) -> None:
        """After a failed write, zero what may have reached the file, so that a replay
        cannot find records that were never acknowledged as written."""
        try:
            if self.pwrite(cur.fd, [bytes(size)], cur.used) == size:
                return
        except OSError as exc:
            log.error("binlog: cannot clear a failed write in %s: %s", cur.path, exc)
        self._poisoned = True  # records may lie past `used`: write in a new segment next

    def _apply(self, cur: Segment, effects: list[Effect], puts: list[Job]) -> None:
        """Bookkeeping for records now written in the current segment ``cur``: where each
        job's records are, the references and pins of segments (an old segment that loses its
        last reference may be garbage), live bytes, owed room, bury order. The plain puts
        first (each touches only its own job and ``cur``), then the effects in order. Its
        loops run once per record, so everything is done inline."""
        seq = cur.seq
        both = seq << 32 | seq
        bury_order = self._bury_order
        buried = State.BURIED
        max_id = self._max_id
        live = self._live
        owed = 0
        refs = 2 * len(puts)  # to add to cur.refs (nothing reads them meanwhile)
        for put in puts:
            put.logged = both
            live += _full_size(put)
            if put.id > max_id:
                max_id = put.id
        for kind, jid, job, stamp, size in effects:
            if jid > max_id:
                max_id = jid
            if job is None:  # _MARK: only the id
                continue
            if kind <= _PUT_RESERVED:  # _PUT or _PUT_RESERVED
                job.logged = both
                refs += 2
                live += size
                if kind == _PUT:
                    owed += DEL
            elif kind == _UPDATE:
                packed = job.logged
                latest = packed & LOW
                if latest != seq:  # (else nothing moves: its records stay where they are)
                    anchor = packed >> 32
                    job.logged = anchor << 32 | seq
                    refs += 1
                    live += HS * ((anchor != seq) - (anchor != latest))
                    self._unref(latest)
            else:  # _TOMB or _REWRITE: the job's records so far no longer count
                packed = job.logged
                anchor, latest = packed >> 32, packed & LOW
                if kind == _TOMB:
                    job.logged = 0
                    live -= _full_size(job) + HS * (anchor != latest)
                    if bury_order:
                        bury_order.pop(jid, None)
                else:
                    job.logged = both
                    refs += 2
                    live -= HS * (anchor != latest)
                    self.records_migrated += 1
                if anchor == seq:
                    refs -= 1
                else:
                    self._pin(seq, anchor)
                    self._unref(anchor)
                if latest == seq:
                    refs -= 1
                else:
                    self._unref(latest)
                continue
            # a put or a change: remember when a buried job was buried (its place in the
            # buried queue)
            if job.state is buried:
                bury_order[jid] = stamp
            elif bury_order:
                bury_order.pop(jid, None)
        cur.refs += refs
        self._max_id = max_id
        self._live = live
        self._owed += owed

    # --- segment lifetimes -----------------------------------------------------------------

    def _pin(self, newer: int, older: int) -> None:
        """Segment ``newer`` must outlive segment ``older`` (if that still exists)."""
        if older >= newer:
            return
        old = self._segments.get(older)
        new = self._segments.get(newer)
        if old is None or new is None:
            return
        old.dependents[newer] = old.dependents.get(newer, 0) + 1
        new.pins += 1

    def _unref(self, seq: int) -> None:
        """A record in segment ``seq`` no longer counts; the segment may now be garbage."""
        seg = self._segments[seq]
        seg.refs -= 1
        if not seg.refs:
            self._check_dead(seg)

    def _check_dead(self, seg: Segment, dead_at: int | None = None) -> None:
        if seg.refs or seg.pins or seg is self._cur or seg.dead_at is not None:
            return
        floor = self._sched_floor
        if floor is not None and seg.seq >= floor:
            return  # (kept for the schedules' records since their last snapshot)
        seg.dead_at = self._appended if dead_at is None else dead_at
        self._garbage.append(seg)
        self._old_used -= seg.used
        if self._evac is not None and self._evac[0] == seg.seq:
            self._evac = None

    def _collect(self, synced: int) -> None:
        """Unlink garbage superseded by bytes up to ``synced``, oldest first, with a
        directory fsync before the pins it held on newer segments are released."""
        while True:
            with self._lock:
                victims = [
                    s for s in self._garbage if s.dead_at is not None and s.dead_at <= synced
                ]
                if not victims:
                    return
                keep = [s for s in self._garbage if s not in victims]
                self._garbage = keep
                for seg in victims:
                    del self._segments[seg.seq]
            for seg in victims:
                try:
                    os.unlink(seg.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error("binlog: cannot remove %s: %s", seg.path, exc.strerror)
            if self.fsync and not self._fsync_dir():
                return  # the unlinks may not be durable: keep the newer segments pinned
            with self._lock:
                for seg in victims:
                    for newer, count in seg.dependents.items():
                        other = self._segments.get(newer)
                        if other is not None:
                            other.pins -= count
                            self._check_dead(other)

    def _fsync_dir(self) -> bool:
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            log.error("binlog: cannot open %s: %s", self.directory, exc.strerror)
            return False
        try:
            os.fsync(fd)
        except OSError as exc:
            log.error("binlog: fsync %s: %s", self.directory, exc.strerror)
            return False
        finally:
            os.close(fd)
        return True

    # --- compaction ------------------------------------------------------------------------

    def _compact(self, offset: float, budget: int) -> None:
        """Rewrite live jobs out of the oldest segments while the old segments that only
        compaction can free hold more than twice the live data, within ``budget`` bytes.
        As in ``_flush``, room is checked inline and ``_place`` called only when a record
        may not fit as things stand."""
        if self._old_used <= 2 * self._live or self._engine is None:
            return  # (the usual case; and replay() sets the engine)
        batch = _Batch()
        parts = batch.parts
        effects = batch.effects
        bury_order = self._bury_order
        jobs = self._engine.jobs
        limit = self.size
        headroom = self.headroom
        try:
            while budget > 0 and self._old_used > 2 * self._live:  # (a quick upper bound)
                budget -= 1024  # planning costs too, so that this always ends
                target = self._evacuee()
                if target is None:
                    break
                seq, ids = target
                cur = self._current()
                base = cur.used
                cap = -1 if self._poisoned else cur.cap  # poisoned: every record to _place
                pos = base + FS  # where the next record would end up
                room = self._owed + headroom  # to be left free after the records
                while ids and budget > 0:
                    jid = ids.pop()
                    budget -= 16  # looking costs too, so that this always ends
                    job = jobs.get(jid)
                    if job is None or seq not in (job.logged >> 32, job.logged & LOW):
                        continue
                    size = _full_size(job)
                    end = pos + size
                    if end > limit or end + room > cap:
                        batch.size = pos - base if parts else 0
                        placed = self._place(batch, size, owed=False, extra=headroom)
                        cur = self._current()
                        base = cur.used
                        cap = -1 if self._poisoned else cur.cap
                        pos = base + (batch.size or FS)
                        room = self._owed + headroom
                        if not placed:
                            ids.append(jid)
                            budget = 0
                            break
                        end = pos + size
                    stamp = bury_order.get(jid) or self._next_stamp()
                    _record(parts, job, stamp, offset)
                    effects.append((_REWRITE, jid, job, stamp, size))
                    pos = end
                    budget -= size
                batch.size = pos - base if parts else 0
                self._commit(batch)
                if not ids:
                    self._finish_evacuation(seq)
        except OSError as exc:
            self._complain("write", "binlog: compaction write failed: %s", exc)

    def _evacuee(self) -> tuple[int, list[int]] | None:
        """The segment to rewrite live jobs out of (the oldest one holding any), and the
        ids to look at; None when compaction has nothing worth doing."""
        if self._evac is not None:
            return self._evac
        stuck, target = self._plan()
        if stuck <= 2 * self._live or target is None:
            return None
        self._evac = (target.seq, self._ids_in(target))
        return self._evac

    def _plan(self) -> tuple[int, Segment | None]:
        """Bytes in old segments that will not go without compaction, and the oldest old
        segment with live records. A segment goes by itself if it is garbage, or if only
        its pins hold it and they all come from segments that go by themselves (the next
        sync unlinks those)."""
        released: dict[int, int] = {}
        stuck = 0
        target: Segment | None = None
        for seg in self._segments.values():
            if seg is self._cur:
                break
            if seg.dead_at is not None or (not seg.refs and released.get(seg.seq, 0) >= seg.pins):
                for newer, count in seg.dependents.items():
                    released[newer] = released.get(newer, 0) + count
                continue
            stuck += seg.used
            if target is None and seg.refs:
                target = seg
        return stuck, target

    def _finish_evacuation(self, seq: int) -> None:
        """All ids found in the file were looked at; if jobs still count the segment (its
        records could not all be read back), find them the slow way."""
        seg = self._segments.get(seq)
        self._evac = None
        if seg is not None and seg.dead_at is None and seg.refs:
            ids = self._ids_by_scan(seq)
            if ids:
                self._evac = (seq, ids)

    def _ids_by_scan(self, seq: int) -> list[int]:
        """Ids of the live jobs with a record in segment ``seq``, the slow way."""
        jobs = self._engine.jobs if self._engine is not None else {}
        return [j.id for j in jobs.values() if seq in (j.logged >> 32, j.logged & LOW)]

    def _ids_in(self, seg: Segment) -> list[int]:
        """Ids of the jobs with records in ``seg`` (read back from the file), last first."""
        try:
            with open(seg.path, "rb") as f:
                buf = f.read()
        except OSError as exc:
            log.error("binlog: cannot read %s: %s", seg.path, exc.strerror)
            return self._ids_by_scan(seg.seq)
        ranges: list[tuple[bytes, int, int]]
        if seg.foreign:
            recs = binlog_v7.translate(buf, seg.path, 1, REC, REC_MAGIC, self.max_job_size)
            ranges = [(recs.data, 0, len(recs.data))]
        else:
            ranges = _scan(buf, seg.path, report=False).ranges  # (reported at replay)
        ids: dict[int, None] = {}
        length_and_id_at = REC_LENGTH_ID.unpack_from
        for data, start, end in ranges:
            s = start
            while s < end:
                length, jid = length_and_id_at(data, s)
                ids[jid] = None
                s += length if length > HS else HS
        out = list(ids)
        out.reverse()
        return out

    # --- syncing ---------------------------------------------------------------------------

    def sync(self) -> bool:
        """fsync what was written (and the directory if a segment was created), then unlink
        the segments that this made obsolete. Safe to call from a worker thread while the
        event loop calls ``write``. False when an fsync failed: what was written before the
        call may not be on disk, and replies that wait for it must go on waiting."""
        with self._sync_lock:
            with self._lock:
                if self._closed:
                    return False
                position = self._appended
                rolled = self._rolled
                self._rolled = []
                fd = self._current().fd
                dir_dirty = self._dir_dirty
                self._dir_dirty = False
            started = time.perf_counter()
            try:
                for old, used in rolled:
                    _cut(old, used)
                    os.fsync(old)
                os.fsync(fd)
            except OSError as exc:
                log.error("binlog: fsync failed: %s", exc.strerror)
                with self._lock:
                    self._rolled = rolled + self._rolled
                    self._dir_dirty = self._dir_dirty or dir_dirty
                return False
            for old, _ in rolled:
                os.close(old)
            if dir_dirty and not self._fsync_dir():
                with self._lock:
                    self._dir_dirty = True
                return False
            took = time.perf_counter() - started
            with self._lock:
                self._synced = max(self._synced, position)
                self._fsyncs += 1
                self._fsync_counts[bisect_left(FSYNC_BOUNDS, took)] += 1
                self._fsync_seconds += took
            self._collect(position)
            return True

    # --- reporting -------------------------------------------------------------------------

    def stats(self) -> BinlogStats:
        with self._lock:
            cur = self._current()
            return BinlogStats(
                oldest_index=min(self._segments, default=cur.seq),
                current_index=cur.seq,
                records_migrated=self.records_migrated,
                records_written=self.records_written,
                max_size=self.max_size,
            )

    def metrics(self) -> BinlogMetrics:
        with self._lock:
            return BinlogMetrics(
                bytes_written=self._appended,
                fsyncs=self._fsyncs,
                fsync_counts=list(self._fsync_counts),
                fsync_seconds=self._fsync_seconds,
                segments=len(self._segments),
                segment_bytes=sum(seg.cap for seg in self._segments.values()),
            )

    def job_file(self, job: Job) -> int:
        """The segment holding the job's latest record (0: not written yet)."""
        return job.logged & LOW

    def _complain(self, kind: str, fmt: str, *args: object) -> None:
        """Log a problem of some kind: at once, then at most every RETRY_LOG_INTERVAL while
        it lasts (``_relieved`` ends it)."""
        now = time.monotonic()
        if now - self._trouble.get(kind, -RETRY_LOG_INTERVAL) >= RETRY_LOG_INTERVAL:
            self._trouble[kind] = now
            log.error(fmt, *args)

    def _relieved(self, kind: str, message: str) -> None:
        if self._trouble.pop(kind, None) is not None:
            log.warning(message)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            cur = self._cur
            if cur is not None and cur.fd >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(cur.fd, cur.used)
                os.close(cur.fd)
                cur.fd = -1
            for fd, used in self._rolled:
                _cut(fd, used)
                os.close(fd)
            self._rolled = []
            if self._pending or self._ops:
                log.error(
                    "binlog: %d changes could not be written before exit",
                    len(self._pending) + len(self._ops),
                )
            os.close(self._lock_fd)
            with _LOCKED_GUARD:
                _LOCKED.discard(self._lock_key)
