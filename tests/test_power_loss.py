"""Power loss under load: with ``-f 0`` no acknowledged change is lost, even when the page cache is.

``tests/test_crash.py`` kills beanq with SIGKILL, which keeps everything the process wrote: the
kernel still writes the page cache back. A power loss keeps only what an fsync made durable, so a
binlog that replied before its fsync, forgot a directory fsync after creating a segment, or
unlinked a segment too early would pass that test and still lose acknowledged jobs. This test
simulates the power loss itself:

* The daemon runs with a prelude that wraps ``os.fsync`` (``beanq/binlog.py`` is always
  interpreted and calls it through the ``os`` module). Before each real fsync it reads what the
  fsync is about to make durable: a segment's bytes (everything written before the call) or the
  ``binlog.*`` names in the directory; once the real fsync has returned it publishes that into a
  side directory, atomically (temp file + ``os.replace``), so a SIGKILL never leaves half a
  snapshot. Each snapshot replaces the previous one of the same file: the side directory always
  holds the durable state, and a reply (sent only after its fsync returned) is always covered.
* Clients from ``tests/test_crash.py`` put, reserve, release, bury, kick and delete against its
  model, which knows every acknowledged change and every command still in flight; producers put
  alongside, then alone for a moment (segments then roll with none unlinked, so only the
  directory fsync owed for a new segment makes its name durable). Then the daemon gets SIGKILL.
* The disk after the power loss is rebuilt from the side directory: only the names of the last
  directory fsync, each with its last fsynced bytes (empty if never fsynced; a file unlinked
  after that fsync comes back). Depending on the round, unsynced writes are then *torn*: random
  512-byte sectors of what the page cache held but no fsync covered reach the disk, and/or
  garbage or zeros follow the durable bytes.
* A plain ``python -m beanq`` starts on that directory and ``check_and_adopt`` (from
  test_crash) audits it: every acknowledged job with its acknowledged state, priority, tube,
  body and counters (or, for a command in flight, the state it produces); no acknowledged
  deletion back; nothing present that was not put. The next round runs on what it left.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from tests.servers import spawn_beanq
from tests.test_binlog_wire import Wire
from tests.test_crash import CLIENTS, Client, Model, check_and_adopt
from tests.test_hardening import spawn_patched

SEED = 0x9B0F
SEGMENT_SIZE = 65536  # small, so segments are created, rolled and unlinked during a round
LOAD_SECONDS = 1.5  # mixed clients and producers
SOLO_SECONDS = 0.5  # then producers alone
PRODUCERS = 2
SECTOR = 512
DIR_LIST = "dir.list"  # in the side directory: the names the last directory fsync made durable
# How the unsynced writes end up on the disk, one way per round.
MODES = ("exact", "torn", "garbage")

# Runs in the daemon before beanq's main. `{snap}` is the side directory.
PRELUDE = """
import os, stat, threading

_SNAP = {snap!r}
_real_fsync = os.fsync
_snap_lock = threading.Lock()


def _publish(name, data):
    tmp = os.path.join(_SNAP, name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(_SNAP, name))


def _durable_fsync(fd):
    link = f"/proc/self/fd/{{fd}}"
    with _snap_lock:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            names = sorted(n for n in os.listdir(link) if n.startswith("binlog."))
            _real_fsync(fd)
            _publish({dir_list!r}, "\\n".join(names).encode())
            return
        name = os.path.basename(os.readlink(link).removesuffix(" (deleted)"))
        with open(link, "rb") as f:  # segment fds are write-only: read through /proc
            data = f.read()
        _real_fsync(fd)
        if name.startswith("binlog."):
            _publish("file." + name, data)


os.fsync = _durable_fsync
"""


def seed_snapshots(wal: Path, snap: Path) -> None:
    """Record ``wal`` as it is now as durable: it was left by a cleanly stopped server."""
    snap.mkdir()
    names = sorted(p.name for p in wal.glob("binlog.*"))
    for name in names:
        (snap / f"file.{name}").write_bytes((wal / name).read_bytes())
    (snap / DIR_LIST).write_text("\n".join(names))


def first_difference(a: bytes, b: bytes) -> int:
    """The first offset where ``a`` and ``b`` differ (``len`` of the shorter if one is a
    prefix of the other): where the writes no fsync covered begin."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def tear(durable: bytes, cached: bytes, rnd: random.Random, mode: str) -> bytes:
    """What a power loss may leave of one file: the ``durable`` bytes, plus (``torn``, and
    ``garbage`` too) any subset of the sectors that differ in ``cached``, the page cache at the
    kill, plus (``garbage``) random bytes or zeros from where the unsynced writes begin."""
    if mode == "exact":
        return durable
    out = bytearray(durable)
    if len(cached) > len(out) and rnd.random() < 0.5:  # the new size reached the disk
        out.extend(bytes(len(cached) - len(out)))
    start = first_difference(durable, cached)
    for sector in range(start - start % SECTOR, min(len(out), len(cached)), SECTOR):
        new = cached[sector : sector + SECTOR]
        if rnd.random() < 0.5 and new != out[sector : sector + len(new)]:
            out[sector : sector + len(new)] = new
    if mode == "garbage":
        at = rnd.randrange(start, len(out) + 1) if start < len(out) else len(out)
        size = rnd.randrange(1, 3 * SECTOR)
        junk = bytes(size) if rnd.random() < 0.3 else rnd.randbytes(size)
        out[at : at + size] = junk
        if rnd.random() < 0.5:
            out.extend(bytes(rnd.randrange(1, 4 * SECTOR)))  # a zeroed tail past the end
    return bytes(out)


def power_loss(wal: Path, snap: Path, after: Path, rnd: random.Random, mode: str) -> int:
    """Build in ``after`` the disk that a power loss at the SIGKILL leaves of ``wal``; return
    how many files differ from their durable bytes (to show that tearing did something)."""
    after.mkdir()
    torn = 0
    for name in (snap / DIR_LIST).read_text().split():
        saved = snap / f"file.{name}"
        durable = saved.read_bytes() if saved.exists() else b""  # never fsynced
        live = wal / name
        cached = live.read_bytes() if live.exists() else durable  # unlinked since: as durable
        data = tear(durable, cached, rnd, mode)
        torn += data != durable
        (after / name).write_bytes(data)
    return torn


class Producer(Client):
    """A client that only puts. Alone, producers fill and roll segments while none becomes
    garbage, so no unlink's directory fsync happens to cover a new segment's name: only the
    one the binlog owes after creating it does."""

    def step(self, w: Wire) -> None:
        self.put(w)


def run_load(port: int, model: Model, rnd: random.Random) -> list[Producer]:
    """Mixed clients and producers for ``LOAD_SECONDS``, then producers alone for
    ``SOLO_SECONDS``; returns with the producers still running (each stops when the server
    dies, leaving its last put in flight in the model)."""
    mixed_stop, producers_stop = threading.Event(), threading.Event()
    mixed = [Client(n, port, model, mixed_stop, rnd.randrange(1 << 30)) for n in range(CLIENTS)]
    producers = [
        Producer(n, port, model, producers_stop, rnd.randrange(1 << 30))
        for n in range(CLIENTS, CLIENTS + PRODUCERS)
    ]
    for c in mixed + producers:
        c.start()
    time.sleep(LOAD_SECONDS)
    mixed_stop.set()
    for c in mixed:
        c.join(timeout=30)
        assert not c.is_alive()
    time.sleep(SOLO_SECONDS)
    return producers


def test_power_loss_loses_no_acknowledged_change(tmp_path: Path) -> None:
    rnd = random.Random(SEED)
    model = Model()
    wal = tmp_path / "wal-0"
    wal.mkdir()
    torn_files = 0
    segments_seen = 0
    for round_no, mode in enumerate(MODES):
        snap = tmp_path / f"snap-{round_no}"
        seed_snapshots(wal, snap)
        prelude = PRELUDE.format(snap=str(snap), dir_list=DIR_LIST)
        before = model.acked
        args = ("-b", str(wal), "-f", "0", "-s", str(SEGMENT_SIZE))
        with spawn_patched(prelude, *args) as (_, port, proc):
            producers = run_load(port, model, rnd)
            assert "Traceback" not in proc.output(), proc.output()
            proc.kill()  # SIGKILL: the power goes out now
            proc.wait()
            for c in producers:
                c.join(timeout=30)
                assert not c.is_alive()
        assert model.acked > before + 100, "the clients hardly got anything done"
        segments_seen = max([segments_seen, *(int(p.suffix[1:]) for p in wal.glob("binlog.*"))])

        after = tmp_path / f"wal-{round_no + 1}"
        torn_files += power_loss(wal, snap, after, rnd, mode)
        with spawn_beanq("-b", str(after), "-f", "0", "-s", str(SEGMENT_SIZE)) as (h, p, proc):
            with Wire(h, p) as w:
                check_and_adopt(w, model)
            assert "Traceback" not in proc.output(), proc.output()
        wal = after
    assert torn_files > 0, "no round tore any unsynced write"
    assert segments_seen >= 3, "segments were not rolled: make SEGMENT_SIZE smaller"
    print(f"acknowledged {model.acked}, files torn {torn_files}, segments {segments_seen}")
