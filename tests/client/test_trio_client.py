"""The trio client: every method against beanq and beanstalkd, tasks sharing one connection,
cancellation, and time-dependent behaviour on beanq's in-process server with the autojump
clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from beanq_client import (
    JSON,
    AsyncClient,
    BadFormatError,
    BeanstalkConnectionError,
    DeadlineSoonError,
    ExpectedCrlfError,
    Job,
    JobTooBigError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    PipelineError,
    TimedOutError,
    UnknownCommandError,
)

from tests.client.conftest import MemoryServer, Server, memory_server


async def test_every_method(server: Server, tube: str) -> None:
    async with AsyncClient(server.url(tube), timeout=10) as c:
        assert await c.using() == tube and await c.watching() == [tube]
        low = await c.put(b"low", priority=10)
        high = await c.put(b"high", priority=5, ttr=30)
        job = await c.reserve(timeout=1)
        assert job == Job(high, b"high")
        await c.touch(job)
        await c.release(job)
        assert (await c.stats_job(high))["pri"] == 5
        job = await c.reserve_job(high)
        await c.bury(job)
        assert await c.peek_buried() == Job(high, b"high")
        assert await c.kick(1) == 1
        assert await c.peek_ready() == Job(high, b"high")
        await c.delete(high)
        later = await c.put(b"later", delay=100)
        assert await c.peek_delayed() == Job(later, b"later")
        await c.kick_job(later)
        assert await c.peek(later) == Job(later, b"later")
        other = tube + "-b"
        assert await c.watch(other) == 2
        assert await c.ignore(other) == 1
        with pytest.raises(NotIgnoredError):
            await c.ignore(tube)
        assert await c.use(other) == other
        assert other in await c.tubes()
        await c.use(tube)
        await c.pause_tube(tube, 100)
        assert (await c.stats_tube(tube))["pause"] == 100
        await c.pause_tube(tube, 0)
        stats = await c.stats()
        assert stats["pid"] == server.proc.pid and isinstance(stats["rusage-stime"], float)
        for job_id in (low, later):
            job = await c.reserve(timeout=1)
            assert job.id == job_id
            await c.delete(job)
        with pytest.raises(TimedOutError):
            await c.reserve(timeout=0)
        with pytest.raises(NotFoundError):
            await c.delete(low)


async def test_error_replies(server: Server, tube: str) -> None:
    async with AsyncClient(server.url(tube)) as c:
        with pytest.raises(JobTooBigError):
            await c.put(b"x" * 65536)
        with pytest.raises(ExpectedCrlfError):
            await c.execute_raw(b"put 0 0 1 1\r\nxyz")
        with pytest.raises(BadFormatError):
            await c.execute_raw(b"kick x\r\n")
        with pytest.raises(UnknownCommandError):
            await c.execute_raw(b"frobnicate\r\n")
        await c.put(b"short", ttr=1)
        job = await c.reserve(timeout=1)
        with pytest.raises(DeadlineSoonError):
            await c.reserve(timeout=5)
        await c.delete(job)


async def test_tasks_share_one_connection_and_get_their_own_replies(
    server: Server, tube: str
) -> None:
    async with AsyncClient(server.url(tube), encoding="ascii") as c:
        results: dict[str, int] = {}

        async def produce(n: int) -> None:
            body = f"body-{n}"
            results[body] = await c.put(body)
            assert (await c.stats_tube(tube))["name"] == tube

        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(produce, n)
        assert len(set(results.values())) == 100
        for body, job_id in results.items():
            assert (await c.peek(job_id)).body == body  # every task got its own reply


async def test_async_pipeline_is_one_write(server: Server, tube: str) -> None:
    writes: list[bytes] = []

    async def connector() -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(server.host, server.port)
        real = stream.send_all

        async def spy(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            await real(data)

        stream.send_all = spy  # type: ignore[method-assign]
        return stream

    async with AsyncClient(server.url(tube), connector=connector, serializer=JSON) as c:
        writes.clear()  # the tube set-up on connect
        async with c.pipeline() as p:
            for n in range(20):
                p.put({"n": n})
        assert len(writes) == 1 and writes[0].count(b"put ") == 20
        assert (await c.peek(p.results[7])).body == {"n": 7}
        bad = c.pipeline()
        bad.put("x" * 70000)
        with pytest.raises(PipelineError):
            await bad.execute()


async def test_cancelled_command_gives_up_its_reply_and_keeps_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as srv:
        c = AsyncClient(connector=srv.connect)
        producer = AsyncClient(connector=srv.connect)
        got: list[Job[bytes]] = []

        async def consume() -> None:
            got.append(await c.reserve())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            # stats is queued behind the blocked reserve; give up on it after 5 s.
            with trio.move_on_after(5) as scope:
                await c.stats()
            assert scope.cancelled_caught
            await producer.put(b"job")
        assert got == [Job(1, b"job")]
        # The abandoned stats reply was read and dropped; the next reply is ours.
        assert (await c.stats_job(1))["state"] == "reserved"
        assert srv.connections == 2
        await c.close()
        await producer.close()


async def test_cancelled_reserve_closes_the_connection_so_no_job_is_stranded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as srv:
        c = AsyncClient(connector=srv.connect)
        with trio.move_on_after(3):
            await c.reserve()
        assert not c.connected
        with pytest.raises(BeanstalkConnectionError) as info:
            await c.stats()  # reconnect=False
        assert not info.value.sent
        other = AsyncClient(connector=srv.connect)
        job_id = await other.put(b"job")
        await trio.sleep(0.1)
        # Nobody holds it: the cancelled reserve's connection is gone.
        assert (await other.stats_job(job_id))["state"] == "ready"
        assert (await other.reserve(timeout=0)).id == job_id
        await other.close()


async def test_time_on_the_autojump_clock(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, AsyncClient(connector=srv.connect) as c:
        await c.put(b"x", ttr=5)
        await c.reserve()
        start = trio.current_time()
        with pytest.raises(DeadlineSoonError):
            await c.reserve()
        assert trio.current_time() - start == pytest.approx(4.0)
        await c.delete(1)
        start = trio.current_time()
        with pytest.raises(TimedOutError):
            await c.reserve(timeout=2.5)  # rounded up to 3 s
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_out_of_memory(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, AsyncClient(connector=srv.connect) as c:
        srv.hub.max_jobs = 1
        await c.put(b"one")
        with pytest.raises(OutOfMemoryError):
            await c.put(b"two")


async def test_server_closing_mid_reply_fails_every_waiting_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server_side: list[trio.abc.Stream] = []

    async def connector() -> trio.abc.Stream:
        client, served = trio.testing.memory_stream_pair()
        server_side.append(served)
        return client

    c = AsyncClient(connector=connector)
    errors: list[BeanstalkConnectionError] = []

    async def ask() -> None:
        try:
            await c.stats()
        except BeanstalkConnectionError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        await server_side[0].send_all(b"OK 5\r\n---")  # half a reply, then hang up
        await server_side[0].aclose()
    assert len(errors) == 3 and all(e.sent for e in errors)
    assert not c.connected


async def test_memory_server_fixture_counts(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv:
        assert isinstance(srv, MemoryServer)
        async with AsyncClient("beanstalk://ignored:1/q", connector=srv.connect) as c:
            assert await c.watching() == ["q"]
        assert srv.connections == 1
