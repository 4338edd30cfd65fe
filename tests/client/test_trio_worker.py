"""The trio worker on beanq's in-process server with the autojump clock, so backoff delays,
TTRs and long handlers take no real time and their timing is exact; plus SIGTERM and a real
server."""

from __future__ import annotations

import itertools
import logging
import os
import signal

import pytest
import trio
import trio.testing
from beanq_client import AsyncClient, AsyncPool, AsyncWorker, Backoff, Outcome, encode_task

from tests.client.conftest import MemoryServer, Server, memory_server


def client(srv: MemoryServer, tube: str = "jobs") -> AsyncClient[bytes]:
    return AsyncClient(f"beanstalk://memory:1/{tube}", connector=srv.connect)


def _jump_only_when_threads_are_done(clock: trio.testing.MockClock) -> None:
    """Plain-function tasks run on a thread, which trio does not count as activity: with an
    autojump threshold of 0 the clock may leap past a job's TTR while that thread waits for
    the interpreter lock, and the job is handed out twice. Jump after 50 ms of real idleness."""
    clock.autojump_threshold = 0.05


async def test_success_with_async_and_thread_handlers(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    _jump_only_when_threads_are_done(mock_clock)
    caplog.set_level(logging.INFO, logger="beanq_client.worker")
    async with memory_server() as srv, client(srv) as producer:
        for n in range(4):
            await producer.put(encode_task("async_double", n))
            await producer.put(encode_task("thread_triple", n))
        worker = AsyncWorker(client(srv), "jobs", concurrency=3, reserve_timeout=0)
        results: list[int] = []

        @worker.task("async_double")
        async def double(n: int) -> None:
            await trio.sleep(1)
            results.append(2 * n)

        @worker.task("thread_triple")
        def triple(n: int) -> None:
            results.append(3 * n)

        await worker.run(burst=True, handle_signals=False)
        assert sorted(results) == sorted([2 * n for n in range(4)] + [3 * n for n in range(4)])
        assert (await producer.stats_tube("jobs"))["cmd-delete"] == 8
        assert worker.outcomes[Outcome.DELETED] == 8
        durations = [r.duration for r in caplog.records if getattr(r, "task", "") == "async_double"]  # type: ignore[attr-defined]
        assert durations == [pytest.approx(1.0)] * 4  # on trio's clock


async def test_backoff_delays_are_exact(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, client(srv) as producer:
        job_id = await producer.put(encode_task("flaky"))
        worker = AsyncWorker(
            client(srv), "jobs", backoff=Backoff(base=2, factor=3), reserve_timeout=None
        )
        calls: list[float] = []

        @worker.task("flaky")
        async def flaky() -> None:
            calls.append(trio.current_time())
            if len(calls) < 3:
                raise RuntimeError("not yet")
            worker.stop()

        with trio.fail_after(100):
            await worker.run(handle_signals=False)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps == [pytest.approx(2), pytest.approx(6)]
        assert worker.outcomes[Outcome.RELEASED] == 2 and worker.outcomes[Outcome.DELETED] == 1
        with pytest.raises(Exception, match="NOT_FOUND"):
            await producer.peek(job_id)


async def test_buried_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, client(srv) as producer:
        job_id = await producer.put(encode_task("doomed"), priority=5)
        worker = AsyncWorker(
            client(srv), "jobs", max_attempts=4, backoff=Backoff(base=1), reserve_timeout=10
        )
        calls: list[float] = []

        @worker.task("doomed")
        async def doomed() -> None:
            calls.append(trio.current_time())
            raise ValueError("no")

        # burst: once the job is buried, the next reserve times out and the worker returns.
        await worker.run(burst=True, handle_signals=False)
        assert worker.outcomes[Outcome.BURIED] == 1
        stats = await producer.stats_job(job_id)
        assert (stats["state"], stats["reserves"], stats["pri"]) == ("buried", 4, 5)
        assert [b - a for a, b in itertools.pairwise(calls)] == [
            pytest.approx(1),
            pytest.approx(2),
            pytest.approx(4),
        ]


async def test_a_job_longer_than_its_ttr_is_touched(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_server() as srv, client(srv) as producer:
        job_id = await producer.put(encode_task("slow"), ttr=2)
        worker = AsyncWorker(client(srv), "jobs", concurrency=2, reserve_timeout=0)
        seen = []

        @worker.task("slow")
        async def slow() -> None:
            await trio.sleep(60)  # thirty TTRs
            stats = await producer.stats_job(job_id)
            seen.append((stats["state"], stats["timeouts"], stats["reserves"]))

        await worker.run(burst=True, handle_signals=False)
        assert seen == [("reserved", 0, 1)]
        assert worker.outcomes[Outcome.DELETED] == 1


async def test_stop_lets_running_jobs_finish_and_leaves_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as srv, client(srv) as producer:
        ids = [await producer.put(encode_task("slow", n)) for n in range(5)]
        worker = AsyncWorker(client(srv), "jobs", concurrency=2)
        started: list[int] = []
        finished: list[int] = []
        both_started = trio.Event()

        @worker.task("slow")
        async def slow(n: int) -> None:
            started.append(n)
            if len(started) == 2:
                both_started.set()
            await trio.sleep(10)
            finished.append(n)

        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: worker.run(handle_signals=False, task_status=task_status)
            )
            await both_started.wait()
            stop_at = trio.current_time()
            worker.stop()
        assert trio.current_time() - stop_at == pytest.approx(10, abs=0.2)
        assert sorted(finished) == sorted(started) == [0, 1]
        for job_id in ids[2:]:
            stats = await producer.stats_job(job_id)
            assert (stats["state"], stats["reserves"]) == ("ready", 0)
        assert (await producer.stats_tube("jobs"))["cmd-delete"] == 2


async def test_sigterm_stops_the_worker_gracefully() -> None:
    async with memory_server() as srv, client(srv) as producer:
        await producer.put(encode_task("wait"))
        await producer.put(encode_task("wait"))
        worker = AsyncWorker(client(srv), "jobs")
        release = trio.Event()
        running = trio.Event()

        @worker.task("wait")
        async def wait() -> None:
            running.set()
            await release.wait()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await running.wait()
                os.kill(os.getpid(), signal.SIGTERM)
                while not worker.stopping:  # noqa: ASYNC110 (the signal comes from outside trio)
                    await trio.sleep(0.01)
                release.set()
        stats = await producer.stats_tube("jobs")
        assert (stats["cmd-delete"], stats["current-jobs-ready"]) == (1, 1)


async def test_worker_on_an_async_pool(mock_clock: trio.testing.MockClock) -> None:
    _jump_only_when_threads_are_done(mock_clock)
    async with memory_server() as one, memory_server() as two:
        pool = AsyncPool(["a:1", "b:1"], connectors={"a:1": one.connect, "b:1": two.connect})
        await pool.use("jobs")
        for n in range(6):
            await pool.put(encode_task("echo", n))
        worker = AsyncWorker(pool, "jobs", concurrency=2, reserve_timeout=0)
        got: list[int] = []
        worker.task("echo")(got.append)
        await worker.run(burst=True, handle_signals=False)
        assert sorted(got) == list(range(6))
        for srv in (one, two):
            async with client(srv) as direct:
                assert (await direct.stats_tube("jobs"))["cmd-delete"] == 3
        await pool.close()


async def test_trio_worker_against_a_real_server(server: Server, tube: str) -> None:
    async with AsyncClient(server.url(tube)) as producer:
        for n in range(5):
            await producer.put(encode_task("neg", n))
        worker = AsyncWorker(AsyncClient(server.url(tube)), tube, concurrency=2, reserve_timeout=0)
        got: list[int] = []

        @worker.task("neg")
        async def neg(n: int) -> None:
            got.append(-n)

        await worker.run(burst=True, handle_signals=False)
        assert sorted(got) == [-4, -3, -2, -1, 0]
        assert (await producer.stats_tube(tube))["cmd-delete"] == 5


async def test_batches_run_every_job_once_and_give_back_late_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """batch=3 with beanq's batch reserve: each job of a batch waits for the one before it,
    so with handlers of 1.5 s and a TTR of 2 s the second and third of a batch are given back
    unstarted (their TTR is about to run out) and run later; every job runs exactly once."""
    async with memory_server() as srv, client(srv) as producer:
        for n in range(3):
            await producer.put(encode_task("slow", n), ttr=2)
        worker = AsyncWorker(client(srv), "jobs", batch=3, reserve_timeout=0)
        ran: list[tuple[int, float]] = []

        @worker.task("slow")
        async def slow(n: int) -> None:
            ran.append((n, trio.current_time()))
            await trio.sleep(1.5)

        await worker.run(burst=True, handle_signals=False)
        assert sorted(n for n, _ in ran) == [0, 1, 2]
        assert worker.outcomes[Outcome.DELETED] == 3
        assert worker.outcomes[Outcome.UNSTARTED] >= 2
        stats = await producer.stats()
        assert stats["cmd-reserve"] + stats["cmd-reserve-with-timeout"] == 0  # batches only
