"""The blocking client against a spawned beanq and the real beanstalkd: every method, every
error reply a server can be made to send, stats on real output, and the fake server for the
replies no real server can be made to send."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from beanq_client import (
    JSON,
    BadFormatError,
    BeanstalkConnectionError,
    BuriedError,
    Client,
    DeadlineSoonError,
    DecodeError,
    DrainingError,
    ExpectedCrlfError,
    InternalError,
    Job,
    JobTooBigError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    PipelineError,
    TimedOutError,
    UnexpectedReplyError,
    UnknownCommandError,
)

from beanq.protocol import Reply
from tests.client.conftest import Server, fake_server
from tests.servers import spawn_beanq, spawn_beanstalkd


@pytest.fixture
def client(server: Server, tube: str) -> Iterator[Client[bytes]]:
    with Client(server.url(tube), timeout=10) as c:
        yield c


def test_producer_and_consumer_cycle(client: Client[bytes], tube: str) -> None:
    assert client.using() == tube and client.watching() == [tube]
    low = client.put(b"low", priority=10)
    high = client.put(b"high", priority=5, ttr=30)
    job = client.reserve(timeout=1)
    assert job == Job(high, b"high")
    stats = client.stats_job(job)
    assert (stats["state"], stats["pri"], stats["ttr"], stats["tube"]) == ("reserved", 5, 30, tube)
    client.touch(job)
    client.release(job)  # keeps its priority (5), read from stats-job
    assert client.stats_job(high)["pri"] == 5 and client.stats_job(high)["releases"] == 1
    job = client.reserve(timeout=1)
    assert job.id == high
    client.release(job, priority=20, delay=0)
    assert client.reserve(timeout=1) == Job(low, b"low")  # now 10 < 20
    client.bury(low)  # keeps priority 10
    assert client.stats_job(low)["state"] == "buried" and client.stats_job(low)["pri"] == 10
    assert client.peek_buried() == Job(low, b"low")
    assert client.kick(5) == 1
    assert client.peek_ready() == Job(low, b"low")
    client.delete(low)
    job = client.reserve(timeout=1)
    client.bury(job, priority=3)
    assert client.stats_job(job)["pri"] == 3
    client.kick_job(job)
    client.delete(job)
    with pytest.raises(TimedOutError):
        client.reserve(timeout=0)
    assert client.stats_tube(tube)["total-jobs"] == 2


def test_peeks_delays_reserve_job_and_pause(client: Client[bytes], tube: str) -> None:
    later = client.put(b"later", delay=100)
    assert client.peek_delayed() == Job(later, b"later")
    assert client.peek(later) == Job(later, b"later")
    with pytest.raises(NotFoundError):
        client.peek_ready()
    with pytest.raises(NotFoundError):
        client.peek_buried()
    assert client.reserve_job(later) == Job(later, b"later")  # reserve-job takes delayed jobs
    client.release(later, delay=100)
    assert client.stats_job(later)["state"] == "delayed"
    client.kick_job(later)
    assert client.stats_job(later)["state"] == "ready"
    client.pause_tube(tube, 100)
    tube_stats = client.stats_tube(tube)
    assert tube_stats["pause"] == 100 and tube_stats["name"] == tube
    with pytest.raises(TimedOutError):
        client.reserve(timeout=0)  # paused
    client.pause_tube(tube, 0)
    job = client.reserve(timeout=2)
    client.delete(job)


def test_tubes_watch_ignore_and_use(client: Client[bytes], tube: str) -> None:
    other = tube + "-b"
    assert client.watch(other) == 2
    assert sorted(client.watching()) == sorted([tube, other])
    assert other in client.tubes() and tube in client.tubes()
    assert client.ignore(other) == 1
    with pytest.raises(NotIgnoredError):
        client.ignore(tube)
    assert client.use(other) == other and client.using() == other
    job_id = client.put(b"x")
    assert client.stats_job(job_id)["tube"] == other
    with pytest.raises(TimedOutError):
        client.reserve(timeout=0)  # not watching `other` any more
    client.watch(other)
    client.delete(client.reserve(timeout=1))


def test_stats_are_typed_on_real_output(client: Client[bytes], server: Server) -> None:
    stats = client.stats()
    assert stats["pid"] == server.proc.pid
    assert isinstance(stats["rusage-utime"], float) and isinstance(stats["draining"], bool)
    assert stats["draining"] is False
    assert isinstance(stats["version"], str) and isinstance(stats["hostname"], str)
    assert isinstance(stats["id"], str) and len(stats["id"]) == 16
    assert stats["max-job-size"] == 65535
    ints = [k for k, v in stats.items() if k.startswith(("cmd-", "current-", "total-"))]
    assert len(ints) > 30 and all(type(stats[k]) is int for k in ints)  # type: ignore[literal-required]


def test_numeric_tube_names_stay_strings(server: Server) -> None:
    name = f"{int(time.time() * 1000) % 10**9:09d}"  # beanstalkd 1.12 writes it unquoted
    with Client(server.url(name)) as c:
        job_id = c.put(b"n")
        assert c.stats_job(job_id)["tube"] == name
        assert c.stats_tube(name)["name"] == name
        assert name in c.tubes()
        c.delete(job_id)


def test_error_replies_from_real_servers(client: Client[bytes], tube: str) -> None:
    with pytest.raises(NotFoundError):
        client.delete(10**12)
    with pytest.raises(NotFoundError):
        client.stats_job(10**12)
    with pytest.raises(JobTooBigError):
        client.put(b"x" * 65536)
    with pytest.raises(ExpectedCrlfError):
        client.execute_raw(b"put 0 0 1 1\r\nxyz")
    with pytest.raises(BadFormatError):
        client.execute_raw(b"delete abc\r\n")
    with pytest.raises(UnknownCommandError):
        client.execute_raw(b"frobnicate\r\n")
    assert client.execute_raw(b"list-tube-used\r\n") == Reply("USING", (tube,))
    # The connection is still in step after every error.
    assert client.using() == tube


def test_deadline_soon(client: Client[bytes]) -> None:
    client.put(b"short", ttr=1)
    job = client.reserve(timeout=1)
    start = time.monotonic()
    with pytest.raises(DeadlineSoonError):
        client.reserve(timeout=5)  # a TTR of 1 s is inside the 1 s safety margin at once
    assert time.monotonic() - start < 2
    client.delete(job)


@pytest.mark.parametrize("kind", ["beanq", "beanstalkd"])
def test_draining(kind: str) -> None:
    spawn = spawn_beanq if kind == "beanq" else spawn_beanstalkd
    with spawn() as (host, port, proc), Client((host, port), timeout=5) as c:
        c.put(b"before")
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not c.stats()["draining"]:
            assert time.monotonic() < deadline, "the server never started draining"
            time.sleep(0.01)
        with pytest.raises(DrainingError):
            c.put(b"after")
        assert c.stats()["current-jobs-ready"] == 1


def test_out_of_memory_from_beanq_with_a_job_limit() -> None:
    with spawn_beanq("--max-jobs=1") as (host, port, _proc), Client((host, port)) as c:
        c.put(b"one")
        with pytest.raises(OutOfMemoryError):
            c.put(b"two")
        assert c.stats()["current-jobs-ready"] == 1


def test_replies_only_a_fake_server_sends() -> None:
    with (
        fake_server(
            b"BURIED 41\r\n",
            b"OUT_OF_MEMORY\r\n",
            b"INTERNAL_ERROR\r\n",
            b"BURIED\r\n",
            b"DELETED\r\n",
            b"TOUCHED\r\n",
        ) as fake,
        Client(fake.address) as c,
    ):
        with pytest.raises(BuriedError) as info:
            c.put(b"x")
        assert info.value.id == 41
        with pytest.raises(OutOfMemoryError):
            c.put(b"x")
        with pytest.raises(InternalError):
            c.put(b"x")
        with pytest.raises(BuriedError) as info:
            c.release(1, priority=0)
        assert info.value.id is None
        with pytest.raises(UnexpectedReplyError):
            c.touch(1)  # answered DELETED
        c.touch(1)  # still in step
        assert fake.received[-1] == b"touch 1"


def test_garbage_from_the_server_breaks_the_connection() -> None:
    with fake_server(b"\xff\xfe\r\n") as fake, Client(fake.address) as c:
        with pytest.raises(BeanstalkConnectionError) as info:
            c.delete(1)
        assert info.value.sent
        assert not c.connected


def test_bodies_as_text_json_and_bad_json(server: Server, tube: str) -> None:
    with Client(server.url(tube), encoding="utf-8") as text:
        text.put("héllo")
        job = text.reserve(timeout=1)
        assert job.body == "héllo"
        text.delete(job)
    with Client(server.url(tube), serializer=JSON) as js, Client(server.url(tube)) as raw:
        js.put({"n": [1, 2]})
        assert js.reserve(timeout=1).body == {"n": [1, 2]}
        raw.put(b"{not json")
        with pytest.raises(DecodeError) as info:
            js.reserve(timeout=1)
        assert info.value.body == b"{not json"
        js.bury(info.value.job_id)  # the caller can still settle the job it holds
        assert raw.peek_buried().body == b"{not json"


def test_pipeline_sends_many_puts_in_one_write(server: Server, tube: str) -> None:
    with Client(server.url(tube)) as c:
        sent: list[bytes] = []
        sock = c._sock
        assert sock is not None
        real_sendall = sock.sendall

        class Spy:
            def __getattr__(self, name: str) -> object:
                return getattr(sock, name)

            def sendall(self, data: bytes) -> None:
                sent.append(data)
                real_sendall(data)

        c._sock = Spy()  # type: ignore[assignment]
        with c.pipeline() as p:
            for i in range(50):
                p.put(b"job %d" % i, priority=i)
            p.use(tube + "-other")
            p.put(b"elsewhere")
        assert len(sent) == 1 and sent[0].count(b"put ") == 51
        assert len(p.results) == 51 and p.results == sorted(p.results)
        assert c.stats_tube(tube)["current-jobs-ready"] == 50
        assert c.stats_job(p.results[-1])["tube"] == tube + "-other"
        assert c.using() == tube + "-other"
        c._sock = sock


def test_pipeline_reports_each_failure(server: Server, tube: str) -> None:
    with Client(server.url(tube)) as c:
        p = c.pipeline()
        p.put(b"ok")
        p.put(b"x" * 70000)
        p.put(b"ok too")
        with pytest.raises(PipelineError) as info:
            p.execute()
        first, error, last = info.value.results
        assert isinstance(first, int) and isinstance(last, int)
        assert isinstance(error, JobTooBigError)
        assert c.stats_tube(tube)["current-jobs-ready"] == 2
        assert c.pipeline().execute() == []


def test_threads_can_share_a_client(server: Server, tube: str) -> None:
    with Client(server.url(tube)) as c:
        ids: list[int] = []

        def produce() -> None:
            for _ in range(50):
                ids.append(c.put(b"t"))

        threads = [threading.Thread(target=produce) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(set(ids)) == 200
        assert c.stats_tube(tube)["current-jobs-ready"] == 200


@contextlib.contextmanager
def unix_beanq(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """beanq on a unix socket (``tests.servers`` probes TCP only)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "beanq", "-l", f"unix:{path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "beanq exited"
            assert time.monotonic() < deadline, "beanq did not listen on the unix socket"
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(path))
                break
            except OSError:
                time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_unix_socket_address() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "beanq.sock"
        with unix_beanq(path), Client(f"unix:{path}") as c:
            job_id = c.put(b"over unix")
            assert c.peek(job_id).body == b"over unix"


def test_beanstalk_url_from_the_environment(
    server: Server, tube: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEANSTALK_URL", server.url(tube))
    with Client() as c:
        assert c.using() == tube and c.watching() == [tube]


def test_socket_timeout_drops_the_connection() -> None:
    # A server that never answers: the call fails after the timeout, and the connection is
    # not reused (its late reply would be read as the answer to the next command).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with listener, Client(listener.getsockname(), timeout=0.2) as c:
        start = time.monotonic()
        with pytest.raises(BeanstalkConnectionError) as info:
            c.stats()
        assert 0.15 < time.monotonic() - start < 2
        assert info.value.sent and not c.connected
        with pytest.raises(BeanstalkConnectionError) as info:
            c.stats()  # reconnect=False
        assert not info.value.sent


def test_closed_client_refuses_and_connect_reopens(server: Server, tube: str) -> None:
    c = Client(server.url(tube))
    c.connect()
    c.close()
    with pytest.raises(BeanstalkConnectionError) as info:
        c.stats()
    assert not info.value.sent
    c.connect()
    assert c.using() == tube  # tubes restored on the new connection
    c.close()
    assert repr(c).startswith("<Client ")
