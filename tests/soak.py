"""A soak test: one beanq process under mixed load, hostile clients included, then an audit.

    python -m tests.soak --seconds 300

For ``--seconds`` the server gets, all at once: producers pipelining puts into three tubes,
workers reserving, deleting, releasing, burying, touching and dropping their connection while
holding a job, a kicker, clients that send garbage (bad bytes, over-long lines, oversized and
malformed puts, half commands), slow readers (a 64 KiB job peeked thousands of times in one
pipelined burst by a client that never reads), connect/disconnect churn, and a probe that
times a round trip every 50 ms. Then the producers stop, the workers drain every tube, and
the audit checks:

* every acknowledged job (an ``INSERTED`` reply) was reserved with its body intact and deleted
  exactly once, and the server made no job nobody acknowledged (``total-jobs``);
* ``stats`` is consistent: nothing ready, reserved, delayed, buried or waiting; only the
  auditor connected; per-command counters cover what the clients did;
* the server's peak RSS stayed under ``--rss-limit-mib`` and its probe latency under
  ``--max-latency``; the server is alive and logged no traceback.

The exit status is 0 only if every check passed. ``tests/test_hardening.py`` runs a short
version through ``run``; everything here is bounded in time, and the server is killed at the
end whatever happens.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from beanq import protocol as p
from tests.servers import ServerProcess, spawn_beanq

SOAK_TUBES = (b"soak-0", b"soak-1", b"soak-2")
SLOW_TUBE = b"soak-slow"
BAD_TUBE = b"soak-bad"
SLOW_BODY_SIZE = 65535
IO_TIMEOUT = 10.0  # no single round trip may take longer than this
DRAIN_TIMEOUT = 60.0
BACKLOG_LIMIT = 5_000  # producers pause while this many acknowledged jobs are unfinished
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


# --- a small blocking client -------------------------------------------------------------------


class Client:
    """One blocking connection with a timeout on every wait; replies parsed by ``ReplyReader``."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = p.ReplyReader()
        self.replies: list[p.Reply] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> p.Reply:
        while not self.replies:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("server closed the connection")
            self.replies += self.reader.feed(data)
        return self.replies.pop(0)

    def ask(self, data: bytes) -> p.Reply:
        self.send(data)
        return self.reply()

    def stats(self, command: bytes = b"stats\r\n") -> dict[str, int | bool | str]:
        reply = self.ask(command)
        if reply.word != "OK" or reply.body is None:
            raise AssertionError(f"{command!r} answered {reply}")
        return p.parse_yaml_dict(reply.body)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A process's resident set (or, with ``VmHWM``, its peak) in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise LookupError(field_name)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


JOB_COUNTS = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
)


def stats_problems(client: Client) -> list[str]:
    """What is inconsistent between ``stats`` and the ``stats-tube`` of every tube."""
    problems: list[str] = []
    totals = client.stats()
    tubes = p.parse_yaml_list(client.ask(b"list-tubes\r\n").body or b"")
    sums = dict.fromkeys(JOB_COUNTS, 0)
    for name in tubes:
        reply = client.ask(b"stats-tube %s\r\n" % name.encode())
        if reply.word != "OK" or reply.body is None:
            problems.append(f"stats-tube {name} answered {reply}")
            continue
        tube = p.parse_yaml_dict(reply.body)
        for key in JOB_COUNTS:
            value = tube[key]
            assert isinstance(value, int)
            sums[key] += value
    for key in JOB_COUNTS:
        if totals[key] != sums[key]:
            problems.append(f"stats {key}={totals[key]} but the tubes add up to {sums[key]}")
    urgent, ready = totals["current-jobs-urgent"], totals["current-jobs-ready"]
    assert isinstance(urgent, int) and isinstance(ready, int)
    if urgent > ready:
        problems.append(f"{urgent} urgent jobs but only {ready} ready")
    return problems


# --- the load ------------------------------------------------------------------------------------


def make_body(rng: random.Random, tag: str) -> bytes:
    """A body that carries its own checksum, so a worker can tell it arrived intact."""
    payload = f"{tag}:{rng.getrandbits(64):016x}:".encode() + rng.randbytes(rng.randrange(0, 200))
    return hashlib.sha1(payload).hexdigest().encode() + b":" + payload


def body_intact(body: bytes) -> bool:
    digest, _, payload = body.partition(b":")
    return hashlib.sha1(payload).hexdigest().encode() == digest


GARBAGE_LINES = (
    b"put -1 0 0 1\r\nx\r\n",
    b"put 0 0 0 4294967296\r\n",
    b"put 0 0 1 99999999999999999999\r\n",
    b"put 0 0 1 3\r\nabcdefgh\r\n",  # EXPECTED_CRLF, then "fgh" is an unknown command
    b"put 0 0 1 70000\r\n" + b"z" * 70000 + b"\r\n",  # JOB_TOO_BIG (-z default is 65535)
    b"put 1 2 3\r\n",
    b"put 0 0 1 1 extra\r\nx\r\n",
    b"reserve-with-timeout -1\r\n",
    b"reserve-with-timeout x\r\n",
    # no prefix of a garbage line may be a valid command that touches jobs: truncated to
    # "delete 18" and followed by a CRLF, "delete 18446744073709551616" deletes job 18
    b"delete -18446744073709551616\r\n",
    b"delete\r\n",
    b"release 1 2\r\n",
    b"use -bad\r\n",
    b"use " + b"t" * 201 + b"\r\n",
    b"watch \x00\r\n",
    b"pause-tube\r\n",
    b"kick -5\r\n",
    b"statsx\r\n",
    b"nonsense command\r\n",
    b"\r\n",
    b"\n\n\r\r",
    b"a" * 5000 + b"\r\n",
    b"\x00\xff\xfe\r\n",
    b"list-tubes " + b"y" * 300,
)


# Commands garbage must never form: a truncated line followed by another can be a whole put
# ("put 0 0 1 7\r\n" then "kick -5\r\n", about once in 20,000 sessions), which any server
# rightly stores.
_JOB_CHANGES = (p.Put, p.Release, p.Bury, p.Flush, p.Move, p.JobCommand)


def garbage(rng: random.Random) -> bytes:
    while True:
        parts = []
        for _ in range(rng.randrange(1, 12)):
            roll = rng.random()
            if roll < 0.4:
                parts.append(rng.choice(GARBAGE_LINES))
            elif roll < 0.8:
                parts.append(rng.randbytes(rng.randrange(1, 400)))
            else:
                parts.append(rng.choice(GARBAGE_LINES)[: rng.randrange(1, 20)])
        data = b"".join(parts)
        if not any(isinstance(event, _JOB_CHANGES) for event in p.CommandReader().feed(data)):
            return data


@dataclass
class Report:
    """What a soak run saw. ``errors`` is empty when every check passed."""

    seconds: float = 0.0
    inserted: int = 0
    deleted: int = 0
    reserves: int = 0
    releases: int = 0
    buries: int = 0
    abandoned: int = 0  # jobs a worker held when it dropped its connection
    bad_sessions: int = 0
    slow_sessions: int = 0
    churn_connections: int = 0
    probes: int = 0
    max_latency: float = 0.0
    rss_start_kib: int = 0
    rss_peak_kib: int = 0  # VmHWM of the server at the end of the load
    rss_end_kib: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [
            f"soak: {self.seconds:.1f}s, {self.inserted} jobs acknowledged, {self.deleted} deleted,"
            f" {self.reserves} reserves, {self.releases} releases, {self.buries} buries,"
            f" {self.abandoned} held by dropped workers",
            f"  {self.bad_sessions} garbage sessions, {self.slow_sessions} slow readers,"
            f" {self.churn_connections} churn connections, {self.probes} probes"
            f" (max latency {self.max_latency * 1000:.0f} ms)",
            f"  server RSS: start {self.rss_start_kib / 1024:.1f} MiB,"
            f" peak {self.rss_peak_kib / 1024:.1f} MiB, end {self.rss_end_kib / 1024:.1f} MiB",
        ]
        lines += [f"  FAILED: {error}" for error in self.errors]
        lines.append("  result: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


class Soak:
    """Shared state of one run. Each activity is a thread; all stop at ``stop_*`` events."""

    def __init__(self, host: str, port: int, proc: ServerProcess, seed: int, slow_burst: int):
        self.host = host
        self.port = port
        self.proc = proc
        self.seed = seed
        self.slow_burst = slow_burst
        self.lock = threading.Lock()
        # Bodies are known by their first 40 bytes, the SHA-1 of the rest (see make_body).
        self.acked: dict[int, bytes] = {}  # id -> body digest, from INSERTED replies
        self.seen: dict[int, bytes] = {}  # id -> body digest, as last reserved
        self.deleted: set[int] = set()
        self.report = Report()
        self.stop_load = threading.Event()  # producers, garbage, slow readers, churn
        self.stop_work = threading.Event()  # workers, kicker, probe

    def error(self, message: str) -> None:
        with self.lock:
            if len(self.report.errors) < 50:
                self.report.errors.append(message)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.report, name, getattr(self.report, name) + n)

    def connect(self) -> Client:
        return Client(self.host, self.port)

    def unfinished(self) -> int:
        with self.lock:
            return self.report.inserted - self.report.deleted

    def record_deleted(self, job_id: int) -> None:
        with self.lock:
            if job_id in self.deleted:
                self.report.errors.append(f"job {job_id} deleted twice")
            self.deleted.add(job_id)
            self.report.deleted += 1

    # --- activities ---

    def producer(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        tube = SOAK_TUBES[n % len(SOAK_TUBES)]
        seq = 0
        with self.connect() as c:
            if c.ask(b"use %s\r\n" % tube) != p.Reply("USING", (tube.decode(),)):
                self.error(f"producer {n}: use failed")
                return
            while not self.stop_load.is_set():
                if self.unfinished() > BACKLOG_LIMIT:
                    time.sleep(0.01)
                    continue
                bodies = []
                for _ in range(rng.randrange(1, 20)):
                    seq += 1
                    bodies.append(make_body(rng, f"p{n}-{seq}"))
                commands = []
                for body in bodies:
                    pri = rng.choice((0, 100, 1023, 1024, 5000))
                    delay = 1 if rng.random() < 0.05 else 0
                    commands.append(p.encode_put(body, pri, delay, 60))
                c.send(b"".join(commands))
                for body in bodies:
                    reply = c.reply()
                    if reply.word != "INSERTED":
                        self.error(f"producer {n}: put answered {reply}")
                        return
                    with self.lock:
                        self.acked[int(reply.args[0])] = body[:40]
                        self.report.inserted += 1

    def worker(self, n: int) -> None:
        rng = random.Random(self.seed * 2000 + n)
        c = self._worker_connection()
        try:
            while not self.stop_work.is_set():
                reply = c.ask(b"reserve-with-timeout 1\r\n")
                if reply.word in ("TIMED_OUT", "DEADLINE_SOON"):
                    continue
                if reply.word != "RESERVED" or reply.body is None:
                    self.error(f"worker {n}: reserve answered {reply}")
                    return
                job_id = int(reply.args[0])
                self.count("reserves")
                if not body_intact(reply.body):
                    self.error(f"worker {n}: job {job_id} body corrupt: {reply.body[:60]!r}")
                with self.lock:
                    self.seen[job_id] = reply.body[:40]
                roll = rng.random()
                if roll < 0.05:  # drop the connection while holding the job
                    self.count("abandoned")
                    c.close()
                    c = self._worker_connection()
                    continue
                if roll < 0.12:
                    expect, command = (
                        "RELEASED",
                        b"release %d %d %d\r\n"
                        % (
                            job_id,
                            rng.choice((0, 2000)),
                            rng.choice((0, 0, 1)),
                        ),
                    )
                    self.count("releases")
                elif roll < 0.17:
                    expect, command = "BURIED", b"bury %d 10\r\n" % job_id
                    self.count("buries")
                else:
                    if roll < 0.2 and c.ask(b"touch %d\r\n" % job_id) != p.Reply("TOUCHED"):
                        self.error(f"worker {n}: touch {job_id} failed")
                    expect, command = "DELETED", b"delete %d\r\n" % job_id
                reply = c.ask(command)
                if reply.word != expect:
                    self.error(f"worker {n}: {command!r} answered {reply}")
                    return
                if expect == "DELETED":
                    self.record_deleted(job_id)
        except (OSError, EOFError, p.ProtocolError) as exc:
            self.error(f"worker {n}: {exc!r}")
        finally:
            c.close()

    def _worker_connection(self) -> Client:
        c = self.connect()
        for tube in SOAK_TUBES:
            c.ask(b"watch %s\r\n" % tube)
        c.ask(b"ignore default\r\n")
        return c

    def kicker(self) -> None:
        with self.connect() as c:
            while not self.stop_work.wait(0.2):
                for tube in SOAK_TUBES:
                    c.ask(b"use %s\r\n" % tube)
                    reply = c.ask(b"kick 1000\r\n")
                    if reply.word != "KICKED":
                        self.error(f"kicker: kick answered {reply}")

    def bad_client(self, n: int) -> None:
        rng = random.Random(self.seed * 3000 + n)
        while not self.stop_load.is_set():
            self.count("bad_sessions")
            try:
                with self.connect() as c:
                    if c.ask(b"use %s\r\n" % BAD_TUBE).word != "USING":
                        self.error("bad client: use failed")
                    c.send(garbage(rng))
                    if rng.random() < 0.3:
                        continue  # hang up without reading a thing
                    self._read_garbage_replies(c)
            except OSError:
                pass  # the server may close on us; that is allowed
            time.sleep(rng.random() * 0.05)

    def _read_garbage_replies(self, c: Client) -> None:
        allowed = {
            "BAD_FORMAT",
            "UNKNOWN_COMMAND",
            "EXPECTED_CRLF",
            "JOB_TOO_BIG",
            "NOT_FOUND",
            "USING",
            "WATCHING",
            "NOT_IGNORED",
            "KICKED",
            "TIMED_OUT",
        }
        c.sock.settimeout(0.2)
        try:
            while True:
                reply = c.reply()
                if reply.word == "INSERTED":
                    self.error(f"garbage made a job: {reply}")
                elif reply.word not in allowed and reply.word != "OK":
                    self.error(f"garbage answered {reply}")
        except (TimeoutError, EOFError):
            pass
        except p.ProtocolError as exc:
            self.error(f"garbage got an unparsable reply: {exc}")

    def slow_reader(self, n: int) -> None:
        rng = random.Random(self.seed * 4000 + n)
        while not self.stop_load.is_set():
            body = make_body(rng, f"slow{n}")
            body += b"." * (SLOW_BODY_SIZE - len(body))
            try:
                with self.connect() as c:
                    c.ask(b"use %s\r\n" % SLOW_TUBE)
                    reply = c.ask(p.encode_put(body, 0, 0, 60))
                    if reply.word != "INSERTED":
                        self.error(f"slow reader: put answered {reply}")
                        return
                    job_id = int(reply.args[0])
                    with self.lock:
                        self.acked[job_id] = body[:40]
                        self.report.inserted += 1
                    self.count("slow_sessions")
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                    c.send(b"peek %d\r\n" % job_id * self.slow_burst)  # one burst, never read
                    self.stop_load.wait(rng.uniform(0.5, 1.5))
                # a fresh connection cleans up, and checks the job is intact
                with self.connect() as c:
                    c.ask(b"use %s\r\n" % SLOW_TUBE)
                    reply = c.ask(b"peek %d\r\n" % job_id)
                    if reply.body != body:
                        self.error(f"slow reader: peek {job_id} answered {reply.word}")
                    if c.ask(b"delete %d\r\n" % job_id) == p.Reply("DELETED"):
                        self.record_deleted(job_id)
                    else:
                        self.error(f"slow reader: could not delete job {job_id}")
            except (OSError, EOFError) as exc:
                self.error(f"slow reader: {exc!r}")
                return

    def churn(self) -> None:
        rng = random.Random(self.seed * 5000)
        while not self.stop_load.is_set():
            try:
                with self.connect() as c:
                    self.count("churn_connections")
                    roll = rng.random()
                    if roll < 0.5:
                        if c.ask(b"list-tube-used\r\n") != p.Reply("USING", ("default",)):
                            self.error("churn: list-tube-used failed")
                    elif roll < 0.7:
                        c.send(b"reserve-with-timeout 5\r\n")  # hang up while blocked
                    elif roll < 0.9:
                        c.send(b"put 0 0 10 100\r\nhalf a bo")  # hang up mid-put
                    if roll > 0.95:  # close with a reset rather than a FIN
                        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError as exc:
                self.error(f"churn: {exc!r}")
            time.sleep(0.005)

    def probe(self) -> None:
        with self.connect() as c:
            while not self.stop_work.wait(0.05):
                start = time.monotonic()
                if c.ask(b"list-tube-used\r\n") != p.Reply("USING", ("default",)):
                    self.error("probe: list-tube-used failed")
                elapsed = time.monotonic() - start
                with self.lock:
                    self.report.probes += 1
                    self.report.max_latency = max(self.report.max_latency, elapsed)


def _guard(soak: Soak, name: str, target: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        except Exception as exc:
            soak.error(f"{name} crashed: {exc!r}")

    return run


def _threads(soak: Soak, producers: int, workers: int) -> tuple[list[threading.Thread], ...]:
    def thread(name: str, target: Callable[[], None]) -> threading.Thread:
        return threading.Thread(target=_guard(soak, name, target), name=name, daemon=True)

    load = [thread(f"producer-{n}", lambda n=n: soak.producer(n)) for n in range(producers)]
    load += [thread(f"bad-{n}", lambda n=n: soak.bad_client(n)) for n in range(2)]
    load += [thread(f"slow-{n}", lambda n=n: soak.slow_reader(n)) for n in range(2)]
    load.append(thread("churn", soak.churn))
    work = [thread(f"worker-{n}", lambda n=n: soak.worker(n)) for n in range(workers)]
    work += [thread("kicker", soak.kicker), thread("probe", soak.probe)]
    return load, work


def _join(threads: list[threading.Thread], deadline: float, soak: Soak) -> None:
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            soak.error(f"thread {t.name} did not stop in time")


def _drain(soak: Soak, deadline: float) -> None:
    """Wait until the workers finished every acknowledged job (or the deadline passed)."""
    with soak.connect() as c:
        while time.monotonic() < deadline:
            stats = c.stats()
            busy = sum(int(stats[key]) for key in JOB_COUNTS[1:])
            if busy == 0 and soak.unfinished() == 0:
                return
            time.sleep(0.1)
    soak.error(f"{soak.unfinished()} acknowledged jobs still unfinished after the drain")


def _audit(soak: Soak, auditor: Client) -> None:
    report = soak.report
    with soak.lock:
        acked = dict(soak.acked)
        deleted = set(soak.deleted)
        seen = dict(soak.seen)
    lost = sorted(acked.keys() - deleted)
    if lost:
        soak.error(f"{len(lost)} acknowledged jobs never deleted, e.g. {lost[:10]}")
    phantom = sorted(deleted - acked.keys())
    if phantom:
        soak.error(f"{len(phantom)} jobs deleted that nobody acknowledged: {phantom[:10]}")
    changed = [i for i, body in seen.items() if i in acked and acked[i] != body]
    if changed:
        soak.error(f"{len(changed)} jobs reserved with another body than was put: {changed[:10]}")
    for job_id in lost[:20]:
        reply = auditor.ask(b"peek %d\r\n" % job_id)
        soak.error(f"lost job {job_id}: peek answers {reply.word}")
    stats = auditor.stats()
    expected: dict[str, int] = {
        "total-jobs": len(acked),
        "current-jobs-ready": 0,
        "current-jobs-reserved": 0,
        "current-jobs-delayed": 0,
        "current-jobs-buried": 0,
        "current-waiting": 0,
        "current-connections": 1,
        "current-producers": 0,
        "current-workers": 0,
    }
    for key, value in expected.items():
        if stats[key] != value:
            soak.error(f"stats {key} is {stats[key]}, expected {value}")
    at_least = {
        "cmd-put": len(acked),
        "cmd-delete": len(deleted),
        "cmd-reserve-with-timeout": report.reserves,
        "cmd-release": report.releases,
        "cmd-bury": report.buries,
        "total-connections": report.churn_connections + report.bad_sessions,
    }
    for key, value in at_least.items():
        if int(stats[key]) < value:
            soak.error(f"stats {key} is {stats[key]}, but the clients did at least {value}")
    for problem in stats_problems(auditor):
        soak.error(problem)


def run(
    seconds: float,
    *,
    producers: int = 4,
    workers: int = 4,
    slow_burst: int = 4096,
    rss_limit_mib: float = 160.0,
    max_latency: float = 2.0,
    seed: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Report:
    """Soak a fresh beanq for ``seconds`` and audit it; never raises for a failed check."""
    seed = random.randrange(1 << 30) if seed is None else seed
    log(f"soak: seed {seed}, {seconds}s, slow-reader burst {slow_burst} peeks")
    with spawn_beanq() as (host, port, proc):
        soak = Soak(host, port, proc, seed, slow_burst)
        report = soak.report
        time.sleep(0.3)  # start-up (importing trio) is over
        report.rss_start_kib = rss_kib(proc.pid)
        load, work = _threads(soak, producers, workers)
        started = time.monotonic()
        for t in (*work, *load):
            t.start()
        soak.stop_load.wait(seconds)
        soak.stop_load.set()
        _join(load, time.monotonic() + 30, soak)
        log(f"soak: load stopped after {time.monotonic() - started:.1f}s; draining")
        _drain(soak, time.monotonic() + DRAIN_TIMEOUT)
        soak.stop_work.set()
        _join(work, time.monotonic() + 2 * IO_TIMEOUT, soak)
        report.seconds = time.monotonic() - started
        report.rss_peak_kib = rss_kib(proc.pid, "VmHWM")
        if proc.poll() is not None:
            soak.error(f"the server exited: {proc.describe()}")
            return report
        with Client(host, port) as auditor:
            _audit(soak, auditor)
        report.rss_end_kib = rss_kib(proc.pid)
        if report.rss_peak_kib > rss_limit_mib * 1024:
            soak.error(
                f"server peak RSS {report.rss_peak_kib / 1024:.0f} MiB is over the"
                f" {rss_limit_mib:.0f} MiB limit"
            )
        if report.max_latency > max_latency:
            soak.error(f"a probe waited {report.max_latency:.2f}s (limit {max_latency}s)")
        output = proc.output(limit=1 << 20)
        if "Traceback" in output or "internal error" in output:
            soak.error(f"the server logged an error: {output[-2000:]}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the load phase")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--slow-burst", type=int, default=4096, help="peeks a slow reader pipelines per send"
    )
    parser.add_argument("--rss-limit-mib", type=float, default=160.0)
    parser.add_argument("--max-latency", type=float, default=2.0, help="seconds, per probe")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    report = run(
        args.seconds,
        producers=args.producers,
        workers=args.workers,
        slow_burst=args.slow_burst,
        rss_limit_mib=args.rss_limit_mib,
        max_latency=args.max_latency,
        seed=args.seed,
        log=lambda line: print(line, flush=True),
    )
    print(report.summary(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
