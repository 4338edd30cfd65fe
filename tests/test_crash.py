"""kill -9 at random moments under load: no acknowledged change is ever lost.

``beanq -b DIR -f 0`` answers a command only once its record is on disk. Clients put, reserve,
release (with new priorities, with and without delay), bury, kick, reserve-job and delete,
concurrently, while a model records what each acknowledged reply established. Every job is
*claimed* by one client at a time, so the outcome of each command is known in advance: while a
command is in flight the model holds both the state before it and the state after it. The
server is killed with SIGKILL at a random moment, restarted on the same directory, and then:

* every job the model knows is there with its acknowledged state, priority, tube, body and
  counters, or, only if a command on it was in flight, with the state that command produces;
  reserved jobs come back ready, delayed ones keep their wall-clock deadline;
* acknowledged deletions stay deleted;
* every other job present is one whose put was in flight (same body, tube, priority).

Then the model adopts what was found and the next round starts on the restarted server.
"""

from __future__ import annotations

import ast
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import spawn_beanq
from tests.test_binlog_wire import Wire, jobs_of

ROUNDS = 6
CLIENTS = 6
TUBES = (b"default", b"crash-a", b"crash-b")
LONG_DELAY = 10_000
COUNTERS = ("reserves", "releases", "buries", "kicks")

# a job's durable state: (state, pri, reserves, releases, buries, kicks); None: deleted
Snap = tuple[str, int, int, int, int, int] | None


@dataclass
class ModelJob:
    body: bytes
    tube: bytes
    state: str
    pri: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    due: float = 0.0  # wall-clock deadline when delayed
    owner: int | None = None

    def snap(self) -> Snap:
        state = "ready" if self.state == "reserved" else self.state
        return (state, self.pri, *(self.counts[k] for k in COUNTERS))  # type: ignore[return-value]


@dataclass
class PendingPut:
    tube: bytes
    pri: int
    delay: int


class Model:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[int, ModelJob] = {}
        self.deleted: set[int] = set()
        self.in_flight: dict[int, list[Snap]] = {}  # job id -> outcomes still possible
        self.in_flight_due: dict[int, float] = {}  # job id -> deadline if the command worked
        self.puts_in_flight: dict[bytes, PendingPut] = {}
        self.acked = 0

    def claim(self, client: int, rnd: random.Random) -> int | None:
        with self.lock:
            free = [jid for jid, job in self.jobs.items() if job.owner is None]
            if not free:
                return None
            jid = rnd.choice(free)
            self.jobs[jid].owner = client
            return jid

    def unclaim(self, jid: int) -> None:
        with self.lock:
            job = self.jobs.get(jid)
            if job is not None:
                job.owner = None


class Client(threading.Thread):
    """One connection doing random work until the server dies (or ``stop`` is set)."""

    def __init__(self, n: int, port: int, model: Model, stop: threading.Event, seed: int) -> None:
        super().__init__(name=f"crash-client-{n}", daemon=True)
        self.n = n
        self.port = port
        self.model = model
        self.stop = stop
        self.rnd = random.Random(seed)
        self.held: list[int] = []  # jobs this connection keeps reserved

    def run(self) -> None:
        try:
            with Wire("127.0.0.1", self.port, timeout=20) as w:
                while not self.stop.is_set():
                    self.step(w)
        except OSError:
            pass  # the server was killed: whatever was in flight stays in flight

    def step(self, w: Wire) -> None:
        rnd = self.rnd
        if rnd.random() < 0.3:
            self.put(w)
            return
        jid = self.model.claim(self.n, rnd)
        if jid is None:
            self.put(w)
            return
        job = self.model.jobs[jid]
        if job.state == "ready" or (job.state != "reserved" and rnd.random() < 0.3):
            self.do(w, jid, b"reserve-job %d" % jid, b"RESERVED", "reserved", bump="reserves")
            self.after_reserve(w, jid)
        elif rnd.random() < 0.7:
            self.do(w, jid, b"kick-job %d" % jid, b"KICKED", "ready", bump="kicks")
            self.model.unclaim(jid)
        else:
            self.do(w, jid, b"delete %d" % jid, b"DELETED", None)

    def after_reserve(self, w: Wire, jid: int) -> None:
        r = self.rnd.random()
        pri = self.rnd.randrange(5000)
        if r < 0.35:
            delay = self.rnd.choice([0, 0, LONG_DELAY])
            state = "delayed" if delay else "ready"
            line = b"release %d %d %d" % (jid, pri, delay)
            self.do(w, jid, line, b"RELEASED", state, pri=pri, bump="releases", delay=delay)
            self.model.unclaim(jid)
        elif r < 0.6:
            self.do(w, jid, b"bury %d %d" % (jid, pri), b"BURIED", "buried", pri=pri, bump="buries")
            self.model.unclaim(jid)
        elif r < 0.9:
            self.do(w, jid, b"delete %d" % jid, b"DELETED", None)
        else:
            self.held.append(jid)  # still reserved (and claimed) when the server dies

    def put(self, w: Wire) -> None:
        rnd = self.rnd
        tube = rnd.choice(TUBES)
        pri = rnd.randrange(5000)
        delay = LONG_DELAY if rnd.random() < 0.15 else 0
        body = b"%d-%d-%d-" % (self.n, time.monotonic_ns(), rnd.randrange(1 << 30))
        body += b"x" * rnd.randrange(200)
        w.ok(b"use %s" % tube, b"USING %s" % tube)
        with self.model.lock:
            self.model.puts_in_flight[body] = PendingPut(tube, pri, delay)
        line, _ = w.cmd(b"put %d %d 300 %d" % (pri, delay, len(body)), body)
        assert line.startswith(b"INSERTED "), line
        job = ModelJob(body, tube, "delayed" if delay else "ready", pri, due=time.time() + delay)
        with self.model.lock:
            del self.model.puts_in_flight[body]
            self.model.jobs[int(line.split()[1])] = job
            self.model.acked += 1

    def do(
        self,
        w: Wire,
        jid: int,
        line: bytes,
        expect: bytes,
        state: str | None,
        *,
        pri: int | None = None,
        bump: str | None = None,
        delay: int = 0,
    ) -> None:
        """Send one command about claimed job ``jid``; the model changes only once the
        reply is in (before that, both outcomes are possible)."""
        model = self.model
        job = model.jobs[jid]
        after = ModelJob(job.body, job.tube, state or "", job.pri, dict(job.counts), job.due)
        if pri is not None:
            after.pri = pri
        if bump is not None:
            after.counts[bump] += 1
        if state == "delayed":
            after.due = time.time() + delay
        with model.lock:
            model.in_flight[jid] = [job.snap(), None if state is None else after.snap()]
            model.in_flight_due[jid] = after.due
        got, _ = w.cmd(line)
        assert got.startswith(expect), (line, got)
        with model.lock:
            del model.in_flight[jid]
            model.acked += 1
            if state is None:
                del model.jobs[jid]
                model.deleted.add(jid)
            else:
                job.state, job.pri, job.counts, job.due = state, after.pri, after.counts, after.due


def observed(info: dict[str, str] | None) -> Snap:
    if info is None:
        return None
    return (info["state"], int(info["pri"]), *(int(info[k]) for k in COUNTERS))  # type: ignore[return-value]


def check_and_adopt(w: Wire, model: Model) -> int:
    """Compare the restarted server with the model, then make the model match it.
    Returns how many in-flight commands turned out to have taken effect."""
    top = max([*model.jobs, *model.deleted, 0]) + len(model.puts_in_flight) + CLIENTS + 5
    seen = jobs_of(w, range(1, top + 1))
    took_effect = 0
    for jid, job in list(model.jobs.items()):
        info = seen.pop(jid, None)
        allowed = model.in_flight.get(jid, [job.snap()])
        got = observed(info)
        assert got in allowed, (jid, got, allowed, job)
        if info is None:  # an in-flight delete happened
            del model.jobs[jid]
            model.deleted.add(jid)
            took_effect += 1
            continue
        assert info["body"] == repr(job.body), jid
        assert info["tube"] == job.tube.decode(), jid
        if got != job.snap():
            took_effect += 1
            job.due = model.in_flight_due[jid]
        job.state, job.pri = got[0], got[1]  # type: ignore[index]
        job.counts = dict(zip(COUNTERS, got[2:], strict=True))  # type: ignore[index]
        if job.state == "delayed":
            assert abs(int(info["time-left"]) - (job.due - time.time())) < 3, (jid, info)
        job.owner = None
    for jid in model.deleted:
        assert jid not in seen, f"job {jid} was deleted, and is back"
    for jid, info in seen.items():  # puts that were in flight
        body = ast.literal_eval(info["body"])  # repr() of bytes, made by jobs_of
        put = model.puts_in_flight.pop(body, None)
        assert put is not None, f"job {jid} was never put: {info}"
        assert (info["tube"], int(info["pri"])) == (put.tube.decode(), put.pri)
        state = "delayed" if put.delay else "ready"
        assert info["state"] == state
        model.jobs[jid] = ModelJob(body, put.tube, state, put.pri, due=time.time() + put.delay)
        took_effect += 1
    model.in_flight.clear()
    model.in_flight_due.clear()
    model.puts_in_flight.clear()
    stats = w.stats()
    assert int(stats["current-jobs-reserved"]) == 0
    return took_effect


def test_kill_9_loses_no_acknowledged_change(tmp_path: Path) -> None:
    rnd = random.Random(0xBEA9)
    wal = tmp_path / "wal"
    wal.mkdir()
    model = Model()
    in_flight_applied = 0
    rounds_with_work = 0
    for round_no in range(ROUNDS + 1):
        with spawn_beanq("-b", str(wal), "-f", "0") as (host, port, proc):
            with Wire(host, port) as w:
                in_flight_applied += check_and_adopt(w, model)
            if round_no == ROUNDS:
                break
            stop = threading.Event()
            before = model.acked
            clients = [Client(n, port, model, stop, rnd.randrange(1 << 30)) for n in range(CLIENTS)]
            for c in clients:
                c.start()
            time.sleep(rnd.uniform(0.4, 1.6))
            assert "Traceback" not in proc.output(), proc.output()
            proc.kill()  # SIGKILL, in the middle of everything
            proc.wait()
            stop.set()
            for c in clients:
                c.join(timeout=30)
                assert not c.is_alive()
            rounds_with_work += model.acked > before + 50
    assert rounds_with_work >= ROUNDS - 1, "the clients hardly got anything done"
    assert model.acked > 500
    print(f"acknowledged {model.acked}, in-flight that took effect {in_flight_applied}")
