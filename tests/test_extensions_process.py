"""The beanq-* commands against the real ``beanq`` process: kill -9 replay of flushes, moves
and unique keys (jobs put in earlier segments, compaction after), and producers racing on
one unique key."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.servers import spawn_beanq
from tests.test_binlog_wire import Wire, jobs_of


def _lines(w: Wire, line: bytes, n: int) -> list[bytes]:
    w.send(line)
    return [w.reply()[0] for _ in range(n)]


def _ids(w: Wire, tube: bytes, state: bytes) -> list[int]:
    line, body = w.cmd(b"beanq-list %b %b 0 1000" % (tube, state))
    assert line.startswith(b"OK ") and body is not None
    return [int(x[2:]) for x in body.decode().splitlines() if x.startswith("- ")]


def test_kill_9_after_flush_move_and_unique_puts(tmp_path: Path) -> None:
    body = b"b" * 500
    args = ("-b", str(tmp_path), "-f", "0", "-s", "65536")
    with spawn_beanq(*args) as (host, port, proc), Wire(host, port) as w:
        flushed = [w.put(body, pri=i % 5) for i in range(200)]  # several segments
        w.ok(b"use src", b"USING src")
        moved = [w.put(body, pri=i % 3, delay=(1000 if i % 4 == 0 else 0)) for i in range(60)]
        for job_id in moved[1:12:2]:
            w.cmd(b"reserve-job %d" % job_id)
            w.ok(b"bury %d 9" % job_id, b"BURIED")
        w.ok(b"use keys", b"USING keys")
        keyed = []
        for i in range(20):
            line, _ = w.cmd(b"beanq-put-unique key%d 0 0 60 3" % i, b"k%02d" % i)
            assert line.startswith(b"INSERTED "), line
            keyed.append(int(line.split()[1]))
        w.ok(b"delete %d" % keyed[0], b"DELETED")
        w.ok(b"use default", b"USING default")
        held = flushed[7]
        w.cmd(b"reserve-job %d" % held)
        assert w.cmd(b"beanq-flush default all")[0] == b"FLUSHED 199"
        assert w.cmd(b"beanq-move src dst ready 100")[0] == b"MOVED 39"
        assert w.cmd(b"beanq-move src dst buried 3")[0] == b"MOVED 3"
        assert w.cmd(b"beanq-move src dst delayed 100")[0] == b"MOVED 15"
        assert w.cmd(b"beanq-move keys dst ready 5")[0] == b"MOVED 5"
        for _ in range(300):  # churn after: compaction moves the survivors along
            job_id = w.put(body)
            w.ok(b"delete %d" % job_id, b"DELETED")
        before = jobs_of(w, range(1, max(keyed) + 1))
        lists = {(t, s): _ids(w, t, s) for t in (b"src", b"dst") for s in (b"ready", b"buried")}
        stats = w.stats()
        assert int(stats["binlog-oldest-index"]) > 1  # old segments went
        proc.kill()
        proc.wait()
    with spawn_beanq(*args) as (host, port, _), Wire(host, port) as w:
        after = jobs_of(w, range(1, max(keyed) + 1))
        for info in (*before.values(), *after.values()):
            info.pop("age"), info.pop("time-left"), info.pop("file")
            if info["state"] == "reserved":
                info["state"] = "ready"
        assert after == before
        assert set(after) == {held} | set(moved) | set(keyed[1:])
        assert {(t, s): _ids(w, t, s) for t, s in lists} == lists
        w.ok(b"use dst", b"USING dst")  # key1..key5 moved there with their jobs
        assert w.cmd(b"beanq-put-unique key3 0 0 60 1", b"x")[0] == b"EXISTS %d" % keyed[3]
        w.ok(b"use keys", b"USING keys")
        assert w.cmd(b"beanq-put-unique key3 0 0 60 1", b"x")[0].startswith(b"INSERTED ")
        assert w.cmd(b"beanq-put-unique key9 0 0 60 1", b"x")[0] == b"EXISTS %d" % keyed[9]
        assert w.cmd(b"beanq-put-unique key0 0 0 60 1", b"x")[0].startswith(b"INSERTED ")


def test_producers_racing_on_one_key_get_one_insert(tmp_path: Path) -> None:
    """12 connections send the same unique put at the same moment, 30 rounds, each with a new
    key: exactly one INSERTED per key, every other reply EXISTS with that job's id."""
    rounds = 30
    with spawn_beanq("-b", str(tmp_path)) as (host, port, _):
        wires = [Wire(host, port) for _ in range(12)]
        replies: list[list[bytes]] = [[] for _ in wires]
        barrier = threading.Barrier(len(wires))

        def producer(i: int) -> None:
            w = wires[i]
            for r in range(rounds):
                barrier.wait(timeout=10)
                replies[i].append(w.cmd(b"beanq-put-unique race%d 0 0 60 2" % r, b"%02d" % i)[0])

        threads = [threading.Thread(target=producer, args=(i,)) for i in range(len(wires))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for r in range(rounds):
            got = [replies[i][r] for i in range(len(wires))]
            inserted = [x for x in got if x.startswith(b"INSERTED ")]
            assert len(inserted) == 1, got
            job_id = inserted[0].split()[1]
            assert sorted(got) == sorted([inserted[0]] + [b"EXISTS " + job_id] * (len(got) - 1))
        with Wire(host, port) as w:
            assert w.stats()["current-jobs-ready"] == str(rounds)
        for w in wires:
            w.close()
