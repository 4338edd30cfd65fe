"""Third-party clients, unchanged, against the real beanq process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import greenstalk
import pystalk
import pytest

from tests.servers import free_port, spawn_beanq


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with spawn_beanq() as (host, port, _proc):
        yield host, port


def test_greenstalk_full_cycle(server: tuple[str, int]) -> None:
    with greenstalk.Client(server, use="gs-jobs", watch="gs-jobs") as c:
        assert c.using() == "gs-jobs"
        assert c.watching() == ["gs-jobs"]
        first = c.put("hello", priority=10)
        second = c.put("world", priority=5, ttr=30)
        job = c.reserve(timeout=1)
        assert (job.id, job.body) == (second, "world")  # lower priority value first
        c.release(job, priority=1, delay=0)
        assert c.peek_ready().id == second
        job = c.reserve(timeout=1)
        c.bury(job, priority=7)
        assert c.peek_buried().id == second
        assert c.stats_job(second)["state"] == "buried"
        assert c.kick(10) == 1
        c.delete(second)
        job = c.reserve(timeout=1)
        assert job.id == first
        c.touch(job)
        c.delete(job)
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        with pytest.raises(greenstalk.NotFoundError):
            c.peek(first)


def test_greenstalk_delays_kick_job_stats_and_pause(server: tuple[str, int]) -> None:
    with greenstalk.Client(server, use="gs-delay", watch="gs-delay") as c:
        job_id = c.put("later", delay=60)
        assert c.peek_delayed().id == job_id
        c.kick_job(job_id)
        tube = c.stats_tube("gs-delay")
        assert tube["name"] == "gs-delay"
        assert tube["current-jobs-ready"] == 1
        c.pause_tube("gs-delay", 1)
        start = time.monotonic()
        job = c.reserve(timeout=5)
        assert job.id == job_id
        assert time.monotonic() - start > 0.5
        c.delete(job)
        stats = c.stats()
        assert stats["current-connections"] >= 1
        assert "gs-delay" in c.tubes()
        assert c.reserve_job  # the method exists in greenstalk 2.x
        job_id = c.put("direct")
        assert c.reserve_job(job_id).body == "direct"
        c.delete(job_id)


def test_greenstalk_errors(server: tuple[str, int]) -> None:
    with greenstalk.Client(server) as c:
        with pytest.raises(greenstalk.NotIgnoredError):
            c.ignore("default")
        with pytest.raises(greenstalk.NotFoundError):
            c.delete(123456789)


def test_pystalk_producer_and_consumer(server: tuple[str, int]) -> None:
    client = pystalk.BeanstalkClient(*server)
    client.use("ps-jobs")
    inserted = client.put_job("payload", pri=100)
    # pystalk 0.9 returns (b"INSERTED", id); older releases returned the id alone
    job_id = inserted[1] if isinstance(inserted, tuple) else inserted
    assert client.stats_job(job_id)["tube"] == "ps-jobs"
    client.watch("ps-jobs")
    job = client.reserve_job(timeout=1)
    assert (job.job_id, job.job_data) == (job_id, b"payload")
    client.release_job(job.job_id, pri=5)
    job = client.reserve_job(timeout=1)
    client.bury_job(job.job_id)
    assert client.peek_buried().job_id == job_id
    assert client.kick_jobs(1) in (1, (b"KICKED", 1))
    assert client.peek_ready().job_id == job_id
    client.delete_job(job_id)
    assert "ps-jobs" in client.list_tubes()
    stats = client.stats()
    assert stats["total-jobs"] >= 1
    tube = client.stats_tube("ps-jobs")
    assert tube["name"] == "ps-jobs"
    client.close()


def test_greenstalk_connects_01_s_after_spawn() -> None:
    """Client test suites spawn the server binary and connect about 0.1 s later, once."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beanq", "-p", str(port)], stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(0.1)
        deadline = time.monotonic() + 0.5
        while True:
            try:
                client = greenstalk.Client(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "not listening 0.6 s after spawn"
                time.sleep(0.01)
        with client:
            job_id = client.put("early")
            assert client.reserve(timeout=0).id == job_id
    finally:
        proc.terminate()
        proc.wait(10)
