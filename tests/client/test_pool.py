"""Pools across three beanq daemons on loopback: puts spread and skip a dead server, reserves
come from every server, and no job is lost or duplicated while a daemon is stopped and
started during a run."""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import trio
import trio.testing
from beanq_client import (
    AsyncPool,
    BeanstalkConnectionError,
    Client,
    Job,
    JobRef,
    NoServerAvailableError,
    NotFoundError,
    Pool,
    TimedOutError,
)

from tests.client.conftest import fake_server, memory_server
from tests.servers import free_port, spawn_beanq

HAS_BINLOG = importlib.util.find_spec("beanq.binlog") is not None


@pytest.fixture(scope="module")
def daemons() -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        addresses = []
        for _ in range(3):
            host, port, _proc = stack.enter_context(spawn_beanq())
            addresses.append(f"{host}:{port}")
        yield addresses


def test_round_robin_puts_and_reserves_from_every_server(daemons: list[str], tube: str) -> None:
    with Pool(daemons) as pool:
        pool.use(tube)
        pool.watch(tube)
        pool.ignore("default")
        refs = [pool.put(b"job %d" % n) for n in range(9)]
        assert Counter(ref.server for ref in refs) == dict.fromkeys(daemons, 3)
        seen = []
        for _ in range(9):
            job = pool.reserve(timeout=2)
            assert job.server in daemons
            assert pool.stats_job(job)["state"] == "reserved"
            seen.append(JobRef(job.server, job.id))
            pool.delete(job)
        assert sorted(seen, key=str) == sorted(refs, key=str)
        with pytest.raises(TimedOutError):
            pool.reserve(timeout=0.1)
        assert set(pool.stats()) == set(daemons)


def test_hash_strategy_keeps_keys_together(daemons: list[str], tube: str) -> None:
    with Pool(daemons, strategy="hash", encoding="utf-8") as pool:
        pool.use(tube)
        homes = {key: {pool.put("x", key=key).server for _ in range(5)} for key in "abcdef"}
        assert all(len(servers) == 1 for servers in homes.values())
        ref = pool.put("peek me", key="a")
        assert pool.peek(ref).body == "peek me"
        with pytest.raises(ValueError):
            pool.put("no key")


def test_job_commands_go_back_to_the_server_that_holds_the_job(
    daemons: list[str], tube: str
) -> None:
    with Pool(daemons) as pool:
        pool.use(tube)
        pool.watch(tube)
        pool.ignore("default")
        for n in range(3):
            pool.put(b"%d" % n, priority=n)
        job = pool.reserve(timeout=2)
        pool.touch(job)
        pool.release(job, delay=100)  # keeps its priority
        assert pool.stats_job(job)["state"] == "delayed"
        job = pool.reserve(timeout=2)
        pool.bury(job)
        with Client(job.server or "", timeout=5) as direct:
            direct.use(tube)
            assert direct.peek_buried().id == job.id
        with pytest.raises(ValueError):
            pool.delete(Job(job.id, b""))  # no server: ambiguous across the pool


def test_a_put_that_may_have_arrived_is_not_repeated_elsewhere(
    daemons: list[str], tube: str
) -> None:
    # The fake accepts the tube set-up, then hangs up on the put.
    with (
        fake_server(f"USING {tube}\r\n".encode(), None) as fake,
        Pool([fake.address, daemons[0]]) as pool,
    ):
        pool.use(tube)
        with pytest.raises(BeanstalkConnectionError) as info:
            pool.put(b"maybe")  # round-robin starts with the fake, which hangs up
        assert info.value.sent
        assert fake.received == [f"use {tube}".encode(), b"put 2147483648 0 120 5"]
        with Client(daemons[0]) as direct:
            assert tube not in direct.tubes()  # not put there instead
        # The fake is now resting; puts go to the live server.
        assert pool.put(b"sure").server == daemons[0]


def test_all_servers_down() -> None:
    with Pool([("127.0.0.1", free_port()), ("127.0.0.1", free_port())]) as pool:
        with pytest.raises(NoServerAvailableError) as info:
            pool.put(b"x")
        assert not info.value.sent
        with pytest.raises(TimedOutError):
            pool.reserve(timeout=0.05)


class Gate:
    """Lets the test stop worker threads between two commands, so that a daemon is stopped
    while no command to it is in flight and no job from it is held."""

    def __init__(self, workers: int) -> None:
        self.open = threading.Event()
        self.open.set()
        self.parked = threading.Semaphore(0)
        self.workers = workers

    def checkpoint(self) -> None:
        if not self.open.is_set():
            self.parked.release()
            assert self.open.wait(30)

    def close(self) -> None:
        self.open.clear()
        for _ in range(self.workers):
            assert self.parked.acquire(timeout=30), "a worker did not park"

    def reopen(self) -> None:
        self.open.set()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


@pytest.mark.slow
def test_no_job_lost_or_duplicated_while_a_daemon_restarts(tube: str) -> None:
    acked: dict[bytes, JobRef] = {}
    consumed: list[bytes] = []
    uncertain: list[bytes] = []
    problems: list[BaseException] = []
    stop_producing = threading.Event()
    done_producing = threading.Event()
    producer_gate, consumer_gate = Gate(1), Gate(2)
    port_b = free_port()
    addr_b = f"127.0.0.1:{port_b}"
    b_puts_after_restart = threading.Event()
    restarted = threading.Event()

    def producer(pool: Pool[bytes]) -> None:
        try:
            n = 0
            while not stop_producing.is_set():
                producer_gate.checkpoint()
                body = b"job-%d" % n
                n += 1
                try:
                    ref = pool.put(body)
                except BeanstalkConnectionError as exc:
                    (uncertain if exc.sent else problems).append(body if exc.sent else exc)  # type: ignore[arg-type]
                    continue
                acked[body] = ref
                if ref.server == addr_b and restarted.is_set():
                    b_puts_after_restart.set()
                time.sleep(0.001)
        except BaseException as exc:
            problems.append(exc)
        finally:
            pool.close()
            done_producing.set()
            while not consumer_gate.open.is_set() or not producer_gate.open.is_set():
                producer_gate.checkpoint()  # keep answering the gate until the test ends
                time.sleep(0.001)

    def consumer(pool: Pool[bytes]) -> None:
        try:
            while True:
                consumer_gate.checkpoint()
                try:
                    job = pool.reserve(timeout=0.1)
                except TimedOutError:
                    if done_producing.is_set() and len(consumed) >= len(acked):
                        return
                    continue
                consumed.append(job.body)
                pool.delete(job)
        except BaseException as exc:
            problems.append(exc)
        finally:
            pool.close()

    def b_load(direct: Client[bytes]) -> int:
        try:
            stats = direct.stats_tube(tube)
        except NotFoundError:
            return 0  # the tube is gone: nobody uses it and it holds no job
        return stats["current-jobs-ready"] + stats["current-jobs-reserved"]

    with contextlib.ExitStack() as stack:
        binlog_args: tuple[str, ...] = ()
        if HAS_BINLOG:
            binlog_args = ("-b", stack.enter_context(tempfile.TemporaryDirectory()))
        a = stack.enter_context(spawn_beanq())
        c = stack.enter_context(spawn_beanq())
        b_daemon = contextlib.ExitStack()
        stack.callback(lambda: b_daemon.close())
        b_daemon.enter_context(spawn_beanq(*binlog_args, port=port_b))
        servers = [f"{a[0]}:{a[1]}", addr_b, f"{c[0]}:{c[1]}"]
        base = Pool(servers, retry_after=0.2, poll_interval=0.05, timeout=5)
        base.use(tube)
        base.watch(tube)
        base.ignore("default")
        threads = [threading.Thread(target=producer, args=(base.clone(),))] + [
            threading.Thread(target=consumer, args=(base.clone(),)) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        try:
            with Client(addr_b, timeout=5) as direct_b:
                wait_for(lambda: len(acked) > 60, "60 puts went through")
                assert direct_b.stats_tube(tube)["total-jobs"] > 10, "B took too few puts"
                producer_gate.close()
                if not HAS_BINLOG:
                    # Without a binlog a stopped daemon forgets its jobs, which no client can
                    # prevent: let the consumers empty B before stopping it.
                    wait_for(lambda: b_load(direct_b) == 0, "the consumers emptied B")
                consumer_gate.close()
            b_daemon.close()  # daemon B stops
            consumer_gate.reopen()
            producer_gate.reopen()
            before = len(acked)
            wait_for(lambda: len(acked) > before + 60, "puts went on while B was down")
            during = list(acked.values())[before:]
            assert len(during) > 20, "puts stalled while B was down"
            assert all(ref.server != addr_b for ref in during)
            producer_gate.close()
            consumer_gate.close()
            b_daemon.enter_context(spawn_beanq(*binlog_args, port=port_b))  # and starts again
            restarted.set()
            consumer_gate.reopen()
            producer_gate.reopen()
            assert b_puts_after_restart.wait(10), "B never took puts again after its restart"
            time.sleep(0.1)
        finally:
            stop_producing.set()
            producer_gate.reopen()
            consumer_gate.reopen()
            for thread in threads:
                thread.join(30)
        assert not any(t.is_alive() for t in threads)
        assert not problems, problems
        assert not uncertain
        counts = Counter(consumed)
        assert [body for body, n in counts.items() if n > 1] == []  # nothing twice
        assert set(counts) == set(acked)  # nothing lost
        assert len(acked) > 100
        for address in servers:
            with Client(address) as direct:
                assert b_load(direct) == 0
        base.close()


async def test_async_pool_skips_a_dead_server_and_retries_it_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_server() as one, memory_server() as two:
        alive = False

        async def flaky() -> trio.abc.Stream:
            if not alive:
                raise OSError("connection refused")
            return await two.connect()

        pool = AsyncPool(
            ["a:1", "b:1"],
            connectors={"a:1": one.connect, "b:1": flaky},
            retry_after=10,
            encoding="utf-8",
        )
        assert [(await pool.put(f"{n}")).server for n in range(3)] == ["a:1"] * 3
        alive = True
        await trio.sleep(5)
        assert (await pool.put("3")).server == "a:1"  # b is still resting
        await trio.sleep(5)
        servers = [(await pool.put(f"{n}")).server for n in range(4, 8)]
        assert Counter(servers) == {"a:1": 2, "b:1": 2}  # b is back in the rotation
        bodies = []
        for _ in range(8):
            job = await pool.reserve(timeout=1)
            bodies.append(job.body)
            await pool.delete(job)
        assert sorted(bodies) == [str(n) for n in range(8)]
        start = trio.current_time()
        with pytest.raises(TimedOutError):
            await pool.reserve(timeout=2)
        assert trio.current_time() - start == pytest.approx(2, abs=0.6)
        await pool.close()
