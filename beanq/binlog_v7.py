"""Reading binlog files written by beanstalkd (format versions 7 and 5), for migration.

beanstalkd 1.12 writes ``binlog.N`` files made of an ``int`` version and then records in the
machine's native layout (little-endian on every platform it is packaged for):

* ``int namelen``; then, if ``namelen > 0``, the tube name (a *full* record);
* ``struct Jobrec`` (80 bytes in version 7: id, pri, delay, ttr, body_size, created_at,
  deadline_at, five counters, state; times in nanoseconds of the wall clock);
* for a full record, the body, ``body_size`` bytes including the trailing ``\\r\\n``.

A record with ``namelen == 0`` is a *short* record: the job's new state only. State ``Invalid``
means the job was deleted. A zero job id means the rest of the file is preallocated zeros.
Version 5 (beanstalkd 1.4.4 to 1.10) differs only in a ``size_t`` name length, a 77-byte
``Jobrec`` and times in microseconds.

``translate`` turns one such file into beanq records (``beanq.binlog`` format), so that one
replay loop applies both formats with the same rules. beanstalkd's own reader stops at the
first record it dislikes and throws away the rest of the file, including a job whose body is
exactly the size limit (it compares the size *with* the ``\\r\\n`` to the limit); here every
record whose framing is intact is kept, and only a record whose framing is lost ends the file.
"""

from __future__ import annotations

import logging
import struct
from typing import Final

log = logging.getLogger("beanq")

V7: Final = 7
V5: Final = 5
MAX_TUBE_NAME_LEN: Final = 201  # beanstalkd's, including the NUL

# beanstalkd's Jobrec, as laid out by a 64-bit compiler (alignment padding made explicit).
JOBREC7: Final = struct.Struct("<QI4xqqi4xqqIIIIIB3x")
JOBREC5: Final = struct.Struct("<QI4xQQi4xQQIIIIIB")  # offsetof(Jobrec5, pad) == 77
NAMELEN7: Final = struct.Struct("<i")
NAMELEN5: Final = struct.Struct("<Q")
VERSION: Final = struct.Struct("<i")

# beanstalkd's Jobrec.state values
INVALID, READY, RESERVED, BURIED, DELAYED = range(5)


class Records:
    """beanq-format records built from one beanstalkd file, plus what went wrong."""

    __slots__ = ("count", "damaged", "data", "end")

    def __init__(self, data: bytes, count: int, end: int, damaged: bool) -> None:
        self.data = data  # beanq records, back to back
        self.count = count  # how many (each consumed one stamp)
        self.end = end  # offset just past the last record read
        self.damaged = damaged  # a problem was reported


def version(head: bytes) -> int | None:
    """The beanstalkd format version a file starts with, or None."""
    if len(head) < VERSION.size:
        return None
    (v,) = VERSION.unpack_from(head)
    return v if v in (V5, V7) else None


def translate(
    buf: bytes,
    path: str,
    first_stamp: int,
    record: struct.Struct,
    magic: bytes,
    max_job_size: int,
) -> Records:
    """Translate a beanstalkd binlog file into beanq records stamped from ``first_stamp``.

    ``record`` is beanq's record header (``beanq.binlog.REC``) and ``magic`` its first field.
    The records are not checksummed: they are applied straight from memory, never stored."""
    v = version(buf)
    if v == V7:
        namelen, jobrec, unit = NAMELEN7, JOBREC7, 10**9
    elif v == V5:
        namelen, jobrec, unit = NAMELEN5, JOBREC5, 10**6
    else:  # pragma: no cover - callers check the version first
        raise ValueError(f"{path}: not a beanstalkd binlog")
    pack = record.pack
    head = record.size
    name_at = namelen.unpack_from
    job_at = jobrec.unpack_from
    ns = namelen.size
    js = jobrec.size
    out: list[bytes] = []
    stamp = first_stamp
    n = len(buf)
    p = VERSION.size
    damaged = False
    while True:
        if p + ns > n:
            damaged = _torn(buf, p, path, "a record") or damaged
            break
        (nl,) = name_at(buf, p)
        if nl >= MAX_TUBE_NAME_LEN or nl < 0:
            log.warning("%s:%d: namelen %d is out of range; the rest is unreadable", path, p, nl)
            damaged = True
            break
        q = p + ns + nl
        if q + js > n:
            damaged = _torn(buf, p, path, "a job record") or damaged
            break
        jid, pri, delay, ttr, size, created, deadline, c0, c1, c2, c3, c4, state = job_at(buf, q)
        if jid == 0:  # preallocated zeros: the end of what was written
            break
        end = q + js
        if state > DELAYED:
            log.warning("%s:%d: job %d has unknown state %d; skipped", path, p, jid, state)
            damaged = True
            p = end + (size if nl and size > 0 else 0)
            continue
        if nl and state != INVALID:
            if size < 2 or end + size > n:
                log.warning("%s:%d: job %d: body of %d bytes is cut short", path, p, jid, size)
                damaged = True
                break
            if size - 2 > max_job_size:
                log.warning(
                    "%s:%d: job %d is bigger than the limit (%d > %d); kept",
                    path,
                    p,
                    jid,
                    size - 2,
                    max_job_size,
                )
            out.append(
                pack(
                    magic,
                    0,
                    head + nl + size - 2,
                    pri,
                    jid,
                    stamp,
                    deadline / unit if state == DELAYED else 0.0,
                    created / unit,
                    delay // unit,
                    ttr // unit,
                    c0,
                    c1,
                    c2,
                    c3,
                    c4,
                    state,
                    nl,
                    0,
                )
            )
            out.append(buf[p + ns : q])
            out.append(buf[end : end + size - 2])
            end += size
        else:
            if nl:
                end += size  # a full record of a deleted job: its body is skipped
            out.append(
                pack(
                    magic,
                    0,
                    head,
                    pri,
                    jid,
                    stamp,
                    deadline / unit if state == DELAYED else 0.0,
                    created / unit,
                    delay // unit,
                    ttr // unit,
                    c0,
                    c1,
                    c2,
                    c3,
                    c4,
                    state,
                    0,
                    0,
                )
            )
        stamp += 1
        p = end
    return Records(b"".join(out), stamp - first_stamp, p, damaged)


def _torn(buf: bytes, p: int, path: str, what: str) -> bool:
    """Report a record cut short at ``p`` (unless only zeros follow: the normal end)."""
    if buf.count(0, p) == len(buf) - p:
        return False
    log.warning("%s:%d: unexpected end of file reading %s; dropped", path, p, what)
    return True
