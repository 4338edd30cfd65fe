"""The blocking worker against real servers: success, failure with backoff, burying after the
last attempt, touching a job that runs longer than its TTR, shutdown without losing a job,
and the log record of each outcome."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from beanq_client import Backoff, Client, Outcome, Pool, Worker, encode_task

from tests.client.conftest import Server


def outcomes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int | None]]:
    return [
        (r.outcome, r.task, r.attempt)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "beanq_client.worker" and hasattr(r, "outcome")
    ]


@pytest.fixture(autouse=True)
def _log_jobs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="beanq_client.worker")


def test_success_deletes_each_job_and_logs_it(
    server: Server, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(server.url(tube)) as producer:
        for n in range(6):
            producer.put(encode_task("add", n, b=10))
        worker = Worker(Client(server.url(tube)), [tube], concurrency=3, reserve_timeout=0)
        sums: list[int] = []
        lock = threading.Lock()

        @worker.task("add")
        def add(a: int, b: int = 0) -> None:
            with lock:
                sums.append(a + b)

        worker.run(burst=True, handle_signals=False)
        assert sorted(sums) == list(range(10, 16))
        stats = producer.stats_tube(tube)
        assert stats["total-jobs"] == 6 and stats["cmd-delete"] == 6
        assert stats["current-jobs-ready"] == 0
        assert outcomes(caplog) == [("deleted", "add", 1)] * 6
        record = next(r for r in caplog.records if hasattr(r, "outcome"))
        assert record.levelno == logging.INFO
        assert record.tube == tube and isinstance(record.duration, float)  # type: ignore[attr-defined]
        assert "outcome=deleted" in record.getMessage()
        assert worker.outcomes[Outcome.DELETED] == 6


def test_failure_releases_with_exponential_backoff(
    beanq_server: Server, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(beanq_server.url(tube)) as producer:
        job_id = producer.put(encode_task("flaky"), priority=42)
        worker = Worker(
            Client(beanq_server.url(tube)),
            tube,
            backoff=Backoff(base=30, factor=2),
            reserve_timeout=0,
        )

        @worker.task("flaky")
        def flaky() -> None:
            raise RuntimeError("try later")

        worker.run(burst=True, handle_signals=False)
        stats = producer.stats_job(job_id)
        assert (stats["state"], stats["delay"], stats["pri"]) == ("delayed", 30, 42)
        assert stats["releases"] == 1
        record = next(r for r in caplog.records if hasattr(r, "outcome"))
        assert (record.outcome, record.delay, record.error) == ("released", 30, "try later")  # type: ignore[attr-defined]
        assert record.error_type == "RuntimeError" and record.levelno == logging.WARNING  # type: ignore[attr-defined]
        # The second failure waits twice as long.
        producer.kick_job(job_id)
        worker.run(burst=True, handle_signals=False)
        assert producer.stats_job(job_id)["delay"] == 60


def test_buried_after_max_attempts(
    beanq_server: Server, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(beanq_server.url(tube)) as producer:
        job_id = producer.put(encode_task("doomed", "x"))
        worker = Worker(
            Client(beanq_server.url(tube)),
            tube,
            max_attempts=3,
            backoff=Backoff(base=0),
            reserve_timeout=0,
        )
        calls: list[str] = []

        @worker.task("doomed")
        def doomed(arg: str) -> None:
            calls.append(arg)
            raise ValueError("never works")

        worker.run(burst=True, handle_signals=False)
        assert calls == ["x", "x", "x"]
        stats = producer.stats_job(job_id)
        assert (stats["state"], stats["reserves"], stats["releases"], stats["buries"]) == (
            "buried",
            3,
            2,
            1,
        )
        assert outcomes(caplog) == [
            ("released", "doomed", 1),
            ("released", "doomed", 2),
            ("buried", "doomed", 3),
        ]


def test_attempts_carried_in_the_payload(beanq_server: Server, tube: str) -> None:
    with Client(beanq_server.url(tube)) as producer:
        producer.put(encode_task("doomed"), priority=9, ttr=33)
        worker = Worker(
            Client(beanq_server.url(tube)),
            tube,
            max_attempts=3,
            backoff=Backoff(base=0),
            attempts_from="payload",
            reserve_timeout=0,
        )
        calls = []

        @worker.task("doomed")
        def doomed() -> None:
            calls.append(1)
            raise ValueError

        worker.run(burst=True, handle_signals=False)
        assert len(calls) == 3
        stats = producer.stats_tube(tube)
        assert stats["total-jobs"] == 3 and stats["current-jobs-buried"] == 1
        last = producer.peek_buried()
        assert json.loads(last.body)["attempts"] == 2
        last_stats = producer.stats_job(last)
        assert (last_stats["pri"], last_stats["ttr"], last_stats["reserves"]) == (9, 33, 1)


def test_raw_handlers_and_jobs_that_can_never_run(
    beanq_server: Server, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw_tube, task_tube = tube + "-raw", tube + "-tasks"
    with Client(beanq_server.url(raw_tube)) as producer:
        producer.put(b"\x00\x01 raw bytes")
        producer.use(task_tube)
        unknown = producer.put(encode_task("nobody-handles-this"))
        garbage = producer.put(b"not json at all")
        worker = Worker(Client(beanq_server.address), [raw_tube, task_tube], reserve_timeout=0)
        seen: list[bytes] = []
        worker.task(raw_tube, raw=True)(seen.append)
        worker.run(burst=True, handle_signals=False)
        assert seen == [b"\x00\x01 raw bytes"]
        assert producer.stats_job(unknown)["state"] == "buried"
        assert producer.stats_job(garbage)["state"] == "buried"
        buried = [r.__dict__ for r in caplog.records if r.__dict__.get("outcome") == "buried"]
        problems = {fields["job_id"]: fields["error"] for fields in buried}
        assert "unknown task" in problems[unknown] and "not a JSON" in problems[garbage]


def test_a_job_longer_than_its_ttr_is_kept_alive(beanq_server: Server, tube: str) -> None:
    with Client(beanq_server.url(tube)) as producer, Client(beanq_server.address) as observer:
        job_id = producer.put(encode_task("slow"), ttr=1)
        worker = Worker(Client(beanq_server.url(tube)), tube, concurrency=2, reserve_timeout=0)
        seen: list[tuple[str, int]] = []

        @worker.task("slow")
        def slow() -> None:
            time.sleep(2.6)  # the TTR is 1 s
            stats = observer.stats_job(job_id)
            seen.append((stats["state"], stats["timeouts"]))

        worker.run(burst=True, handle_signals=False)
        assert seen == [("reserved", 0)]  # touched in time, never timed out, run once
        assert worker.outcomes[Outcome.DELETED] == 1


def test_stop_releases_a_job_reserved_after_it(
    beanq_server: Server, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(beanq_server.url(tube)) as producer:
        worker = Worker(Client(beanq_server.url(tube)), tube, reserve_timeout=5)
        ran = []
        worker.task("work")(lambda: ran.append(1))
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        deadline = time.monotonic() + 10
        while producer.stats_tube(tube)["current-waiting"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        worker.stop()
        job_id = producer.put(encode_task("work"))  # handed to the waiting slot
        thread.join(10)
        assert not thread.is_alive()
        stats = producer.stats_job(job_id)
        assert (stats["state"], stats["reserves"], stats["releases"]) == ("ready", 1, 1)
        assert ran == []
        assert outcomes(caplog) == [("unstarted", "?", None)]


WORKER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from beanq_client import Client, Worker

    worker = Worker(Client(sys.argv[1]), sys.argv[2], concurrency=2, reserve_timeout=1)

    def say(line):  # one write per line: print() from two threads can interleave
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    @worker.task("slow")
    def slow(n):
        say(f"start {n}")
        time.sleep(1.0)
        say(f"done {n}")

    worker.run()
    print("exited", flush=True)
    """
)


def test_sigterm_finishes_running_jobs_and_leaves_the_rest(beanq_server: Server, tube: str) -> None:
    with Client(beanq_server.url(tube)) as producer:
        ids = [producer.put(encode_task("slow", n)) for n in range(6)]
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, beanq_server.url(tube), tube],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 15
            while producer.stats_tube(tube)["current-jobs-reserved"] < 2:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 0, err
        lines = out.split("\n")
        started = [line for line in lines if line.startswith("start")]
        finished = [line for line in lines if line.startswith("done")]
        assert len(started) == 2 and sorted(started) == sorted(
            s.replace("done", "start") for s in finished
        )
        assert lines[-2] == "exited"
        stats = producer.stats_tube(tube)
        assert stats["cmd-delete"] == 2 and stats["current-jobs-reserved"] == 0
        assert stats["current-jobs-ready"] == 4
        # The two oldest ran; the others were never handed out.
        assert started == ["start 0", "start 1"] or started == ["start 1", "start 0"]
        for job_id in ids[2:]:
            stats_job = producer.stats_job(job_id)
            assert (stats_job["state"], stats_job["reserves"]) == ("ready", 0)


def test_worker_on_a_pool_of_beanq_and_beanstalkd(
    beanq_server: Server, beanstalkd_server: Server, tube: str
) -> None:
    pool = Pool([beanq_server.address, beanstalkd_server.address])
    pool.use(tube)
    for n in range(8):
        pool.put(encode_task("square", n))
    worker = Worker(pool, tube, concurrency=2, reserve_timeout=0)
    squares: list[int] = []
    worker.task("square")(lambda n: squares.append(n * n))
    worker.run(burst=True, handle_signals=False)
    assert sorted(squares) == [n * n for n in range(8)]
    for server in (beanq_server, beanstalkd_server):
        with Client(server.address) as direct:
            assert direct.stats_tube(tube)["cmd-delete"] == 4
    pool.close()


def test_coroutine_handlers_need_the_trio_worker(beanq_server: Server) -> None:
    worker = Worker(Client(beanq_server.address))

    async def handler() -> None:
        pass

    with pytest.raises(TypeError):
        worker.task("async")(handler)
