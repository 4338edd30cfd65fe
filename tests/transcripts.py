"""Transcripts (scenarios as data) for the differential tests in ``test_differential.py``.

A transcript is a list of steps on named client connections ("a", "b", ...). A connection opens
on its first use (or explicitly with ``Open``). Steps:

* ``Send(conn, data)``: write raw bytes, exactly as given (partial lines, several pipelined
  commands, or a fragment of a body are all fine);
* ``Read(conn, count, timeout)``: collect ``count`` framed replies; stops early if the server
  closes the connection, and records "no reply" if the timeout passes first (so a ``Read`` with
  a short timeout asserts silence);
* ``Sleep(seconds)``, ``Close(conn)``, ``HalfClose(conn)`` (``shutdown(SHUT_WR)``).

The helpers below build the common shapes: ``c("stats")`` sends ``stats\\r\\n`` on "a" and reads
one reply, ``tx(b"...", n=3)`` sends raw bytes and reads three replies, ``silent("a", 0.3)``
expects nothing for 0.3 s, and ``put(b"body")`` is a ``put`` plus its reply.

Unless a scenario says ``final_stats=False``, the runner ends it by sending ``stats`` and
``list-tubes`` on a fresh connection, so every scenario also checks the global counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_READ_TIMEOUT = 2.0


@dataclass(frozen=True)
class Open:
    conn: str


@dataclass(frozen=True)
class Send:
    conn: str
    data: bytes


@dataclass(frozen=True)
class Read:
    conn: str
    count: int = 1
    timeout: float = DEFAULT_READ_TIMEOUT


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Close:
    conn: str
    settle: float = 0.05  # give the server a moment to process the close before the next step


@dataclass(frozen=True)
class HalfClose:
    conn: str


Step = Open | Send | Read | Sleep | Close | HalfClose
Part = Step | Iterable["Part"]


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    args: tuple[str, ...] = ()  # extra server flags, given to both servers
    final_stats: bool = True

    def __str__(self) -> str:
        return self.name


def _flatten(parts: Iterable[Part]) -> list[Step]:
    out: list[Step] = []
    for part in parts:
        if isinstance(part, Open | Send | Read | Sleep | Close | HalfClose):
            out.append(part)
        else:
            out.extend(_flatten(part))
    return out


def _bytes(data: bytes | str) -> bytes:
    return data.encode("latin-1") if isinstance(data, str) else data


def tx(
    data: bytes | str, conn: str = "a", n: int = 1, timeout: float = DEFAULT_READ_TIMEOUT
) -> list[Step]:
    """Send raw ``data`` (no CRLF added) and read ``n`` replies."""
    steps: list[Step] = [Send(conn, _bytes(data))]
    if n:
        steps.append(Read(conn, n, timeout))
    return steps


def c(
    line: bytes | str, conn: str = "a", n: int = 1, timeout: float = DEFAULT_READ_TIMEOUT
) -> list[Step]:
    """Send one command line (CRLF appended) and read ``n`` replies."""
    return tx(_bytes(line) + b"\r\n", conn, n, timeout)


def send(data: bytes | str, conn: str = "a") -> list[Step]:
    """Send raw bytes without reading anything."""
    return [Send(conn, _bytes(data))]


def silent(conn: str = "a", seconds: float = 0.25) -> list[Step]:
    """Expect no reply on ``conn`` for ``seconds`` (recorded as "no reply" by both servers)."""
    return [Read(conn, 1, seconds)]


def put(
    body: bytes | str = b"x",
    pri: int = 0,
    delay: int = 0,
    ttr: int = 10,
    conn: str = "a",
) -> list[Step]:
    """``put`` a job (with its body) and read the reply."""
    data = _bytes(body)
    return tx(b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(data), data), conn)


def sleep(seconds: float) -> list[Step]:
    return [Sleep(seconds)]


def close(conn: str, settle: float = 0.05) -> list[Step]:
    return [Close(conn, settle)]


def sc(name: str, *parts: Part, args: tuple[str, ...] = (), final_stats: bool = True) -> Scenario:
    return Scenario(name, tuple(_flatten(parts)), args, final_stats)


STATS: list[Step] = c("stats")

NAME_200 = "t" * 200
NAME_201 = "t" * 201
ALL_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
U64_OVERFLOW = "18446744073709551616"
U64_MAX = "18446744073709551615"
U32_OVERFLOW = "4294967296"


def wake(conn: str = "a") -> list[Step]:
    """Make beanstalkd notice that a reservation held by ``conn`` has expired.

    beanstalkd 1.12 has an off-by-one in its TTR timer: when its event loop samples the clock at
    exactly the deadline (same microsecond), ``conn_timeout`` sees ``deadline_at >= now``, keeps
    the job reserved and drops the connection from the timer heap, so the job is released only
    when that connection does something again (about one run in four here). Any command on the
    connection holding the reservation reschedules it; use this after sleeping past a TTR.
    """
    return c("list-tube-used", conn)


def bury_one(job_id: int, pri: int = 0, conn: str = "a") -> list[Step]:
    """Reserve the next job (expected to be ``job_id``) and bury it."""
    return [*c("reserve", conn), *c(f"bury {job_id} {pri}", conn)]


def bad_lines(*lines: str, conn: str = "a") -> list[Step]:
    """Each line is sent on its own and answered on its own (usually BAD_FORMAT)."""
    return [step for line in lines for step in c(line, conn)]


SCENARIOS: list[Scenario] = [
    # ---------------------------------------------------------------- put
    sc(
        "put-success",
        put(b"hello"),
        put(b"", pri=5),
        put(b"\x00\r\n\xff binary\r\n", pri=4294967295, ttr=4294967295),
        put(b"delayed", delay=4294967295),
        c("peek 1"),
        c("peek 2"),
        c("peek 3"),
        c("peek 4"),
        c("stats-job 3"),
        c("stats-job 4"),
        c("reserve"),
        c("reserve"),
        c("reserve"),
    ),
    sc(
        "put-urgent-counters",
        put(pri=0),
        put(pri=1023),
        put(pri=1024),
        put(pri=5000),
        put(pri=1, delay=100),
        STATS,
        c("stats-tube default"),
        c("reserve"),
        c("stats-tube default"),
    ),
    sc(
        "put-ttr-0-becomes-1",
        put(ttr=0),
        put(ttr=1),
        c("stats-job 1"),
        c("stats-job 2"),
    ),
    sc(
        "put-pipelined-in-one-write",
        tx(b"put 0 0 1 3\r\nabc\r\nput 0 0 1 3\r\ndef\r\npeek-ready\r\nput 9 0 1 0\r\n\r\n", n=4),
        tx(b"use foo\r\nput 0 0 1 1\r\nx\r\nwatch foo\r\nreserve\r\ndelete 5\r\nreserve\r\n", n=6),
    ),
    sc(
        "put-body-split-across-writes",
        send("put 1 0 5 10\r\n"),
        silent(seconds=0.15),
        send("01"),
        send("234"),
        sleep(0.05),
        send("56789"),
        silent(seconds=0.1),
        send("\r"),
        silent(seconds=0.1),
        send("\n"),
        [Read("a")],
        c("peek 1"),
    ),
    sc(
        "put-command-line-split-across-writes",
        send("pu"),
        sleep(0.05),
        send("t 0 0 "),
        sleep(0.05),
        send("1 2\r"),
        silent(seconds=0.1),
        send("\nhi"),
        sleep(0.05),
        send("\r\n"),
        [Read("a")],
        c("peek 1"),
    ),
    sc(
        "put-expected-crlf",
        tx("put 0 0 1 3\r\nabcXY"),
        put(b"abc"),
        c("peek 1"),
        c("peek 2"),
        tx("put 0 0 1 3\r\nabc\r", n=0),
        silent(seconds=0.1),
        tx("X"),
        c("list-tube-used"),
    ),
    sc(
        "put-expected-crlf-short-body",
        tx("put 0 0 1 3\r\nab\r\n", n=0),
        silent(seconds=0.15),
        tx("stats\r\n", n=2),
    ),
    sc(
        "put-bad-format",
        bad_lines(
            "put 0 0 1",
            "put ",
            "put a 0 1 1",
            "put -1 0 1 1",
            "put +1 0 1 1",
            "put 0 0 1.5 1",
            "put 0 0 1 -1",
            f"put 0 {U32_OVERFLOW} 1 1",
            f"put 0 0 {U32_OVERFLOW} 1",
            f"put 0 0 1 {U32_OVERFLOW}",
            f"put 0 0 1 {U64_OVERFLOW}",
            "put 0 0 1 1 2 3",
        ),
        # The put line is rejected, so the body that follows is read as a command.
        tx(f"put {U32_OVERFLOW} 0 1 1\r\nx\r\n", n=2),
        tx("put 0 0 1 1 \r\nx\r\n", n=2),
        tx("put 0 0 1 1 x\r\nx\r\n", n=2),
        tx("put 0 0 1 1.5\r\nx\r\n", n=2),
        tx("put 0 0 1 1\x00\r\nx\r\n", n=2),
        put(b"ok"),
    ),
    sc(
        "put-extra-spaces-between-args",
        tx("put  1  2  3  4\r\nabcd\r\n"),
        tx("put 0 0 1 1   \r\nx\r\n", n=2),
        c("stats-job 1"),
    ),
    # ---------------------------------------------------------------- JOB_TOO_BIG and limits
    sc(
        "job-too-big-limit-inclusive",
        put(b"0123456789"),
        tx(b"put 0 0 1 11\r\n01234567890\r\nput 0 0 1 1\r\nx\r\n", n=2),
        c("peek 1"),
        c("peek 2"),
        c("peek 3"),
        args=("-z", "10"),
    ),
    sc(
        "job-too-big-reply-waits-for-body",
        send("put 0 0 1 20\r\n"),
        silent(seconds=0.2),
        send("0123456789"),
        silent(seconds=0.1),
        tx("0123456789\r\nlist-tube-used\r\n", n=2),
        args=("-z", "10"),
    ),
    sc(
        "job-too-big-trailing-garbage",
        tx("put 0 0 1 11 junk\r\n01234567890\r\nlist-tube-used\r\n", n=2),
        tx("put 0 0 1 11\r\n01234567890XYlist-tube-used\r\n", n=2),
        args=("-z", "10"),
    ),
    sc(
        "job-too-big-default-limit",
        put(b"z" * 65535),
        tx(b"put 0 0 1 65536\r\n" + b"z" * 65536 + b"\r\nput 0 0 1 1\r\nx\r\n", n=2),
        c("stats-job 2"),
    ),
    sc(
        "job-size-zero-limit",
        put(b""),
        put(b"x"),
        c("reserve"),
        args=("-z", "0"),
    ),
    # ---------------------------------------------------------------- line framing
    sc(
        "line-222-chars-fits",
        c("x" * 222),
        c("peek " + "0" * 216 + "1"),
        c("use " + NAME_200),
        c("pause-tube " + NAME_200 + " " + "0" * 6),
    ),
    sc(
        "line-too-long",
        tx("x" * 224 + "\r\nlist-tube-used\r\n", n=2),
        tx("x" * 300 + "\r\nlist-tube-used\r\n", n=2),
        tx("x" * 1000 + "\r\nlist-tube-used\r\n", n=2),
        tx("use " + NAME_201 + "x" * 50 + "\r\nlist-tube-used\r\n", n=2),
    ),
    sc(
        "line-too-long-split-across-writes",
        send("x" * 200),
        sleep(0.05),
        send("x" * 200),
        silent(seconds=0.1),
        tx("\r\nlist-tube-used\r\n", n=2),
    ),
    sc(
        "nul-byte-in-line",
        bad_lines("stats\x00", "use foo\x00bar", "\x00", "peek 1\x00"),
        tx("put 0 0 1 1\x00\r\nx\r\n", n=2),
        c("list-tube-used"),
    ),
    sc(
        "stray-cr-and-lf-in-line",
        c("stats\nstats"),
        c("list-tube-used\n"),
        tx("x" * 300 + "\r\nlist-tube-used\r\n", n=2),
    ),
    sc(
        "unknown-commands",
        bad_lines(
            "",
            "foo",
            "PUT 0 0 1 1",
            "Stats",
            " stats",
            "put",
            "peek",
            "delete",
            "release",
            "bury",
            "touch",
            "kick",
            "kick-job",
            "use",
            "watch",
            "ignore",
            "list-tube",
            "peekx 1",
            "deletex 1",
            "kickx 1",
            "kick-jobx 1",
            "usex foo",
            "put\t0 0 1 1",
        ),
    ),
    sc(
        "junk-after-command-name",
        bad_lines(
            "statsx",
            "stats ",
            "stats x",
            "reservex",
            "reserve ",
            "reserve 1",
            "reserve-jobs 1",
            "reserve-with-timeout",
            "reserve-job",
            "stats-tube",
            "stats-job",
            "stats-tubex default",
            "list-tubesx",
            "list-tubes ",
            "list-tube-usedx",
            "list-tube-used ",
            "list-tubes-watchedx",
            "list-tubes-watched ",
            "peek-readyx",
            "peek-ready ",
            "peek-delayedx",
            "peek-delayed 1",
            "peek-buriedx",
            "peek-buried ",
        ),
    ),
    # ---------------------------------------------------------------- use / watch / ignore
    sc(
        "use",
        c("list-tube-used"),
        c("use foo"),
        c("list-tube-used"),
        c("use " + ALL_NAME_CHARS),
        c("use " + NAME_200),
        c("use foo-"),
        c("use default"),
        c("list-tubes"),
        c("stats-tube foo"),
        bad_lines(
            "use ",
            "use -foo",
            "use foo!",
            "use foo bar",
            "use foo ",
            "use  foo",
            "use " + NAME_201,
            "use f\x01",
            "use f\xe9",
        ),
        c("list-tube-used"),
    ),
    sc(
        "watch",
        c("list-tubes-watched"),
        c("watch foo"),
        c("watch foo"),
        c("watch default"),
        c("watch bar"),
        c("watch " + NAME_200),
        c("list-tubes-watched"),
        c("stats-tube foo"),
        bad_lines(
            "watch ",
            "watch -foo",
            "watch foo!",
            "watch foo bar",
            "watch foo ",
            "watch  foo",
            "watch " + NAME_201,
        ),
        c("list-tubes-watched"),
    ),
    sc(
        "ignore",
        c("ignore default"),
        c("ignore nosuch"),
        c("ignore foo"),
        c("use foo", conn="b"),
        c("ignore foo"),
        c("watch foo"),
        c("ignore default"),
        c("list-tubes-watched"),
        c("ignore foo"),
        c("watch bar"),
        c("ignore foo"),
        c("ignore bar"),
        c("list-tubes-watched"),
        bad_lines("ignore ", "ignore -bar", "ignore bar!", "ignore bar ", "ignore " + NAME_201),
        c("list-tubes"),
    ),
    sc(
        "ignore-reorders-watch-list",
        c("watch t1"),
        c("watch t2"),
        c("watch t3"),
        c("watch t4"),
        c("list-tubes-watched"),
        c("ignore default"),
        c("list-tubes-watched"),
        c("ignore t2"),
        c("list-tubes-watched"),
        c("watch t5"),
        c("watch default"),
        c("list-tubes-watched"),
        c("list-tubes"),
    ),
    sc(
        "tubes-created-and-removed",
        c("stats-tube foo"),
        c("use foo", conn="b"),
        c("list-tubes"),
        c("stats-tube foo"),
        c("watch bar", conn="c"),
        c("use baz", conn="d"),
        c("use qux", conn="e"),
        c("list-tubes"),
        c("use default", conn="b"),
        c("list-tubes"),
        c("stats-tube foo"),
        c("ignore bar", conn="c"),
        c("list-tubes"),
        close("e"),
        c("list-tubes"),
        c("use keep", conn="b"),
        put(b"job", conn="b"),
        c("use default", conn="b"),
        c("list-tubes"),
        c("stats-tube keep"),
        c("delete 1"),
        c("list-tubes"),
        c("watch w", conn="f"),
        c("use w", conn="f"),
        c("ignore w", conn="f"),
        c("list-tubes"),
        c("use default", conn="f"),
        c("list-tubes"),
    ),
    sc(
        "close-removes-watched-and-used-tubes",
        c("watch t1", conn="x"),
        c("watch t2", conn="x"),
        c("use t3", conn="x"),
        c("use t4", conn="y"),
        c("watch t5", conn="y"),
        c("watch t6", conn="y"),
        c("list-tubes"),
        close("x"),
        c("list-tubes"),
        c("quit", conn="y"),
        sleep(0.05),
        c("list-tubes"),
    ),
    sc(
        "paused-tube-vanishes-and-comes-back-unpaused",
        c("use p", conn="b"),
        c("pause-tube p 100"),
        c("stats-tube p"),
        c("use default", conn="b"),
        c("stats-tube p"),
        c("use p", conn="b"),
        c("stats-tube p"),
    ),
    # ---------------------------------------------------------------- reserve
    sc(
        "reserve",
        put(b"five", pri=5),
        put(b"three", pri=3),
        put(b"three-again", pri=3),
        c("reserve"),
        c("reserve"),
        c("reserve"),
        c("stats-job 1"),
        c("stats-job 2"),
        send("reserve\r\n"),
        silent(seconds=0.2),
        put(b"late", conn="b"),
        [Read("a")],
        STATS,
    ),
    sc(
        "reserve-pipelined-behind-blocking-reserve",
        send("reserve\r\nlist-tube-used\r\n"),
        silent(seconds=0.2),
        put(b"job", conn="b"),
        [Read("a", 2)],
    ),
    sc(
        "priority-order-across-watched-tubes",
        c("use t1"),
        put(b"1", pri=5),
        put(b"2", pri=1),
        c("use t2"),
        put(b"3", pri=1),
        put(b"4", pri=0),
        c("use default"),
        put(b"5", pri=5),
        put(b"6", pri=1),
        c("use t3"),
        put(b"7", pri=0),
        c("watch t1", conn="b"),
        c("watch t2", conn="b"),
        [c("reserve", conn="b") for _ in range(6)],
        c("reserve-with-timeout 0", conn="b"),
    ),
    sc(
        "waiter-gets-job-from-any-watched-tube",
        c("watch foo", conn="b"),
        send("reserve\r\n", conn="b"),
        silent("b", 0.1),
        c("stats-tube foo"),
        c("stats-tube default"),
        STATS,
        c("use foo"),
        put(b"for-b"),
        [Read("b")],
        c("stats-tube foo"),
    ),
    sc(
        "two-waiters",
        send("reserve\r\n", conn="b"),
        sleep(0.05),
        send("reserve\r\n", conn="c"),
        sleep(0.05),
        STATS,
        put(b"first"),
        sleep(0.05),
        put(b"second"),
        [Read("b", timeout=0.5)],
        [Read("c", timeout=0.5)],
    ),
    sc(
        "four-waiters",
        [
            [send("reserve-with-timeout 10\r\n", conn=conn), sleep(0.05)]
            for conn in ("b", "c", "d", "e")
        ],
        [[put(str(i).encode()), sleep(0.05)] for i in range(1, 5)],
        [Read(conn, timeout=0.5) for conn in ("b", "c", "d", "e")],
    ),
    sc(
        "waiters-on-overlapping-tubes",
        c("watch foo", conn="b"),
        c("watch foo", conn="d"),
        c("ignore default", conn="d"),
        c("watch foo", conn="e"),
        [[send("reserve\r\n", conn=conn), sleep(0.05)] for conn in ("b", "c", "d", "e")],
        c("stats-tube foo"),
        c("stats-tube default"),
        c("use foo"),
        put(b"foo-1"),
        sleep(0.05),
        c("use default"),
        put(b"default-2"),
        sleep(0.05),
        c("use foo"),
        put(b"foo-3"),
        sleep(0.05),
        c("use default"),
        put(b"default-4"),
        [Read(conn, timeout=0.5) for conn in ("b", "c", "d", "e")],
    ),
    sc(
        "waiter-disconnects",
        send("reserve\r\n", conn="b"),
        sleep(0.05),
        send("reserve\r\n", conn="c"),
        sleep(0.05),
        close("b"),
        STATS,
        put(b"job"),
        [Read("c", timeout=0.5)],
    ),
    # ---------------------------------------------------------------- reserve-with-timeout
    sc(
        "reserve-with-timeout-0",
        c("reserve-with-timeout 0"),
        put(b"job"),
        c("reserve-with-timeout 0"),
        c("reserve-with-timeout 0"),
        c(f"reserve-with-timeout {'9' * 20}"),
        c("reserve-with-timeout  0"),
    ),
    sc(
        "reserve-with-timeout-1",
        c("reserve-with-timeout 1", timeout=0.5),
        [Read("a", timeout=2.0)],
        send("reserve-with-timeout 1\r\n"),
        sleep(0.3),
        put(b"job", conn="b"),
        [Read("a")],
    ),
    sc(
        "deadline-soon-ttr-1",
        put(b"j1", ttr=1),
        c("reserve"),
        c("reserve"),
        c("reserve-with-timeout 0"),
        c("reserve-with-timeout 5"),
        put(b"j2", ttr=1),
        c("reserve"),
        c("stats-job 1"),
    ),
    sc(
        "deadline-soon-while-waiting",
        put(b"job", ttr=2),
        c("reserve"),
        send("reserve\r\n"),
        silent(seconds=0.5),
        [Read("a", timeout=1.5)],
        c("stats-job 1"),
    ),
    sc(
        "ttr-expiry-releases-job",
        put(b"job", ttr=1),
        c("reserve"),
        c("stats-job 1"),
        send("reserve\r\n", conn="b"),
        silent("b", 0.7),
        sleep(0.5),
        wake(),
        [Read("b")],
        c("stats-job 1"),
        STATS,
        c("delete 1"),
        c("delete 1", conn="b"),
    ),
    sc(
        "ttr-expiry-without-waiter",
        put(b"job", ttr=1),
        c("reserve"),
        sleep(1.3),
        wake(),
        c("stats-job 1"),
        STATS,
        c("touch 1"),
        c("release 1 0 0"),
        c("bury 1 0"),
        c("reserve"),
        c("stats-job 1"),
        c("delete 1"),
        c("release 1 0 0"),
    ),
    sc(
        "delayed-job-becomes-ready",
        put(b"job", delay=1),
        c("stats-job 1"),
        c("peek-delayed"),
        c("peek-ready"),
        c("reserve-with-timeout 0"),
        c("stats-tube default"),
        send("reserve\r\n"),
        silent(seconds=0.5),
        [Read("a", timeout=2.0)],
        c("peek-delayed"),
        c("stats-job 1"),
    ),
    sc(
        "half-close-while-reserving",
        send("reserve\r\n"),
        silent(seconds=0.15),
        [HalfClose("a"), Read("a", 2)],
        send("reserve-with-timeout 10\r\n", conn="b"),
        silent("b", 0.1),
        [HalfClose("b"), Read("b", 2)],
        sleep(0.05),
    ),
    sc(
        "half-close-after-commands",
        send("list-tube-used\r\nstats-tube default\r\n"),
        [HalfClose("a"), Read("a", 3)],
        put(b"job", conn="b"),
        send("reserve\r\n", conn="c"),
        [HalfClose("c"), Read("c", 2)],
        sleep(0.05),
    ),
    # ---------------------------------------------------------------- reserve-job
    sc(
        "reserve-job",
        put(b"ready"),
        put(b"delayed", delay=100),
        put(b"buried"),
        c("reserve-job 3"),
        c("bury 3 0"),
        c("use other", conn="b"),
        put(b"other-tube", conn="b"),
        c("pause-tube other 100"),
        c("reserve-job 1"),
        c("reserve-job 2"),
        c("reserve-job 3"),
        c("reserve-job 4"),
        c("reserve-job 1"),
        c("reserve-job 99"),
        c("reserve-job 1", conn="b"),
        c("delete 1", conn="b"),
        c("stats-job 2"),
        c("stats-job 3"),
        STATS,
        c("stats-tube default"),
        bad_lines(
            "reserve-job ",
            "reserve-job x",
            "reserve-job 1 ",
            "reserve-job -1",
            f"reserve-job {U64_OVERFLOW}",
        ),
        c(f"reserve-job {U64_MAX}"),
    ),
    # ---------------------------------------------------------------- delete
    sc(
        "delete",
        put(b"ready"),
        put(b"delayed", delay=100),
        put(b"buried"),
        put(b"reserved"),
        put(b"other"),
        c("reserve-job 3"),
        c("bury 3 0"),
        c("reserve-job 4"),
        c("reserve-job 5", conn="b"),
        c("delete 1"),
        c("delete 2"),
        c("delete 3"),
        c("delete 4"),
        c("delete 5"),
        c("delete 1"),
        c("delete 99"),
        c(f"delete {U64_MAX}"),
        c("delete  5"),
        bad_lines(
            "delete ",
            "delete 5 ",
            "delete x",
            "delete -1",
            "delete +5",
            "delete 5x",
            "delete 1 2",
            f"delete {U64_OVERFLOW}",
        ),
        c("stats-tube default"),
        c("delete 5", conn="b"),
        c("peek 5"),
    ),
    # ---------------------------------------------------------------- release
    sc(
        "release",
        put(b"a", pri=10),
        c("reserve"),
        c("release 1 5 0"),
        c("stats-job 1"),
        c("reserve"),
        c("release 1 7 100"),
        c("stats-job 1"),
        c("peek-delayed"),
        c("peek-ready"),
        c("release 1 0 0"),
        c("reserve-job 1", conn="b"),
        c("release 1 0 0"),
        c("release 1 4294967295 0", conn="b"),
        c("stats-job 1"),
        STATS,
        c("reserve"),
        bad_lines(
            "release ",
            "release 1",
            "release 1 0",
            "release 1 0 0 0",
            "release 1 0 0 ",
            "release x 0 0",
            "release 1 x 0",
            "release 1 0 x",
            f"release 1 {U32_OVERFLOW} 0",
            f"release 1 0 {U32_OVERFLOW}",
            f"release {U64_OVERFLOW} 0 0",
        ),
        c("release 1  3  0"),
        c("stats-job 1"),
    ),
    sc(
        "release-with-delay-becomes-ready",
        put(b"job"),
        c("reserve"),
        c("release 1 3 1"),
        c("reserve-with-timeout 0"),
        c("stats-job 1"),
        c("reserve-with-timeout 3"),
        c("stats-job 1"),
    ),
    sc(
        "release-bury-kick-wake-a-waiter",
        put(b"job", pri=7),
        c("reserve"),
        send("reserve\r\n", conn="b"),
        silent("b", 0.1),
        c("release 1 8 0"),
        [Read("b")],
        c("bury 1 9", conn="b"),
        send("reserve\r\n", conn="c"),
        silent("c", 0.1),
        c("kick 1"),
        [Read("c")],
        c("release 1 10 1", conn="c"),
        send("reserve\r\n", conn="d"),
        silent("d", 0.1),
        c("kick-job 1"),
        [Read("d")],
        c("stats-job 1"),
    ),
    # ---------------------------------------------------------------- bury
    sc(
        "bury",
        put(b"one"),
        put(b"two"),
        put(b"three"),
        c("reserve"),
        c("bury 1 7"),
        c("stats-job 1"),
        c("peek-buried"),
        c("reserve"),
        c("bury 2 3"),
        c("peek-buried"),
        c("bury 1 0"),
        c("bury 3 0"),
        c("reserve-job 3", conn="b"),
        c("bury 3 0"),
        c("bury 99 0"),
        bad_lines(
            "bury ",
            "bury 3",
            "bury 3 x",
            "bury 3 0 0",
            "bury 3 0 ",
            "bury x 0",
            f"bury 3 {U32_OVERFLOW}",
            f"bury {U64_OVERFLOW} 0",
        ),
        c("bury 3  4", conn="b"),
        STATS,
        c("stats-tube default"),
        c("use other"),
        c("peek-buried"),
    ),
    # ---------------------------------------------------------------- touch
    sc(
        "touch-extends-ttr",
        put(b"job", ttr=2),
        put(b"ready"),
        c("reserve"),
        sleep(1.0),
        c("touch 1"),
        sleep(1.3),
        c("stats-job 1"),
        c("touch 2"),
        c("touch 99"),
        c("touch 1", conn="b"),
        bad_lines("touch ", "touch x", "touch 1 ", "touch -1", f"touch {U64_OVERFLOW}"),
        c("touch  1"),
        STATS,
    ),
    # ---------------------------------------------------------------- peek family
    sc(
        "peek",
        put(b"five", pri=5),
        put(b"two", pri=2),
        put(b"two-again", pri=2),
        put(b"later", delay=100),
        put(b"sooner", delay=50),
        put(b"sooner-too", delay=50),
        c("peek-ready"),
        c("peek-delayed"),
        c("peek-buried"),
        c("reserve"),
        c("bury 2 9"),
        c("reserve"),
        c("bury 3 1"),
        c("peek-buried"),
        c("peek-ready"),
        c("peek 1"),
        c("peek 4"),
        c("reserve"),
        c("peek 1"),
        c("peek 99"),
        c(f"peek {U64_MAX}"),
        c("peek  1"),
        c("use other"),
        c("peek-ready"),
        c("peek-delayed"),
        c("peek-buried"),
        c("peek 2"),
        bad_lines("peek ", "peek x", "peek 1 ", "peek -1", "peek 1x", f"peek {U64_OVERFLOW}"),
    ),
    # ---------------------------------------------------------------- kick / kick-job
    sc(
        "kick-takes-buried-first",
        put(b"delayed", delay=100),
        put(b"b1"),
        put(b"b2"),
        bury_one(2),
        bury_one(3),
        c("kick 1"),
        c("stats-job 2"),
        c("kick 10"),
        c("kick 10"),
        c("kick 10"),
        c("kick 0"),
        c("stats-job 1"),
        c("stats-job 3"),
        STATS,
        c("stats-tube default"),
    ),
    sc(
        "kick-uses-the-used-tube",
        put(b"job"),
        bury_one(1),
        c("use other"),
        c("kick 5"),
        c("use default"),
        c("kick  5"),
        bad_lines("kick ", "kick x", f"kick {'9' * 20}"),
        c("reserve"),
        c("bury 1 0"),
        c("kick 4294967295"),
    ),
    sc(
        "kick-job",
        put(b"delayed", delay=100),
        put(b"buried"),
        put(b"ready"),
        bury_one(2, pri=4),
        c("use other", conn="b"),
        put(b"other-buried", conn="b"),
        c("watch other", conn="b"),
        c("ignore default", conn="b"),
        bury_one(4, conn="b"),
        c("kick-job 2"),
        c("kick-job 1"),
        c("kick-job 3"),
        c("kick-job 4"),
        c("kick-job 2"),
        c("reserve"),
        c("kick-job 1"),
        c("kick-job 99"),
        c("stats-job 1"),
        c("stats-job 2"),
        c("stats-job 4"),
        bad_lines(
            "kick-job ",
            "kick-job x",
            "kick-job 1 ",
            "kick-job -1",
            f"kick-job {U64_OVERFLOW}",
        ),
        c("kick-job  2"),
    ),
    # ---------------------------------------------------------------- stats family
    sc(
        "stats-job",
        put(b"job", pri=3, ttr=5),
        c("stats-job 1"),
        c("reserve"),
        c("stats-job 1"),
        c("release 1 3 0"),
        c("stats-job 1"),
        c("delete 1"),
        c("stats-job 1"),
        c("stats-job 99"),
        bad_lines(
            "stats-job ",
            "stats-job x",
            "stats-job 1 ",
            "stats-job -1",
            f"stats-job {U64_OVERFLOW}",
        ),
        c("stats-job  1"),
    ),
    sc(
        "stats-tube",
        c("stats-tube default"),
        c("use foo"),
        put(b"j", pri=1),
        put(b"j", pri=2000),
        put(b"j", delay=100),
        c("watch foo", conn="b"),
        c("reserve", conn="b"),
        put(b"j"),
        c("reserve-job 4", conn="b"),
        c("bury 4 0", conn="b"),
        c("delete 3"),
        c("stats-tube foo"),
        c("stats-tube nosuch"),
        c("stats-tube " + NAME_200),
        bad_lines(
            "stats-tube ",
            "stats-tube -foo",
            "stats-tube foo!",
            "stats-tube foo ",
            "stats-tube foo bar",
            "stats-tube  foo",
            "stats-tube " + NAME_201,
        ),
    ),
    sc(
        "stats-counters",
        put(b"x"),
        c("peek 1"),
        c("peek-ready"),
        c("peek-delayed"),
        c("peek-buried"),
        c("reserve"),
        c("release 1 0 0"),
        c("reserve-with-timeout 0"),
        c("bury 1 0"),
        c("kick 1"),
        c("reserve"),
        c("touch 1"),
        c("delete 1"),
        c("use foo"),
        c("watch foo"),
        c("ignore foo"),
        c("stats-job 1"),
        c("stats-tube default"),
        c("list-tubes"),
        c("list-tube-used"),
        c("list-tubes-watched"),
        c("pause-tube foo 0"),
        STATS,
        STATS,
    ),
    sc(
        "connection-counters",
        STATS,
        put(b"job", conn="b"),
        c("reserve", conn="c"),
        c("reserve-with-timeout 0", conn="d"),
        send("reserve\r\n", conn="e"),
        tx("put 0 0 1 3\r\nabcXY", conn="f"),
        tx("put 0 0 1 70000\r\n", conn="g", n=0),
        [Open("h")],
        sleep(0.05),
        STATS,
        close("b"),
        close("c"),
        STATS,
        close("e"),
        close("f"),
        STATS,
        c("stats-job 1"),
    ),
    sc(
        "list-tubes",
        c("list-tubes"),
        c("list-tubes-watched"),
        c("list-tube-used"),
        c("use a"),
        c("watch b"),
        c("watch c"),
        c("use d", conn="b"),
        c("list-tubes"),
        c("list-tubes-watched"),
        c("list-tube-used"),
        c("list-tube-used", conn="b"),
    ),
    # ---------------------------------------------------------------- pause-tube
    sc(
        "pause-tube-blocks-reserve",
        put(b"job"),
        c("pause-tube default 1"),
        c("stats-tube default"),
        c("reserve-with-timeout 0"),
        c("peek-ready"),
        send("reserve\r\n"),
        silent(seconds=0.5),
        [Read("a", timeout=2.0)],
        c("stats-tube default"),
    ),
    sc(
        "pause-tube-0",
        put(b"job"),
        c("pause-tube default 0"),
        c("reserve"),
        c("stats-tube default"),
    ),
    sc(
        "pause-tube-fields-and-errors",
        c("pause-tube default 3"),
        c("stats-tube default"),
        put(b"job"),
        c("reserve-with-timeout 0"),
        c("reserve-job 1"),
        c("release 1 0 0"),
        c("pause-tube default 0"),
        c("reserve"),
        c("stats-tube default"),
        c("pause-tube nosuch 1"),
        c("pause-tube  default 0"),
        c("pause-tube " + NAME_200 + " 1"),
        bad_lines(
            "pause-tube",
            "pause-tube ",
            "pause-tube default",
            "pause-tube default ",
            "pause-tube default x",
            "pause-tube default 1 2",
            "pause-tube default 0 ",
            "pause-tube default -1",
            f"pause-tube default {U32_OVERFLOW}",
            "pause-tube -foo 0",
            "pause-tube foo! 0",
            "pause-tube " + NAME_201 + " 0",
        ),
        c("stats-tube default"),
    ),
    sc(
        "pause-one-of-two-watched-tubes",
        c("use foo"),
        put(b"foo-urgent", pri=0),
        c("use default"),
        put(b"default-lazy", pri=5),
        c("watch foo"),
        c("pause-tube foo 5"),
        c("reserve"),
        c("reserve-with-timeout 0"),
        c("stats-tube foo"),
    ),
    # ---------------------------------------------------------------- quit and closing
    sc(
        "quit-releases-reserved-jobs",
        put(b"one"),
        put(b"two"),
        c("reserve", conn="b"),
        c("reserve", conn="b"),
        c("quit", conn="b"),
        sleep(0.05),
        c("stats-job 1"),
        c("stats-job 2"),
        STATS,
        c("reserve"),
    ),
    sc(
        "close-releases-reserved-jobs",
        put(b"one", pri=9),
        put(b"two", pri=8),
        c("reserve", conn="b"),
        c("bury 2 8", conn="b"),
        c("reserve", conn="b"),
        send("reserve\r\n", conn="c"),
        silent("c", 0.1),
        close("b"),
        [Read("c")],
        c("stats-job 1"),
        c("stats-job 2"),
        STATS,
    ),
    sc(
        "quit-pipelined",
        tx("list-tube-used\r\nquit\r\nlist-tube-used\r\n", n=2),
        put(b"x", conn="b"),
        tx("quit \r\n", conn="c"),
        tx("put 0 0 1 4\r\nquit\r\n", conn="d"),
        c("list-tube-used", conn="d"),
        c("quit", conn="d"),
    ),
    sc(
        "close-in-the-middle-of-a-put",
        send("put 0 0 1 10\r\nabc"),
        sleep(0.05),
        close("a"),
        put(b"next", conn="b"),
        c("peek 1", conn="b"),
        send("put 0 0 1 10\r\nabc", conn="c"),
        [HalfClose("c"), Read("c")],
    ),
]
