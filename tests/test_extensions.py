"""The beanq-* commands (issue 15) through the server, byte for byte: their effects, their
errors, and what they must leave alone (counters, the standard commands' replies)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from beanq import protocol as p
from tests.test_server_streams import Peer, running


def ids(reply: p.Reply) -> list[int]:
    assert reply.word == "OK" and reply.body is not None
    return [int(x) for x in p.parse_yaml_list(reply.body)]


async def put(c: Peer, body: bytes = b"x", pri: int = 0, delay: int = 0, ttr: int = 60) -> int:
    reply = await c.ask(b"put %d %d %d %d\r\n%b\r\n" % (pri, delay, ttr, len(body), body))
    assert reply.word == "INSERTED"
    return int(reply.args[0])


async def stats_job(c: Peer, job_id: int) -> dict[str, int | bool | str]:
    return p.parse_yaml_dict((await c.ask(b"stats-job %d\r\n" % job_id)).body or b"")


async def test_capabilities_name_every_extension() -> None:
    async with running() as (_, connect):
        c = connect()
        await c.send(b"beanq-capabilities\r\n")
        body = b"---\n- flush\n- list\n- move\n- reserve-batch\n- put-unique\n- schedules\n"
        assert await c.reply() == p.Reply("OK", (str(len(body)),), body)


async def test_flush_each_state_and_never_reserved_jobs() -> None:
    async with running() as (hub, connect):
        c = connect()
        ready = [await put(c) for _ in range(3)]
        delayed = await put(c, delay=100)
        buried = await put(c)
        held = await put(c)
        assert (await c.ask(b"reserve-job %d\r\n" % buried)).word == "RESERVED"
        assert await c.ask(b"bury %d 0\r\n" % buried) == p.Reply("BURIED")
        assert (await c.ask(b"reserve-job %d\r\n" % held)).word == "RESERVED"
        assert await c.ask(b"beanq-flush default delayed\r\n") == p.Reply("FLUSHED", ("1",))
        assert await c.ask(b"peek %d\r\n" % delayed) == p.Reply("NOT_FOUND")
        assert await c.ask(b"beanq-flush default all\r\n") == p.Reply("FLUSHED", ("4",))
        assert await c.ask(b"beanq-flush default all\r\n") == p.Reply("FLUSHED", ("0",))
        assert await c.ask(b"beanq-flush nowhere ready\r\n") == p.Reply("FLUSHED", ("0",))
        for job_id in ready:
            assert await c.ask(b"peek %d\r\n" % job_id) == p.Reply("NOT_FOUND")
        assert (await c.ask(b"peek %d\r\n" % held)).word == "FOUND"
        stats = p.parse_yaml_dict((await c.ask(b"stats\r\n")).body or b"")
        assert stats["current-jobs-ready"] == stats["current-jobs-buried"] == 0
        assert stats["current-jobs-reserved"] == 1 and stats["cmd-delete"] == 0
        assert list(hub.engine.jobs) == [held]


async def test_flush_frees_a_tube_nothing_else_holds() -> None:
    async with running() as (hub, connect):
        c = connect()
        await c.ask(b"use gone\r\n")
        await put(c)
        await c.ask(b"use default\r\n")
        assert b"gone" in hub.engine.tubes
        assert await c.ask(b"beanq-flush gone ready\r\n") == p.Reply("FLUSHED", ("1",))
        assert b"gone" not in hub.engine.tubes


async def test_list_pages_by_id_without_touching_counters() -> None:
    async with running() as (_, connect):
        c = connect()
        jobs = [await put(c, pri=10 - i % 4) for i in range(25)]
        before = await stats_job(c, jobs[0])
        assert ids(await c.ask(b"beanq-list default ready 0 10\r\n")) == jobs[:10]
        assert ids(await c.ask(b"beanq-list default ready %d 10\r\n" % jobs[9])) == jobs[10:20]
        assert ids(await c.ask(b"beanq-list default ready %d 10\r\n" % jobs[19])) == jobs[20:]
        assert ids(await c.ask(b"beanq-list default ready %d 10\r\n" % jobs[-1])) == []
        assert await c.ask(b"beanq-list default ready 999 1\r\n") == p.Reply("OK", ("4",), b"---\n")
        assert ids(await c.ask(b"beanq-list nowhere ready 0 10\r\n")) == []
        reserved = await c.ask(b"reserve\r\n")
        got = int(reserved.args[0])
        assert ids(await c.ask(b"beanq-list default reserved 0 1000\r\n")) == [got]
        assert got not in ids(await c.ask(b"beanq-list default ready 0 1000\r\n"))
        assert await stats_job(c, jobs[0]) == before | {"age": before["age"]}
        stats = p.parse_yaml_dict((await c.ask(b"stats\r\n")).body or b"")
        assert stats["cmd-reserve"] == 1  # beanq-list reserved nothing


async def test_list_delayed_and_buried() -> None:
    async with running() as (_, connect):
        c = connect()
        late = [await put(c, delay=50) for _ in range(3)]
        now = await put(c)
        assert (await c.ask(b"reserve\r\n")).word == "RESERVED"
        assert await c.ask(b"bury %d 0\r\n" % now) == p.Reply("BURIED")
        assert ids(await c.ask(b"beanq-list default delayed 0 2\r\n")) == late[:2]
        assert ids(await c.ask(b"beanq-list default buried 0 2\r\n")) == [now]


async def test_move_keeps_the_job_and_wakes_a_waiting_reserve() -> None:
    async with running() as (_, connect):
        c, w = connect(), connect()
        first = await put(c, b"a", pri=7, ttr=30)
        await put(c, b"b", pri=9)
        await w.ask(b"watch there\r\n")
        await w.ask(b"ignore default\r\n")
        await w.send(b"reserve\r\n")
        assert await c.ask(b"beanq-move default there ready 1\r\n") == p.Reply("MOVED", ("1",))
        assert await w.reply() == p.Reply("RESERVED", (str(first), "1"), b"a")
        job = await stats_job(c, first)
        assert (job["tube"], job["pri"], job["ttr"], job["reserves"]) == ("there", 7, 30, 1)
        assert await c.ask(b"beanq-move default there ready 0\r\n") == p.Reply("MOVED", ("0",))
        assert await c.ask(b"beanq-move default default ready 5\r\n") == p.Reply("MOVED", ("0",))
        assert await c.ask(b"beanq-move nowhere there ready 5\r\n") == p.Reply("MOVED", ("0",))


async def test_move_keeps_delay_and_buried_state(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        c = connect()
        late = await put(c, b"late", delay=10)
        dead = await put(c, b"dead")
        assert (await c.ask(b"reserve\r\n")).word == "RESERVED"
        assert await c.ask(b"bury %d 5\r\n" % dead) == p.Reply("BURIED")
        await trio.sleep(4)
        assert await c.ask(b"beanq-move default t2 delayed 10\r\n") == p.Reply("MOVED", ("1",))
        assert await c.ask(b"beanq-move default t2 buried 10\r\n") == p.Reply("MOVED", ("1",))
        job = await stats_job(c, late)
        assert (job["tube"], job["state"], job["time-left"]) == ("t2", "delayed", 5)
        job = await stats_job(c, dead)
        assert (job["tube"], job["state"], job["buries"], job["pri"]) == ("t2", "buried", 1, 5)
        await c.ask(b"use t2\r\n")
        assert (await c.ask(b"peek-buried\r\n")).args[0] == str(dead)
        await c.ask(b"watch t2\r\n")
        start = trio.current_time()
        assert (await c.ask(b"reserve\r\n")).args[0] == str(late)
        assert trio.current_time() - start == pytest.approx(6.0)


async def test_reserve_batch_at_once_and_after_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (_, connect):
        c, w = connect(), connect()
        jobs = [await put(c, b"%d" % i, pri=5 - i) for i in range(4)]
        await c.send(b"beanq-reserve-batch 3 0\r\n")
        assert await c.reply() == p.Reply("RESERVED_BATCH", ("3",))
        for job_id in reversed(jobs[1:]):  # the order single reserves give: by priority
            assert (await c.reply()).args[0] == str(job_id)
        await c.send(b"beanq-reserve-batch 1000 0\r\n")
        assert await c.reply() == p.Reply("RESERVED_BATCH", ("1",))
        assert await c.reply() == p.Reply("RESERVED", (str(jobs[0]), "1"), b"0")
        assert await c.ask(b"beanq-reserve-batch 5 0\r\n") == p.Reply("TIMED_OUT")
        for job_id in jobs:
            assert (await stats_job(c, job_id))["reserves"] == 1
        start = trio.current_time()
        assert await w.ask(b"beanq-reserve-batch 5 2\r\n") == p.Reply("TIMED_OUT")
        assert trio.current_time() - start == pytest.approx(2.0)
        await w.send(b"beanq-reserve-batch 5 100\r\n")
        await trio.sleep(3)
        await c.send(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\n")
        assert (await c.reply()).word == (await c.reply()).word == "INSERTED"
        # the first put woke the batch; the second came in the same read, so it may be taken
        assert (await w.reply()).word == "RESERVED_BATCH"


async def test_reserve_batch_deadline_soon(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        c = connect()
        await put(c, ttr=3)
        await c.send(b"beanq-reserve-batch 2 0\r\n")
        assert await c.reply() == p.Reply("RESERVED_BATCH", ("1",))
        await c.reply()
        start = trio.current_time()
        assert await c.ask(b"beanq-reserve-batch 2 100\r\n") == p.Reply("DEADLINE_SOON")
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_put_unique_inserts_once_per_tube_until_deleted() -> None:
    async with running() as (_, connect):
        c = connect()
        first = await c.ask(b"beanq-put-unique k 1 0 60 3\r\none\r\n")
        assert first.word == "INSERTED"
        job_id = first.args[0]
        assert await c.ask(b"beanq-put-unique k 2 0 60 3\r\ntwo\r\n") == p.Reply(
            "EXISTS", (job_id,)
        )
        assert (await c.ask(b"reserve\r\n")).args[0] == job_id  # reserved: still held
        assert await c.ask(b"beanq-put-unique k 2 0 60 3\r\ntwo\r\n") == p.Reply(
            "EXISTS", (job_id,)
        )
        await c.ask(b"use other\r\n")
        assert (await c.ask(b"beanq-put-unique k 0 0 60 1\r\nx\r\n")).word == "INSERTED"
        await c.ask(b"use default\r\n")
        assert await c.ask(b"delete %b\r\n" % job_id.encode()) == p.Reply("DELETED")
        again = await c.ask(b"beanq-put-unique k 0 0 60 5\r\nagain\r\n")
        assert again.word == "INSERTED" and again.args[0] != job_id
        assert (await c.ask(b"peek %b\r\n" % again.args[0].encode())).body == b"again"
        assert await c.ask(b"beanq-flush default ready\r\n") == p.Reply("FLUSHED", ("1",))
        assert (await c.ask(b"beanq-put-unique k 0 0 60 1\r\nz\r\n")).word == "INSERTED"


async def test_put_unique_errors_as_put() -> None:
    async with running(max_job_size=10) as (hub, connect):
        c = connect()
        assert await c.ask(b"beanq-put-unique k 0 0 60 11\r\n%b\r\n" % (b"x" * 11)) == p.Reply(
            "JOB_TOO_BIG"
        )
        assert await c.ask(b"beanq-put-unique k 0 0 60 1\r\nxyz") == p.Reply("EXPECTED_CRLF")
        hub.draining = True
        assert await c.ask(b"beanq-put-unique k 0 0 60 1\r\nx\r\n") == p.Reply("DRAINING")
        hub.draining = False
        hub.max_jobs = 0
        assert await c.ask(b"beanq-put-unique k 0 0 60 1\r\nx\r\n") == p.Reply("OUT_OF_MEMORY")
        hub.max_jobs = None
        key = b"k" * 150
        assert (await c.ask(b"beanq-put-unique %b 0 0 60 1\r\nx\r\n" % key)).word == "INSERTED"
        assert await c.ask(b"beanq-put-unique %bk 0 0 60 1\r\n" % key) == p.Reply("BAD_FORMAT")
        assert not hub.engine.find_unique(
            hub.connections[next(iter(hub.connections))].session, key + b"k"
        )


BAD = [
    b"beanq-flush",
    b"beanq-flush default",
    b"beanq-flush default reserved",
    b"beanq-flush default ready x",
    b"beanq-flush -bad ready",
    b"beanq-flush default  ready",
    b"beanq-list default ready 0",
    b"beanq-list default ready 0 0",
    b"beanq-list default ready 0 1001",
    b"beanq-list default all 0 10",
    b"beanq-list default ready -1 10",
    b"beanq-list default ready 18446744073709551616 10",
    b"beanq-move default x reserved 1",
    b"beanq-move default x ready",
    b"beanq-move default x ready 4294967296",
    b"beanq-reserve-batch 0 1",
    b"beanq-reserve-batch 1001 1",
    b"beanq-reserve-batch 5",
    b"beanq-reserve-batch 5 2147483648",
    b"beanq-capabilities now",
    b"beanq-put-unique k 0 0 60",
    b"beanq-put-unique k! 0 0 60 1",
    b"beanq-put-unique k 0 0 4294967296 1",
]


@pytest.mark.parametrize("line", BAD)
async def test_bad_arguments_get_bad_format(line: bytes) -> None:
    async with running() as (_, connect):
        c = connect()
        assert await c.ask(line + b"\r\n") == p.Reply("BAD_FORMAT")
        assert await c.ask(b"list-tube-used\r\n") == p.Reply("USING", ("default",))


@pytest.mark.parametrize(
    "line", [b"beanq-flus default ready", b"beanq-lists", b"beanq-", b"beanq-Flush default all"]
)
async def test_misspelt_names_are_unknown(line: bytes) -> None:
    async with running() as (_, connect):
        c = connect()
        assert await c.ask(line + b"\r\n") == p.Reply("UNKNOWN_COMMAND")


async def test_no_new_keys_in_stats() -> None:
    async with running() as (_, connect):
        c = connect()
        job_id = await put(c)
        await c.ask(b"beanq-flush default buried\r\n")
        await c.ask(b"beanq-list default ready 0 5\r\n")
        stats = p.parse_yaml_dict((await c.ask(b"stats\r\n")).body or b"")
        assert not any("beanq" in k or "flush" in k or "unique" in k for k in stats)
        assert len(await stats_job(c, job_id)) == 14


# --- the codec --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(max_size=300),
    key=st.text(alphabet="abcXYZ09-+/;.$_()", min_size=1, max_size=150),
    cuts=st.lists(st.integers(0, 600), max_size=4),
)
def test_put_unique_split_anywhere_parses_as_whole(body: bytes, key: str, cuts: list[int]) -> None:
    data = (
        b"use t\r\n"
        + p.encode_put_unique(key, body, 1, 2, 3)
        + b"beanq-list t ready 0 5\r\n"
        + p.encode_put(b"after", 0, 0, 1)
    )
    whole = p.CommandReader().feed(data)
    assert whole[1] == p.PutUnique(key.encode(), 1, 2, 3, body)
    assert whole[2] == p.ListJobs(b"t", "ready", 0, 5)
    assert len(whole) == 4
    reader = p.CommandReader()
    events: list[p.Event] = []
    last = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        events += reader.feed(data[last:cut])
        last = cut
    events += reader.feed(data[last:])
    assert [e for e in events if not isinstance(e, p.PutStarted)] == whole


def test_encoders_refuse_what_the_server_would() -> None:
    with pytest.raises(ValueError):
        p.encode_put_unique("", b"x", 0, 0, 1)
    with pytest.raises(ValueError):
        p.encode_put_unique("k" * 151, b"x", 0, 0, 1)
    with pytest.raises(ValueError):
        p.encode_list("t", "ready", 0, 1001)
    with pytest.raises(ValueError):
        p.encode_flush("t", "reserved")
    with pytest.raises(ValueError):
        p.encode_move("a", "b", "all", 1)
    with pytest.raises(ValueError):
        p.encode_reserve_batch(0, 1)
    assert p.encode_reserve_batch(2, 3) == b"beanq-reserve-batch 2 3\r\n"
    assert p.encode_move("a", "b", "buried", 7) == b"beanq-move a b buried 7\r\n"
    assert p.encode_list("a", "reserved", 9, 1) == b"beanq-list a reserved 9 1\r\n"
    assert p.encode_flush("a", "all") == b"beanq-flush a all\r\n"
