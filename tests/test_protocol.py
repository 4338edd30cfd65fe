"""The codec: every case is checked fed whole, byte by byte, and with trailing data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beanq import protocol as p

MAX = 100  # a small -z so the size-limit cases stay small


def feed_whole(data: bytes, max_job_size: int = MAX) -> list[p.Event]:
    return p.CommandReader(max_job_size).feed(data)


def without_put_started(events: list[p.Event]) -> list[p.Event]:
    """PutStarted only says a body is still on its way; it depends on how input was split."""
    return [e for e in events if not isinstance(e, p.PutStarted)]


def feed_bytewise(data: bytes, max_job_size: int = MAX) -> list[p.Event]:
    reader = p.CommandReader(max_job_size)
    events: list[p.Event] = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    return without_put_started(events)


CASES: list[tuple[bytes, list[p.Event]]] = [
    (b"put 1 2 3 5\r\nhello\r\n", [p.Put(1, 2, 3, b"hello")]),
    (b"put 0 0 0 0\r\n\r\n", [p.Put(0, 0, 0, b"")]),
    (b"put 1   2  3 5\r\nhello\r\n", [p.Put(1, 2, 3, b"hello")]),  # runs of spaces, as beanstalkd
    (b"put 4294967295 0 1 2\r\nab\r\n", [p.Put(4294967295, 0, 1, b"ab")]),
    (b"put 4294967296 0 1 2\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"put -1 0 1 2\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"put 1 0 1\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"put 1 0 1 2 x\r\n", [p.Invalid(p.BAD_FORMAT, "put")]),
    (b"put 1 0 1 2 \r\n", [p.Invalid(p.BAD_FORMAT, "put")]),
    (b"put 1 0 1 5\r\nhelloXY", [p.Invalid(p.EXPECTED_CRLF, "put", producer=True)]),
    (b"put 1 0 1 100\r\n" + b"x" * 100 + b"\r\n", [p.Put(1, 0, 1, b"x" * 100)]),  # -z inclusive
    (b"put 1 0 1 101\r\n" + b"x" * 101 + b"\r\n", [p.Invalid(p.JOB_TOO_BIG, "put")]),
    # the size check comes before the check for junk after it, and the body is consumed
    (
        b"put 1 0 1 101 junk\r\n" + b"x" * 101 + b"\r\nstats\r\n",
        [p.Invalid(p.JOB_TOO_BIG, "put"), p.Simple("stats")],
    ),
    (b"put\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"put \r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"put\t1 0 1 1\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"reserve\r\n", [p.Reserve(None)]),
    (b"reserve-with-timeout 0\r\n", [p.Reserve(0)]),
    (b"reserve-with-timeout 2147483647\r\n", [p.Reserve(2147483647)]),
    (b"reserve-with-timeout 2147483648\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"reserve-with-timeout -1\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"reserve-with-timeout 5abc\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"reserve-with-timeout\r\n", [p.Invalid(p.BAD_FORMAT)]),  # beanstalkd: prefix "reserve"
    (b"reservex\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"reserve 1\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"reserve-job 7\r\n", [p.JobCommand("reserve-job", 7)]),
    (b"delete 18446744073709551615\r\n", [p.JobCommand("delete", 18446744073709551615)]),
    (b"delete 18446744073709551616\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"delete 5 \r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"delete\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"delete 0x5\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"peek 3\r\n", [p.JobCommand("peek", 3)]),
    (b"touch 3\r\n", [p.JobCommand("touch", 3)]),
    (b"kick-job 3\r\n", [p.JobCommand("kick-job", 3)]),
    (b"stats-job 3\r\n", [p.JobCommand("stats-job", 3)]),
    (b"release 1 2 3\r\n", [p.Release(1, 2, 3)]),
    (b"release 1 2\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"release 1 4294967296 0\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"bury 1 2\r\n", [p.Bury(1, 2)]),
    (b"bury 1\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"kick 10\r\n", [p.Kick(10)]),
    (b"kick 5abc\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"kick -1\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use foo\r\n", [p.TubeCommand("use", b"foo")]),
    (b"use A-Za-z0-9+/;.$_()\r\n", [p.TubeCommand("use", b"A-Za-z0-9+/;.$_()")]),
    (b"use " + b"a" * 200 + b"\r\n", [p.TubeCommand("use", b"a" * 200)]),
    (b"use " + b"a" * 201 + b"\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use -foo\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use foo bar\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use  foo\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use \r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use foo!\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"watch foo\r\n", [p.TubeCommand("watch", b"foo")]),
    (b"ignore foo\r\n", [p.TubeCommand("ignore", b"foo")]),
    (b"stats-tube foo\r\n", [p.TubeCommand("stats-tube", b"foo")]),
    (b"stats-tube\r\n", [p.Invalid(p.BAD_FORMAT)]),  # beanstalkd: prefix "stats"
    (b"pause-tube foo 10\r\n", [p.PauseTube(b"foo", 10)]),
    (b"pause-tube foo\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"pause-tube -foo 1\r\n", [p.Invalid(p.BAD_FORMAT, "pause-tube")]),
    (b"pause-tube " + b"a" * 201 + b" 1\r\n", [p.Invalid(p.BAD_FORMAT, "pause-tube")]),
    (b"pause-tubefoo 0\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"peek-ready\r\n", [p.Simple("peek-ready")]),
    (b"peek-readyx\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"peek-delayed\r\n", [p.Simple("peek-delayed")]),
    (b"peek-buried\r\n", [p.Simple("peek-buried")]),
    (b"stats\r\n", [p.Simple("stats")]),
    (b"stats x\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"list-tubes\r\n", [p.Simple("list-tubes")]),
    (b"list-tube-used\r\n", [p.Simple("list-tube-used")]),
    (b"list-tubes-watched\r\n", [p.Simple("list-tubes-watched")]),
    (b"list-tubes-watchedx\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"quit\r\n", [p.Simple("quit")]),
    (b"quitxyz\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"hello\r\n", [p.Invalid(p.UNKNOWN_COMMAND)]),
    (b"stats\0\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"use fo\0o\r\n", [p.Invalid(p.BAD_FORMAT)]),
    # lines: 222 bytes + CRLF is the longest command; longer ones are discarded to their CRLF
    (b"use " + b"a" * 218 + b"\r\n", [p.Invalid(p.BAD_FORMAT)]),
    (b"x" * 223 + b"\r\nstats\r\n", [p.Invalid(p.BAD_FORMAT), p.Simple("stats")]),
    (b"x" * 5000 + b"\r\nstats\r\n", [p.Invalid(p.BAD_FORMAT), p.Simple("stats")]),
    (b"put 1 2 3 1\r\nx\r\nput 1 2 3 1\r\ny\r\n", [p.Put(1, 2, 3, b"x"), p.Put(1, 2, 3, b"y")]),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_whole(data: bytes, expected: list[p.Event]) -> None:
    assert feed_whole(data) == expected


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_byte_by_byte(data: bytes, expected: list[p.Event]) -> None:
    assert feed_bytewise(data) == expected


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_with_trailing_data(data: bytes, expected: list[p.Event]) -> None:
    reader = p.CommandReader(MAX)
    assert reader.feed(data + b"stats\r\nlist-tu") == [*expected, p.Simple("stats")]
    assert reader.feed(b"bes\r\n") == [p.Simple("list-tubes")]


def test_incomplete_input_waits() -> None:
    reader = p.CommandReader(MAX)
    assert reader.feed(b"put 1 2 3 5\r\nhel") == [p.PutStarted(too_big=False)]
    assert reader.buffered == 3
    assert reader.feed(b"lo\r") == []
    assert reader.feed(b"\n") == [p.Put(1, 2, 3, b"hello")]
    assert reader.buffered == 0


def test_put_started_announces_an_incomplete_body_once() -> None:
    reader = p.CommandReader(MAX)
    assert reader.feed(b"put 1 2 3 200\r\nxx") == [p.PutStarted(too_big=True)]
    assert reader.feed(b"x" * 100) == []
    assert reader.feed(b"x" * 98 + b"\r\n") == [p.Invalid(p.JOB_TOO_BIG, "put")]


def test_225_byte_line_does_not_swallow_the_next_command() -> None:
    """beanstalkd 1.12 loses the command after a 223-byte line; beanq answers it."""
    line = b"y" * 223 + b"\r\n"
    for split in range(len(line) + 1):
        reader = p.CommandReader(MAX)
        events = reader.feed(line[:split]) + reader.feed(line[split:] + b"stats\r\n")
        assert events == [p.Invalid(p.BAD_FORMAT), p.Simple("stats")], split


def test_huge_body_is_read_by_count_not_scanned() -> None:
    """A body full of CRLFs is still one body."""
    body = b"\r\n" * 40
    assert feed_whole(b"put 1 0 1 80\r\n" + body + b"\r\n") == [p.Put(1, 0, 1, body)]


commands = st.one_of(
    st.builds(
        lambda pri, delay, ttr, body: (
            p.encode_put(body, pri, delay, ttr),
            p.Put(pri, delay, ttr, body),
        ),
        st.integers(0, p.U32_MAX),
        st.integers(0, p.U32_MAX),
        st.integers(0, p.U32_MAX),
        st.binary(max_size=MAX),
    ),
    st.builds(
        lambda t: (p.encode_reserve(t), p.Reserve(t)),
        st.none() | st.integers(0, p.INT_MAX),
    ),
    st.builds(
        lambda name, i: (p.encode_job_command(name, i), p.JobCommand(name, i)),
        st.sampled_from(["peek", "delete", "touch", "kick-job", "stats-job", "reserve-job"]),
        st.integers(0, p.U64_MAX),
    ),
    st.builds(
        lambda i, pri, d: (p.encode_release(i, pri, d), p.Release(i, pri, d)),
        st.integers(0, p.U64_MAX),
        st.integers(0, p.U32_MAX),
        st.integers(0, p.U32_MAX),
    ),
    st.builds(
        lambda i, pri: (p.encode_bury(i, pri), p.Bury(i, pri)),
        st.integers(0, p.U64_MAX),
        st.integers(0, p.U32_MAX),
    ),
    st.builds(lambda n: (p.encode_kick(n), p.Kick(n)), st.integers(0, p.U32_MAX)),
    st.builds(
        lambda name, tube: (p.encode_tube_command(name, tube), p.TubeCommand(name, tube)),
        st.sampled_from(["use", "watch", "ignore", "stats-tube"]),
        st.binary(min_size=1, max_size=200).filter(p.valid_tube_name),
    ),
    st.builds(
        lambda tube, d: (p.encode_pause_tube(tube, d), p.PauseTube(tube, d)),
        st.binary(min_size=1, max_size=200).filter(p.valid_tube_name),
        st.integers(0, p.U32_MAX),
    ),
    st.builds(
        lambda name, d: (p.encode_schedule_add(name, d), p.ScheduleAdd(name, d)),
        st.binary(min_size=1, max_size=p.MAX_KEY).filter(p.valid_tube_name),
        st.binary(max_size=MAX),
    ),
    st.builds(
        lambda word, name: (
            p.encode_schedule_command(word, name),
            p.ScheduleCommand(word, name),
        ),
        st.sampled_from(["rm", "pause", "resume", "show"]),
        st.binary(min_size=1, max_size=p.MAX_KEY).filter(p.valid_tube_name),
    ),
    st.just((p.ENCODED_SCHEDULE_LIST, p.ScheduleList())),
    st.builds(
        lambda name: (p.encode_simple(name), p.Simple(name)),
        st.sampled_from(
            ["peek-ready", "peek-delayed", "peek-buried", "stats", "list-tubes", "quit"]
        ),
    ),
)


@given(st.lists(commands, max_size=20), st.data())
def test_encode_then_parse_round_trips_under_any_split(
    pairs: list[tuple[bytes, p.Event]], data: st.DataObject
) -> None:
    stream = b"".join(wire for wire, _ in pairs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = p.CommandReader(MAX)
    events: list[p.Event] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        events += reader.feed(stream[start:cut])
        start = cut
    assert without_put_started(events) == [event for _, event in pairs]


@given(st.binary(max_size=600), st.data())
def test_arbitrary_bytes_never_raise_and_never_depend_on_splits(
    stream: bytes, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = p.CommandReader(MAX)
    events: list[p.Event] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        events += reader.feed(stream[start:cut])
        start = cut
    assert without_put_started(events) == without_put_started(feed_whole(stream))
    # what is left buffered is at most a line or a body in progress
    assert reader.buffered <= max(p.MAX_LINE, MAX + 2)


BIG = p.BIG_BODY
# (parts are drawn as small descriptions: Hypothesis warns about the repr of big examples)
big_put = st.tuples(
    st.sampled_from([BIG - 1, BIG, BIG + 1, 40_000, 65_535, 65_536]),
    st.integers(0, 255),
    st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"xx", b"\r"]),  # (a bad end too)
)
small_part = st.sampled_from(
    [b"delete 7\r\n", b"put 0 0 1 2\r\nab\r\n", b"stats\r\n", b"\r\n", b"x"]
)


def wire(part: bytes | tuple[int, int, bytes]) -> bytes:
    if isinstance(part, bytes):
        return part
    size, byte, end = part
    return b"put 1 0 60 %d\r\n%b%b" % (size, bytes([byte]) * size, end)


@given(st.lists(big_put | small_part, max_size=6), st.lists(st.integers(0, 10**6), max_size=8))
def test_big_bodies_parse_the_same_however_they_arrive(
    parts: list[bytes | tuple[int, int, bytes]], at: list[int]
) -> None:
    """Big bodies that arrive in pieces are kept as pieces and joined once; the events must
    be those of the same bytes read in one go, each unfinished put announced once."""
    stream = b"".join(map(wire, parts))
    cuts = sorted(n * len(stream) // 10**6 for n in at)
    reader = p.CommandReader(65_535)
    events: list[p.Event] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        events += reader.feed(stream[start:cut])
        start = cut
        assert reader.buffered <= max(p.MAX_LINE, 65_535 + 2)
    assert without_put_started(events) == without_put_started(feed_whole(stream, 65_535))
    started = [i for i, e in enumerate(events) if isinstance(e, p.PutStarted)]
    for i in started[: len(started) - (started[-1:] == [len(events) - 1])]:
        # each announcement is followed by its put's outcome (the last may still be coming)
        nxt = events[i + 1]
        assert isinstance(nxt, p.Put) or (isinstance(nxt, p.Invalid) and nxt.counted)


# The shortcuts for the commands a busy server reads most must agree with the general parser
# on every line they accept, and leave every other line to it.
LIMITS = [2**31, 2**32, 2**64]  # where a shortcut must hand over: INT, U32 and U64 maxima
number_text = st.one_of(
    st.builds(
        lambda zeros, n: b"0" * zeros + str(n).encode(),
        st.integers(0, 2),
        st.one_of(
            st.integers(0, 2**70),
            st.sampled_from(LIMITS).flatmap(lambda m: st.integers(m - 2, m + 1)),
        ),
    ),
    st.from_regex(rb"\A[0-9 +\-x\x00]{0,24}\Z"),
)


@given(
    st.sampled_from([b"delete", b"reserve-with-timeout"]),
    st.sampled_from([b" ", b"  "]),
    number_text,
)
def test_command_shortcuts_agree_with_the_general_parser(
    word: bytes, space: bytes, arg: bytes
) -> None:
    line = word + space + arg
    reader = p.CommandReader(MAX)
    assert reader._line_event(line) == reader._parse_line(line)


def plain_put_numbers(args: bytes) -> tuple[int, int, int, int]:
    """What the put shortcut must accept: four single-spaced ASCII numbers within 32 bits."""
    parts = args.split(b" ")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return (-1, 0, 0, 0)
    nums = tuple(int(part) for part in parts)
    if max(nums) > p.U32_MAX:
        return (-1, 0, 0, 0)
    return nums  # type: ignore[return-value]


@given(
    st.one_of(st.lists(number_text, min_size=4, max_size=4), st.lists(number_text, max_size=6)),
    st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"]),
)
def test_put_shortcut_takes_exactly_the_plain_lines(fields: list[bytes], sep: bytes) -> None:
    line = b"put " + sep.join(fields)
    assert p._put_numbers(line, 4, len(line)) == plain_put_numbers(line[4:])


# --- the client's half -----------------------------------------------------------------------


REPLIES: list[tuple[bytes, list[p.Reply]]] = [
    (b"INSERTED 5\r\n", [p.Reply("INSERTED", ("5",))]),
    (b"RESERVED 5 3\r\nabc\r\n", [p.Reply("RESERVED", ("5", "3"), b"abc")]),
    (b"FOUND 5 4\r\na\r\nb\r\n", [p.Reply("FOUND", ("5", "4"), b"a\r\nb")]),
    (b"OK 4\r\n---\n\r\nTIMED_OUT\r\n", [p.Reply("OK", ("4",), b"---\n"), p.Reply("TIMED_OUT")]),
]


@pytest.mark.parametrize(("data", "expected"), REPLIES)
def test_replies_whole_and_bytewise(data: bytes, expected: list[p.Reply]) -> None:
    assert p.ReplyReader().feed(data) == expected
    reader = p.ReplyReader()
    got: list[p.Reply] = []
    for i in range(len(data)):
        got += reader.feed(data[i : i + 1])
    assert got == expected


def test_reply_body_must_end_in_crlf() -> None:
    with pytest.raises(p.ProtocolError):
        p.ReplyReader().feed(b"RESERVED 1 3\r\nabcXY")


def test_encoders_refuse_values_the_server_would_reject() -> None:
    with pytest.raises(ValueError):
        p.encode_put(b"x", -1, 0, 1)
    with pytest.raises(ValueError):
        p.encode_tube_command("use", "bad name")
    with pytest.raises(ValueError):
        p.encode_reserve(-1)


def test_yaml_round_trip_quotes_strings_that_look_like_numbers() -> None:
    body = p.yaml_dict([("name", "1e3"), ("count", 7), ("draining", False), ("id", p.Bare("ab"))])
    assert body == b'---\nname: "1e3"\ncount: 7\ndraining: false\nid: ab\n'
    assert p.parse_yaml_dict(body) == {"name": "1e3", "count": 7, "draining": False, "id": "ab"}
    assert p.parse_yaml_list(p.yaml_list([b"default", b"x"])) == ["default", "x"]
