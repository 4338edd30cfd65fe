"""Schedules from the client side (issue 17): Client and AsyncClient methods, pools (declared
on the server the name hashes to), and ``@worker.periodic`` end to end, on the trio worker with
the autojump clock and on the thread worker against the real process."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from beanq_client import AsyncClient, AsyncPool, AsyncWorker, Client, NotFoundError, Pool, Worker
from beanq_client.errors import BadScheduleError

from tests.client.conftest import Server, memory_server
from tests.servers import spawn_beanq


@pytest.fixture
def client(beanq_server: Server, tube: str) -> Iterator[Client[bytes]]:
    with Client(beanq_server.url(tube), timeout=10) as c:
        yield c


def test_client_methods(client: Client[bytes], tube: str) -> None:
    name = tube + "-sched"
    assert client.schedule_add(name, tube, b"body", cron="0 3 * * *", tz="Asia/Tokyo") is False
    assert client.schedule_add(name, tube, b"\xff", every=3600, priority=9, catchup="all")
    shown = client.schedule(name)
    assert shown["every"] == 3600 and shown["pri"] == 9 and shown["catchup"] == "all"
    assert shown["body_b64"] == "/w==" and "cron" not in shown
    assert name in [s["name"] for s in client.schedules()]
    client.schedule_pause(name)
    assert client.schedule(name)["paused"] is True
    client.schedule_resume(name)
    assert client.schedule(name)["next_fire"] is not None
    client.schedule_remove(name)
    with pytest.raises(NotFoundError):
        client.schedule_remove(name)
    with pytest.raises(BadScheduleError, match="unknown time zone 'Nowhere/Land'"):
        client.schedule_add(name, tube, b"", cron="* * * * *", tz="Nowhere/Land")
    with pytest.raises(ValueError, match="one of cron and every"):
        client.schedule_add(name, tube, b"")
    with pytest.raises(NotFoundError):
        client.schedule(name)


async def test_async_client_and_periodic_trio_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A worker's @periodic handler runs every 5 minutes for a day of trio time; a second
    copy of the worker declaring the same schedule replaces it (it still fires once)."""
    async with memory_server() as srv:
        srv.hub.engine.wall_offset = 1_780_000_000.0 - trio.current_time()

        def make() -> AsyncWorker:
            c: AsyncClient[bytes] = AsyncClient("beanstalk://memory:1/jobs", connector=srv.connect)
            return AsyncWorker(c, "jobs", reserve_timeout=None)

        calls: list[tuple[float, str]] = []
        workers = [make(), make()]
        for w in workers:

            @w.periodic("*/5 * * * *", name="report", kwargs={"kind": "daily"})
            async def report(kind: str) -> None:
                calls.append((trio.current_time(), kind))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for w in workers:
                await nursery.start(
                    lambda task_status, w=w: w.run(handle_signals=False, task_status=task_status)
                )
            await trio.sleep(86400 + 1)
            for w in workers:
                w.stop()
        times = [t - start for t, _ in calls]
        assert len(calls) == 288 and {k for _, k in calls} == {"daily"}
        assert times[0] == pytest.approx(300 - (1_780_000_000 % 300), abs=1)
        assert all(b - a == pytest.approx(300, abs=1) for a, b in itertools.pairwise(times))
        async with AsyncClient("beanstalk://memory:1/jobs", connector=srv.connect) as c:
            (only,) = await c.schedules()
            assert only["name"] == "report" and only["fired"] == 288 and only["skipped"] == 0
            await c.schedule_pause("report")
            await c.schedule_resume("report")
            await c.schedule_remove("report")
            assert await c.schedules() == []


def test_periodic_thread_worker_against_the_process(tube: str) -> None:
    with spawn_beanq() as (host, port, _):
        worker = Worker(Client(f"beanstalk://{host}:{port}/{tube}", timeout=10), tube)
        seen: list[float] = []

        @worker.periodic("* * * * * *")  # every second
        def beat() -> None:
            seen.append(time.time())

        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while len(seen) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            worker.stop()
            thread.join(10)
        assert len(seen) >= 3
        with Client(f"beanstalk://{host}:{port}/{tube}") as c:
            (s,) = c.schedules()
            name = f"{__name__}.test_periodic_thread_worker_against_the_process._locals_.beat"
            assert s["name"] == name and s["tube"] == tube and s["cron"] == "* * * * * *"


def test_pool_declares_on_one_server(daemons: list[str], tube: str) -> None:
    with Pool(daemons) as pool:
        names = [f"{tube}-{i}" for i in range(8)]
        where = {name: pool.schedule_add(name, tube, b"x", every=3600) for name in names}
        assert all(not replaced for _, replaced in where.values())
        assert len({server for server, _ in where.values()}) == 2  # spread by name
        assert pool.schedule_add(names[0], tube, b"y", every=60) == (where[names[0]][0], True)
        listed = {s["name"]: s["server"] for s in pool.schedules() if s["tube"] == tube}
        assert listed == {name: server for name, (server, _) in where.items()}
        pool.schedule_pause(names[1])
        pool.schedule_resume(names[1])
        for name in names:
            pool.schedule_remove(name)
        with pytest.raises(NotFoundError):
            pool.schedule_remove(names[0])


async def test_async_pool_declares_on_one_server(daemons: list[str], tube: str) -> None:
    async with AsyncPool(daemons) as pool:
        server, replaced = await pool.schedule_add(tube + "-a", tube, b"x", every=60)
        assert not replaced and server
        listed = [s for s in await pool.schedules() if s["name"] == tube + "-a"]
        assert [s["server"] for s in listed] == [server]
        await pool.schedule_remove(tube + "-a")
        with pytest.raises(NotFoundError):
            await pool.schedule_pause(tube + "-a")
