"""Failover: the binlog directory is the state, so a standby that gets the directory gets the
queue. In production the directory is on a replicated or re-attachable volume (DRBD, a cloud
disk, Ceph RBD) and a supervisor starts beanq on the standby once the primary is gone
(docs/operations.md); here the "new host" is another path and another port.

The primary serves producers and workers with ``-f 0`` (a reply only once its record is on
disk). A standby started on the same directory while the primary lives exits with code 10 and
never listens: the directory lock keeps one writer. The primary is then killed with SIGKILL in
the middle of the load, the directory is moved, and the standby starts on it: every put that
was acknowledged and not acknowledged deleted is there with its body, every acknowledged
delete stays deleted, jobs held by workers are ready again, and ids go on from where they were.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.servers import spawn_beanq
from tests.test_binlog_wire import Wire, run_beanq

PRODUCERS = 4
WORKERS = 2
LOAD_SECONDS = 1.0
MAX_PUTS = 2500  # per producer: the load is bounded in count as well as in time


class Ledger:
    """What the clients were told: acknowledged puts (id -> body) and deletes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.put: dict[int, bytes] = {}
        self.deleted: set[int] = set()
        self.held: set[int] = set()  # reserved by a worker and never deleted
        self.deleting: set[int] = set()  # a delete sent, its reply not (yet) received


def produce(port: int, n: int, ledger: Ledger, stop: threading.Event) -> None:
    try:
        with Wire("127.0.0.1", port, timeout=20) as w:
            for i in range(MAX_PUTS):
                if stop.is_set():
                    return
                body = b"job-%d-%d-" % (n, i) + b"x" * (i % 300)
                job_id = w.put(body, pri=i % 7)
                with ledger.lock:
                    ledger.put[job_id] = body
    except (OSError, AssertionError):
        pass  # the primary died mid-command: that put was never acknowledged


def work(port: int, ledger: Ledger, stop: threading.Event) -> None:
    try:
        with Wire("127.0.0.1", port, timeout=20) as w:
            n = 0
            while not stop.is_set():
                line, _ = w.cmd(b"reserve-with-timeout 1")
                if not line.startswith(b"RESERVED "):
                    continue
                job_id = int(line.split()[1])
                n += 1
                if n % 10 == 0:  # keep some reserved: they must come back ready
                    with ledger.lock:
                        ledger.held.add(job_id)
                    continue
                with ledger.lock:
                    ledger.deleting.add(job_id)
                got, _ = w.cmd(b"delete %d" % job_id)
                assert got == b"DELETED", got
                with ledger.lock:
                    ledger.deleting.discard(job_id)
                    ledger.deleted.add(job_id)
    except (OSError, AssertionError):
        pass


def test_moving_the_directory_to_a_new_host_loses_nothing_acknowledged(tmp_path: Path) -> None:
    primary_dir = tmp_path / "host-a" / "beanq"
    primary_dir.mkdir(parents=True)
    ledger = Ledger()
    stop = threading.Event()
    with spawn_beanq("-b", str(primary_dir), "-f", "0") as (_, port, primary):
        threads = [
            *(
                threading.Thread(target=produce, args=(port, n, ledger, stop))
                for n in range(PRODUCERS)
            ),
            *(threading.Thread(target=work, args=(port, ledger, stop)) for _ in range(WORKERS)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS / 2)
        standby = run_beanq("-b", str(primary_dir))  # too early: the primary still writes
        assert standby.returncode == 10, standby.stderr
        assert "failed to lock wal dir" in standby.stderr
        time.sleep(LOAD_SECONDS / 2)
        primary.kill()  # the host dies mid-load
        primary.wait()
        stop.set()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
    assert len(ledger.put) > 200 and len(ledger.deleted) > 50, "the load hardly ran"

    standby_dir = tmp_path / "host-b" / "beanq"
    standby_dir.parent.mkdir()
    primary_dir.rename(standby_dir)  # the volume re-attached on the standby
    live = {job_id: body for job_id, body in ledger.put.items() if job_id not in ledger.deleted}
    with spawn_beanq("-b", str(standby_dir), "-f", "0") as (host, port, _), Wire(host, port) as w:
        for job_id, body in live.items():
            line, got = w.cmd(b"peek %d" % job_id)
            if line == b"NOT_FOUND" and job_id in ledger.deleting:
                continue  # its delete was on its way: it may have taken effect
            assert (line.split()[0], got) == (b"FOUND", body), (job_id, line)
        for job_id in ledger.deleted:
            assert w.cmd(b"peek %d" % job_id)[0] == b"NOT_FOUND", job_id
        for job_id in ledger.held:
            assert w.stats(b"stats-job %d" % job_id)["state"] == "ready", job_id
        stats = w.stats()
        present = int(stats["current-jobs-ready"])
        assert int(stats["current-jobs-reserved"]) == 0
        # beyond the acknowledged: at most one put in flight per producer landed, and the
        # deletes in flight (one per worker at most) may have taken effect
        assert len(live) - len(ledger.deleting) <= present <= len(live) + PRODUCERS, (
            present,
            len(live),
        )
        assert w.put(b"after failover") > max(ledger.put)
