"""The server over trio memory streams, on trio's autojump clock: TTRs, delays, pauses and
timeouts take no real time, and every expectation about time is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from beanq import protocol as p
from beanq.dispatch import HostInfo, Hub
from beanq.server import StreamServer
from beanq.tubes import Engine

HOST = HostInfo("test", 1, "host", "os", "arch", "0" * 16, lambda: (0.0, 0.0))


class Peer:
    """A test client: send raw bytes, read whole replies."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.reader = p.ReplyReader()
        self.replies: list[p.Reply] = []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(self) -> p.Reply:
        while not self.replies:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.replies += self.reader.feed(data)
        return self.replies.pop(0)

    async def ask(self, data: bytes) -> p.Reply:
        await self.send(data)
        return await self.reply()

    async def closed(self) -> bool:
        with trio.move_on_after(1):
            return await self.stream.receive_some(1) == b""
        return False


@asynccontextmanager
async def running(max_job_size: int = 65535) -> AsyncIterator[tuple[Hub, Callable[[], Peer]]]:
    hub = Hub(Engine(trio.current_time()), HOST, max_job_size=max_job_size)
    server = StreamServer(hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run_timers)

        def connect() -> Peer:
            client, served = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle, served)
            return Peer(client)

        yield hub, connect
        nursery.cancel_scope.cancel()


async def test_put_reserve_delete() -> None:
    async with running() as (_, connect):
        c = connect()
        assert await c.ask(b"put 5 0 10 3\r\nabc\r\n") == p.Reply("INSERTED", ("1",))
        assert await c.ask(b"reserve\r\n") == p.Reply("RESERVED", ("1", "3"), b"abc")
        assert await c.ask(b"delete 1\r\n") == p.Reply("DELETED")
        assert await c.ask(b"delete 1\r\n") == p.Reply("NOT_FOUND")


async def test_ttr_expiry_releases_the_job(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        a, b = connect(), connect()
        await a.ask(b"put 0 0 2 1\r\nx\r\n")
        await a.ask(b"reserve\r\n")
        start = trio.current_time()
        assert await b.ask(b"reserve\r\n") == p.Reply("RESERVED", ("1", "1"), b"x")
        assert trio.current_time() - start == pytest.approx(2.0)
        stats = p.parse_yaml_dict((await b.ask(b"stats-job 1\r\n")).body or b"")
        assert stats["timeouts"] == 1 and stats["reserves"] == 2


async def test_delayed_job_becomes_ready_on_time(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        c = connect()
        await c.ask(b"put 0 5 10 1\r\nx\r\n")
        assert (await c.ask(b"peek-delayed\r\n")).word == "FOUND"
        assert await c.ask(b"reserve-with-timeout 0\r\n") == p.Reply("TIMED_OUT")
        start = trio.current_time()
        assert (await c.ask(b"reserve\r\n")).word == "RESERVED"
        assert trio.current_time() - start == pytest.approx(5.0)


async def test_reserve_with_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        c = connect()
        start = trio.current_time()
        assert await c.ask(b"reserve-with-timeout 3\r\n") == p.Reply("TIMED_OUT")
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_deadline_soon_while_blocked(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        c = connect()
        await c.ask(b"put 0 0 5 1\r\nx\r\n")
        await c.ask(b"reserve\r\n")
        start = trio.current_time()
        assert await c.ask(b"reserve\r\n") == p.Reply("DEADLINE_SOON")
        assert trio.current_time() - start == pytest.approx(4.0)
        assert await c.ask(b"reserve\r\n") == p.Reply("DEADLINE_SOON")  # at once now
        assert await c.ask(b"touch 1\r\n") == p.Reply("TOUCHED")
        assert await c.ask(b"reserve-with-timeout 1\r\n") == p.Reply("TIMED_OUT")


async def test_pause_tube(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, connect):
        c, w = connect(), connect()
        await c.ask(b"put 0 0 5 1\r\nx\r\n")
        assert await c.ask(b"pause-tube default 10\r\n") == p.Reply("PAUSED")
        stats = p.parse_yaml_dict((await c.ask(b"stats-tube default\r\n")).body or b"")
        assert stats["pause"] == 10 and stats["pause-time-left"] == 10
        start = trio.current_time()
        assert (await w.ask(b"reserve\r\n")).word == "RESERVED"
        assert trio.current_time() - start == pytest.approx(10.0)
        # reserve-job ignores the pause
        await c.ask(b"put 0 0 5 1\r\ny\r\n")
        await c.ask(b"pause-tube default 10\r\n")
        assert (await c.ask(b"reserve-job 2\r\n")).word == "RESERVED"


async def test_half_close_ends_a_blocked_reserve() -> None:
    async with running() as (_, connect):
        c = connect()
        await c.send(b"reserve\r\n")
        await trio.testing.wait_all_tasks_blocked()
        await c.stream.send_eof()
        assert await c.reply() == p.Reply("TIMED_OUT")
        assert await c.closed()


async def test_commands_behind_a_blocked_reserve_wait_their_turn() -> None:
    async with running() as (_, connect):
        w, producer = connect(), connect()
        await w.send(b"reserve\r\nlist-tube-used\r\n")
        await trio.testing.wait_all_tasks_blocked()
        assert not w.replies
        await producer.ask(b"put 0 0 5 1\r\nx\r\n")
        assert (await w.reply()).word == "RESERVED"
        assert await w.reply() == p.Reply("USING", ("default",))


async def test_disconnect_releases_reserved_jobs() -> None:
    async with running() as (hub, connect):
        a, b = connect(), connect()
        await a.ask(b"put 0 0 100 1\r\nx\r\n")
        await a.ask(b"reserve\r\n")
        await b.send(b"reserve\r\n")
        await a.stream.aclose()
        assert (await b.reply()).word == "RESERVED"
        assert hub.engine.connections == 1


async def test_quit_answers_what_came_before_then_closes() -> None:
    async with running() as (_, connect):
        c = connect()
        await c.send(b"use foo\r\nquit\r\nstats\r\n")
        assert await c.reply() == p.Reply("USING", ("foo",))
        assert await c.closed()


async def test_drain_mode_refuses_puts() -> None:
    async with running() as (hub, connect):
        c = connect()
        hub.draining = True
        assert await c.ask(b"put 0 0 5 1\r\nx\r\n") == p.Reply("DRAINING")
        stats = p.parse_yaml_dict((await c.ask(b"stats\r\n")).body or b"")
        assert stats["draining"] is True and stats["cmd-put"] == 1


async def test_job_too_big_keeps_the_connection() -> None:
    async with running(max_job_size=10) as (_, connect):
        c = connect()
        await c.send(
            b"put 0 0 5 11\r\n" + b"x" * 11 + b"\r\nput 0 0 5 10\r\n" + b"y" * 10 + b"\r\n"
        )
        assert await c.reply() == p.Reply("JOB_TOO_BIG")
        assert await c.reply() == p.Reply("INSERTED", ("1",))


async def test_a_bug_in_one_command_is_internal_error_not_a_crash() -> None:
    async with running() as (hub, connect):
        c = connect()

        def broken(job: object) -> int:
            raise RuntimeError("boom")

        hub.job_file = broken  # stats-job asks it for the job's binlog file
        assert (await c.ask(b"put 0 0 5 1\r\nx\r\n")).word == "INSERTED"
        assert await c.ask(b"stats-job 1\r\n") == p.Reply("INTERNAL_ERROR")
        assert await c.ask(b"list-tube-used\r\n") == p.Reply("USING", ("default",))


async def test_stats_counts_and_fields_in_server_order() -> None:
    async with running() as (_, connect):
        c = connect()
        await c.ask(b"put 0 0 5 1\r\nx\r\n")
        await c.ask(b"put 2000 0 5 1\r\ny\r\n")
        await c.ask(b"reserve\r\n")
        body = (await c.ask(b"stats\r\n")).body or b""
        stats = p.parse_yaml_dict(body)
        keys = list(stats)
        assert keys[:6] == [
            "current-jobs-urgent",
            "current-jobs-ready",
            "current-jobs-reserved",
            "current-jobs-delayed",
            "current-jobs-buried",
            "cmd-put",
        ]
        assert keys[-4:] == ["id", "hostname", "os", "platform"]
        assert stats["current-jobs-ready"] == 1
        assert stats["current-jobs-reserved"] == 1
        assert stats["current-jobs-urgent"] == 0
        assert stats["cmd-put"] == 2 and stats["cmd-reserve"] == 1
        assert stats["current-producers"] == 1 and stats["current-workers"] == 1
        assert b'hostname: "host"' in body


async def test_output_cap_holds_commands_until_the_replies_are_read() -> None:
    """Over the per-connection output cap, commands wait; once the client reads, they run."""
    async with running() as (hub, connect):
        hub.output_limit = 10_000
        c = connect()
        await c.ask(b"put 0 0 5 4000\r\n" + b"x" * 4000 + b"\r\n")
        await c.send(b"peek 1\r\n" * 20)
        with trio.fail_after(5):
            for _ in range(20):
                assert (await c.reply()).word == "FOUND"
            assert await c.ask(b"list-tube-used\r\n") == p.Reply("USING", ("default",))
