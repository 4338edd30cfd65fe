"""The beanq-schedule-* commands through the server, byte for byte (issue 17), and schedules
firing on trio's autojump clock: a job put by a schedule is served to a waiting reserve."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import trio

from beanq import protocol as p
from tests.test_server_streams import Peer, running

EPOCH = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def add_line(name: bytes, definition: bytes) -> bytes:
    return b"beanq-schedule-add %b %d\r\n%b\r\n" % (name, len(definition), definition)


async def ask_json(c: Peer, line: bytes) -> object:
    reply = await c.ask(line)
    assert reply.word == "OK" and reply.body is not None, reply
    assert reply.args == (str(len(reply.body)),)
    return json.loads(reply.body)


async def test_add_replace_show_list_pause_resume_rm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (hub, connect):
        hub.engine.wall_offset = EPOCH - trio.current_time()
        c = connect()
        d = b'{"tube":"mail","every":60,"body":"tick","pri":5}'
        assert await c.ask(add_line(b"digest", d)) == p.Reply("ADDED")
        assert await c.ask(add_line(b"digest", d)) == p.Reply("REPLACED")
        cron = b'{"tube":"reports","cron":"0 6 * * 1-5","tz":"Europe/Paris"}'
        assert await c.ask(add_line(b"daily", cron)) == p.Reply("ADDED")
        shown = await ask_json(c, b"beanq-schedule-show digest\r\n")
        assert shown == {
            "name": "digest",
            "tube": "mail",
            "every": 60.0,
            "start": EPOCH,
            "body": "tick",
            "pri": 5,
            "ttr": 60,
            "delay": 0,
            "overlap": "skip",
            "catchup": "one",
            "grace": 3600.0,
            "paused": False,
            "next_fire": EPOCH + 60,
            "last_fire": None,
            "fired": 0,
            "skipped": 0,
            "missed": 0,
            "last_job": 0,
            "last_job_alive": False,
            "late_max": 0.0,
        }
        listed = await ask_json(c, b"beanq-schedule-list\r\n")
        assert isinstance(listed, list) and [s["name"] for s in listed] == ["daily", "digest"]
        daily = listed[0]
        # Monday 2026-06-01 06:00 in Paris is 04:00 UTC
        assert daily["next_fire"] == EPOCH + 4 * 3600 and daily["tz"] == "Europe/Paris"
        assert await c.ask(b"beanq-schedule-pause digest\r\n") == p.Reply("PAUSED")
        shown = await ask_json(c, b"beanq-schedule-show digest\r\n")
        assert isinstance(shown, dict) and shown["paused"] and shown["next_fire"] is None
        assert await c.ask(b"beanq-schedule-resume digest\r\n") == p.Reply("RESUMED")
        assert await c.ask(b"beanq-schedule-rm digest\r\n") == p.Reply("DELETED")
        for word in (b"rm", b"pause", b"resume", b"show"):
            line = b"beanq-schedule-%b digest\r\n" % word
            assert await c.ask(line) == p.Reply("NOT_FOUND")
        assert await c.ask(b"beanq-schedule-rm daily\r\n") == p.Reply("DELETED")
        assert await ask_json(c, b"beanq-schedule-list\r\n") == []


async def test_errors() -> None:
    async with running(max_job_size=100) as (_, connect):
        c = connect()
        bad = [
            (b"beanq-schedule-add\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-add x\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-add -x 2\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-add x y\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-rm\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-rm a b\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-list x\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-show\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-rm " + b"n" * 151 + b"\r\n", p.Reply("BAD_FORMAT")),
            (b"beanq-schedule-add " + b"n" * 151 + b" 2\r\n", p.Reply("BAD_FORMAT")),
        ]
        for line, reply in bad:
            assert await c.ask(line) == reply, line
        tz = b'{"tube":"t","cron":"* * * * *","tz":"Mars/Olympus"}'
        assert await c.ask(add_line(b"x", tz)) == p.Reply(
            "BAD_SCHEDULE", ("unknown", "time", "zone", "'Mars/Olympus'")
        )
        cron = b'{"tube":"t","cron":"0 25 * * *"}'
        reply = await c.ask(add_line(b"x", cron))
        assert reply.word == "BAD_SCHEDULE" and reply.args[:3] == ("bad", "cron", "expression")
        assert (await c.ask(add_line(b"x", b"not json"))).word == "BAD_SCHEDULE"
        assert await c.ask(add_line(b"x", b"{" + b" " * 100 + b"}")) == p.Reply("JOB_TOO_BIG")
        assert await c.ask(b"beanq-schedule-add x 2\r\n{}XX") == p.Reply("EXPECTED_CRLF")
        assert await ask_json(c, b"beanq-schedule-list\r\n") == []
        # the connection still works, and no put was counted or id used by any of it
        assert await c.ask(b"put 0 0 1 1\r\nx\r\n") == p.Reply("INSERTED", ("1",))


async def test_a_definition_split_across_reads_is_not_a_put() -> None:
    async with running() as (hub, connect):
        c = connect()
        d = b'{"tube":"t","every":5}'
        await c.send(b"beanq-schedule-add s %d\r\n%b" % (len(d), d[:7]))
        await trio.testing.wait_all_tasks_blocked()
        await c.send(d[7:] + b"\r\n")
        assert await c.reply() == p.Reply("ADDED")
        assert hub.engine.commands.get("put", 0) == 0
        assert await c.ask(b"put 0 0 1 1\r\nx\r\n") == p.Reply("INSERTED", ("1",))


async def test_fires_on_time_to_a_waiting_reserve(autojump_clock: trio.testing.MockClock) -> None:
    """A schedule every 10 minutes for a day: each job reaches the worker waiting in
    ``reserve`` at its time (autojump: a day of trio time in milliseconds)."""
    async with running() as (hub, connect):
        start = trio.current_time()
        hub.engine.wall_offset = EPOCH - start
        admin, worker = connect(), connect()
        d = b'{"tube":"default","every":600,"body":"go"}'
        assert await admin.ask(add_line(b"ten", d)) == p.Reply("ADDED")
        for k in range(1, 145):
            reply = await worker.ask(b"reserve\r\n")
            assert reply.word == "RESERVED" and reply.body == b"go"
            assert trio.current_time() - start == 600 * k
            assert await worker.ask(b"delete %s\r\n" % reply.args[0].encode()) == p.Reply("DELETED")
        shown = await ask_json(admin, b"beanq-schedule-show ten\r\n")
        assert isinstance(shown, dict)
        assert (shown["fired"], shown["skipped"], shown["missed"]) == (144, 0, 0)
        assert shown["late_max"] == 0  # (each fire at its time, on trio's clock)


async def test_overlap_skip_holds_back_while_the_job_lives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (hub, connect):
        hub.engine.wall_offset = EPOCH - trio.current_time()
        c = connect()
        assert await c.ask(add_line(b"s", b'{"tube":"default","every":1}')) == p.Reply("ADDED")
        reply = await c.ask(b"reserve\r\n")
        await trio.sleep(5.5)  # held: five fires skipped
        assert await c.ask(b"delete %s\r\n" % reply.args[0].encode()) == p.Reply("DELETED")
        await trio.sleep(1)
        shown = await ask_json(c, b"beanq-schedule-show s\r\n")
        assert isinstance(shown, dict) and (shown["fired"], shown["skipped"]) == (2, 5)
        stats = p.parse_yaml_dict((await c.ask(b"stats\r\n")).body or b"")
        assert stats["current-jobs-ready"] == 1 and stats["total-jobs"] == 2
