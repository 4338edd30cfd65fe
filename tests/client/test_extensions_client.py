"""The clients' methods for beanq's extensions (flush, list_jobs, move, reserve_batch,
put_unique, capabilities): against the beanq process, against beanstalkd (which has none of
them), on the in-process server for the trio client, and through pools."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from beanq_client import (
    AsyncClient,
    AsyncPool,
    Client,
    Job,
    Pool,
    TimedOutError,
    Unique,
    UnknownCommandError,
)

from tests.client.conftest import Server, memory_server

EVERY = ["flush", "list", "move", "reserve-batch", "put-unique", "schedules"]


@pytest.fixture
def client(beanq_server: Server, tube: str) -> Iterator[Client[bytes]]:
    with Client(beanq_server.url(tube), timeout=10) as c:
        yield c


def test_capabilities_and_unique_puts(client: Client[bytes]) -> None:
    assert client.capabilities() == EVERY
    first = client.put_unique("order-7", b"one", priority=3)
    assert first.inserted
    assert client.put_unique("order-7", b"two") == Unique(first.id, False)
    client.delete(first.id)
    assert client.put_unique("order-7", b"three").inserted


def test_list_flush_move_and_batches(client: Client[bytes], tube: str) -> None:
    ids = [client.put(b"%d" % i, priority=100 - i) for i in range(7)]
    assert list(client.list_jobs(tube, page=2)) == ids
    assert list(client.list_jobs(tube, after=ids[4])) == ids[5:]
    batch = client.reserve_batch(3, timeout=0)
    assert [job.id for job in batch] == ids[::-1][:3]  # by priority, as single reserves
    assert list(client.list_jobs(tube, "reserved")) == sorted(job.id for job in batch)
    other = tube + "-b"
    assert client.move(tube, other, "ready", 2) == 2
    assert client.stats_job(ids[3])["tube"] == other
    assert client.flush(tube) == 2
    assert client.flush(other, "ready") == 2
    assert list(client.list_jobs(tube)) == []
    with pytest.raises(TimedOutError):
        client.reserve_batch(5, timeout=0)
    for job in batch:
        client.delete(job)


def test_against_beanstalkd(beanstalkd_server: Server, tube: str) -> None:
    with Client(beanstalkd_server.url(tube), timeout=10) as c:
        assert c.capabilities() == []
        with pytest.raises(UnknownCommandError):
            c.flush(tube)
        c.put(b"still fine")
        assert c.reserve(timeout=0).body == b"still fine"


async def test_trio_client(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, AsyncClient(connector=srv.connect) as c:
        assert await c.capabilities() == EVERY
        got = await c.put_unique("k", b"v")
        assert got.inserted and (await c.put_unique("k", b"w")) == Unique(got.id, False)
        ids = [got.id] + [await c.put(b"%d" % i) for i in range(4)]
        assert [i async for i in c.list_jobs("default", page=2)] == ids
        assert await c.move("default", "b", "ready", 1) == 1
        assert await c.flush("b") == 1

        async def late_put() -> None:
            await trio.sleep(5)
            async with AsyncClient[bytes](connector=srv.connect) as producer:
                await producer.use("fresh")
                await producer.put(b"late")

        async with (
            trio.open_nursery() as nursery,
            AsyncClient[bytes](connector=srv.connect) as waiter,
        ):
            nursery.start_soon(late_put)
            await waiter.watch("fresh")
            await waiter.ignore("default")
            with pytest.raises(TimedOutError):
                await waiter.reserve_batch(4, timeout=1)
            start = trio.current_time()
            batch = await waiter.reserve_batch(4, timeout=100)
            assert [job.body for job in batch] == [b"late"]
            assert trio.current_time() - start == pytest.approx(4.0)
        rest = await c.reserve_batch(10, timeout=0)
        assert [job.id for job in rest] == ids[1:]  # the first went with the move and flush


def test_pool(daemons: list[str], tube: str) -> None:
    with Pool(daemons) as pool:
        pool.use(tube)
        pool.watch(tube)
        pool.ignore("default")
        ref, inserted = pool.put_unique("same-key", b"x")
        assert inserted
        assert pool.put_unique("same-key", b"y") == (ref, False)  # same server: the key's
        for i in range(4):
            pool.put(b"%d" % i)
        listed = list(pool.list_jobs(tube))
        assert len(listed) == 5 and ref in listed
        assert pool.capabilities() == dict.fromkeys(pool.servers, EVERY)
        got = pool.reserve_batch(10, timeout=1)
        assert got and all(isinstance(job, Job) and job.server for job in got)
        for job in got:
            pool.release(job)
        assert pool.move(tube, tube + "-2") == 5
        assert pool.flush(tube + "-2") == 5


async def test_async_pool(daemons: list[str], tube: str) -> None:
    async with AsyncPool(daemons) as pool:
        await pool.use(tube)
        await pool.watch(tube)
        ref, inserted = await pool.put_unique("k", b"x")
        assert inserted and (await pool.put_unique("k", b"y")) == (ref, False)
        assert [r async for r in pool.list_jobs(tube)] == [ref]
        assert len(await pool.reserve_batch(3, timeout=1)) == 1
        assert await pool.flush(tube) == 0
        assert await pool.capabilities() == dict.fromkeys(pool.servers, EVERY)


def test_put_task_with_a_unique_key_runs_once(beanq_server: Server, tube: str) -> None:
    from beanq_client import Worker

    with Client(beanq_server.url(tube), timeout=10) as c:
        first = c.put_task("send", "ada@example.com", unique_key="mail-ada", subject="hi")
        again = c.put_task("send", "ada@example.com", unique_key="mail-ada", subject="hi")
        plain = c.put_task("send", "bob@example.com", priority=5)
        assert again == first and plain != first
        worker = Worker(c, tube)
        seen: list[tuple[str, dict[str, str]]] = []

        @worker.task("send")
        def send(address: str, **kwargs: str) -> None:
            seen.append((address, kwargs))

        worker.run(burst=True, handle_signals=False)
        assert sorted(seen) == [("ada@example.com", {"subject": "hi"}), ("bob@example.com", {})]
        assert c.put_task("send", "ada@example.com", unique_key="mail-ada") != first  # freed


async def test_async_put_task(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, AsyncClient(connector=srv.connect) as c:
        first = await c.put_task("t", 1, unique_key="k")
        assert await c.put_task("t", 2, unique_key="k") == first
        job = await c.reserve(timeout=0)
        assert job.id == first and job.body == b'{"task":"t","args":[1],"kwargs":{}}'


@pytest.mark.parametrize("kind", ["beanq", "beanstalkd"])
def test_worker_takes_jobs_in_batches(kind: str, tube: str, request: pytest.FixtureRequest) -> None:
    """batch=10 against beanq (beanq-reserve-batch) and beanstalkd (one at a time again):
    every job runs once and is deleted."""
    from beanq_client import Outcome, Worker

    server: Server = request.getfixturevalue(f"{kind}_server")
    with Client(server.url(tube), timeout=10) as c:
        ids = [c.put_task("add", i) for i in range(25)]
        worker = Worker(c, tube, batch=10, reserve_timeout=0)
        ran: list[int] = []

        @worker.task("add")
        def add(i: int) -> None:
            ran.append(i)

        worker.run(burst=True, handle_signals=False)
        assert sorted(ran) == list(range(25))
        assert worker.outcomes[Outcome.DELETED] == 25
        for job_id in ids:
            with pytest.raises(Exception, match="NOT_FOUND"):
                c.stats_job(job_id)


def test_worker_batch_leaves_jobs_whose_ttr_ran_out(beanq_server: Server, tube: str) -> None:
    """A job that waited in a batch past its TTR is not run then: released if still held
    (another worker may have it by then), it comes back and runs later, once."""
    from beanq_client import Outcome, Worker

    with Client(beanq_server.url(tube), timeout=10) as c:
        for i in range(3):
            c.put_task("slow", i, ttr=2)
        worker = Worker(c, tube, batch=3, reserve_timeout=3)
        ran: list[int] = []

        @worker.task("slow")
        def slow(i: int) -> None:
            ran.append(i)
            time.sleep(1.1)

        worker.run(burst=True, handle_signals=False)
        assert sorted(ran) == [0, 1, 2]  # each once, whatever the batches
        assert worker.outcomes[Outcome.UNSTARTED] + worker.outcomes[Outcome.LOST] >= 1
