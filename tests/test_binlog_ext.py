"""The extensions' binlog records: flush, move and unique keys, replayed exactly after a crash.

Uses test_binlog's rig: an engine and a ``Binlog`` driven by hand; "crash" replays a copy of the
directory as a kill -9 leaves it, "restart" closes cleanly first.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from beanq import binlog as bl
from beanq.tubes import KeyedJob, State
from tests.test_binlog import SMALL, Rig, _close_all, random_change, same_state


@pytest.fixture(autouse=True)
def _wal_dir(tmp_path: Path) -> None:
    (tmp_path / "wal").mkdir()


def _put_unique(rig: Rig, key: bytes, body: bytes, tube: bytes = b"default", **kw: int) -> int:
    rig.engine.use(rig.s, tube)
    assert rig.engine.find_unique(rig.s, key) is None
    assert rig.log.can_put(len(body) + len(key))
    job = rig.engine.put_unique(
        rig.s, key, kw.get("pri", 0), kw.get("delay", 0), kw.get("ttr", 60), body, rig.now
    )
    rig.flush()
    return job.id


def _keys(rig: Rig) -> dict[tuple[bytes, bytes], int]:
    return {k: job.id for k, job in rig.engine.unique.items()}


def _segments(rig: Rig) -> list[int]:
    return sorted(rig.log._segments)


def test_ids_encode_as_runs_and_decode_back() -> None:
    rnd = random.Random(7)
    for ids in ([1], [5, 6, 7, 8], [1, 3, 5], list(range(10, 100_000)), [2**63, 2**64 - 1]):
        data = bl._encode_ids(ids)
        assert bl._decode_ids(data, 0, len(data)) == ids
    assert len(bl._encode_ids(list(range(1, 1_000_001)))) < 8  # one run
    ids = sorted(rnd.sample(range(1, 10**9), 5000))
    data = bl._encode_ids(ids)
    assert bl._decode_ids(data, 0, len(data)) == ids


@pytest.mark.parametrize("how", ["crash", "restart"])
def test_flush_of_jobs_from_earlier_segments_is_one_record(tmp_path: Path, how: str) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    keep = [rig.put(b"keep%d" % i, tube=b"other") for i in range(5)]
    doomed = [rig.put(b"x" * 40, pri=i % 3) for i in range(60)]  # over many segments
    buried = doomed[:5]
    for job in buried:
        rig.reserve(job.id)
        rig.bury(job.id, pri=1)
    delayed = rig.put(b"later", delay=500)
    held = rig.reserve(doomed[10].id)
    assert len(_segments(rig)) >= 3
    written = rig.log.records_written - rig.log.records_migrated
    assert rig.engine.flush(b"default", (State.READY, State.BURIED)) == 60 - 1
    rig.flush()
    # one record (besides what compaction rewrote after it)
    assert rig.log.records_written - rig.log.records_migrated == written + 1
    assert set(rig.engine.jobs) == {j.id for j in keep} | {delayed.id, held.id}
    after = rig.crash() if how == "crash" else rig.restart()
    same_state(rig, after)
    assert after.engine.flush(b"default", (State.DELAYED,)) == 1
    after.flush()
    again = after.crash()
    same_state(after, again)
    assert delayed.id not in again.engine.jobs
    _close_all(rig, after, again)


def test_flush_frees_the_segments_and_compaction_goes_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    keep = rig.put(b"k" * 100, tube=b"keep", delay=10**6)
    for i in range(300):
        rig.put(b"%d" % i * 20)
    before = rig.disk()
    assert rig.engine.flush(b"default", (State.READY,)) == 300
    rig.flush()
    for _ in range(300):  # churn: compaction moves the kept job along, segments go
        job = rig.put(b"c" * 100)
        rig.reserve(job.id)
        rig.delete(job.id)
    rig.log.sync()
    assert rig.disk() < before / 2
    assert rig.log.records_migrated > 0
    after = rig.crash()
    same_state(rig, after)
    assert set(after.engine.jobs) == {keep.id}
    _close_all(rig, after)


def test_flush_of_jobs_put_in_the_same_batch_writes_nothing_for_them(rig_path: Path) -> None:
    rig = Rig(rig_path)
    old = rig.put(b"old")
    assert rig.log.can_put(3)
    new = rig.engine.put(rig.s, 0, 0, 60, b"new", rig.now)  # not written yet
    assert rig.engine.flush(b"default", (State.READY,)) == 2
    rig.flush()
    after = rig.crash()
    same_state(rig, after)
    assert not after.engine.jobs
    assert after.engine.next_id > new.id > old.id  # ids are not handed out again
    _close_all(rig, after)


@pytest.fixture
def rig_path(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.mark.parametrize("how", ["crash", "restart"])
def test_move_keeps_everything_but_the_tube(tmp_path: Path, how: str) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    ready = [rig.put(b"r%d" % i, pri=9 - i % 3) for i in range(20)]
    for i in range(5):
        rig.put(b"d%d" % i, delay=100 + i)
    for job in ready[:6]:
        rig.reserve(job.id)
        rig.bury(job.id, pri=7)
    target_buried = rig.put(b"tb", tube=b"dst")
    rig.reserve(target_buried.id)
    rig.bury(target_buried.id, pri=1)
    rig.reserve(ready[10].id)
    rig.release(ready[10].id, pri=3)
    engine = rig.engine
    assert engine.move(b"default", b"dst", State.BURIED, 4, rig.now) == 4
    assert engine.move(b"default", b"dst", State.READY, 10, rig.now) == 10
    assert engine.move(b"default", b"dst", State.DELAYED, 100, rig.now) == 5
    rig.flush()
    assert list(engine.tubes[b"dst"].buried) == [target_buried.id] + [j.id for j in ready[:4]]
    after = rig.crash() if how == "crash" else rig.restart()
    same_state(rig, after)
    moved = after.engine.jobs[ready[10].id]
    assert (moved.tube.name, moved.pri, moved.releases, moved.reserves) == (b"dst", 3, 1, 1)
    assert after.engine.tubes[b"dst"].delayed_count == 5
    _close_all(rig, after)


def test_moved_jobs_later_compacted_and_changed_stay_moved(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    jobs = [rig.put(b"m" * 60, pri=i) for i in range(30)]
    assert rig.engine.move(b"default", b"elsewhere", State.READY, 30, rig.now) == 30
    rig.flush()
    for job in jobs[:10]:  # short records after the move's full records
        rig.reserve(job.id)
        rig.release(job.id, pri=99)
    for _ in range(400):  # churn until compaction rewrote the moved jobs
        job = rig.put(b"c" * 100)
        rig.reserve(job.id)
        rig.delete(job.id)
    rig.log.sync()
    after = rig.crash()
    same_state(rig, after)
    assert {after.engine.jobs[j.id].tube.name for j in jobs} == {b"elsewhere"}
    _close_all(rig, after)


def test_unique_keys_survive_restarts_and_are_freed_by_delete_and_flush(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    a = _put_unique(rig, b"order-1", b"first")
    b = _put_unique(rig, b"order-2", b"second", pri=5, delay=50)
    c = _put_unique(rig, b"order-1", b"other tube", tube=b"t2")
    d = _put_unique(rig, b"gone", b"deleted")
    rig.delete(d)
    e = _put_unique(rig, b"f" * 150, b"flushed", tube=b"t3")
    rig.reserve(a)
    assert rig.engine.flush(b"t3", (State.READY,)) == 1
    rig.flush()
    after = rig.crash()
    same_state(rig, after)
    assert _keys(after) == {
        (b"default", b"order-1"): a,
        (b"default", b"order-2"): b,
        (b"t2", b"order-1"): c,
    }
    assert _keys(after) == _keys(rig)
    job = after.engine.jobs[a]
    assert isinstance(job, KeyedJob) and job.body == b"first" and job.key == b"order-1"
    assert e not in after.engine.jobs
    # a freed key can be used again, and that survives too
    again_id = _put_unique(after, b"gone", b"again")
    third = after.restart()
    same_state(after, third)
    assert _keys(third)[(b"default", b"gone")] == again_id
    _close_all(rig, third)


def test_unique_keys_move_with_their_jobs_and_survive_compaction(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    ids = [_put_unique(rig, b"k%d" % i, b"v" * 50) for i in range(10)]
    clash = _put_unique(rig, b"k3", b"already there", tube=b"dst")
    assert rig.engine.move(b"default", b"dst", State.READY, 100, rig.now) == 9
    rig.flush()
    assert rig.engine.jobs[ids[3]].tube.name == b"default"  # its key is held in dst
    for _ in range(400):
        job = rig.put(b"c" * 100)
        rig.reserve(job.id)
        rig.delete(job.id)
    rig.log.sync()
    assert rig.log.records_migrated > 0
    after = rig.crash()
    same_state(rig, after)
    assert _keys(after) == _keys(rig)
    assert _keys(after)[(b"dst", b"k3")] == clash
    assert _keys(after)[(b"default", b"k3")] == ids[3]
    _close_all(rig, after)


def test_random_extension_operations_survive_crashes(tmp_path: Path) -> None:
    """test_binlog's random walk with flushes, moves and unique puts among the rest."""
    rnd = random.Random(15)
    rig = Rig(tmp_path / "wal", segment_size=SMALL)
    tubes = [b"default", b"a", b"bb"]
    states = [State.READY, State.DELAYED, State.BURIED]
    for step in range(2000):
        jobs = rig.engine.jobs
        op = rnd.random()
        if op < 0.25 or not jobs:
            body = b"%d" % step * rnd.randrange(1, 20)
            tube = rnd.choice(tubes)
            delay = rnd.choice([0, 0, 0, 500])
            rig.engine.use(rig.s, tube)
            key = b"key%d" % rnd.randrange(30)
            if rnd.random() < 0.4 and rig.engine.find_unique(rig.s, key) is None:
                _put_unique(rig, key, body, tube=tube, pri=rnd.randrange(2000), delay=delay)
            else:
                rig.put(body, pri=rnd.randrange(2000), tube=tube, delay=delay)
            continue
        if op < 0.28:
            rig.engine.flush(rnd.choice(tubes), (rnd.choice(states),))
            rig.flush()
            continue
        if op < 0.33:
            src, dst = rnd.sample(tubes, 2)
            rig.engine.move(src, dst, rnd.choice(states), rnd.randrange(1, 8), rig.now)
            rig.flush()
            continue
        random_change(rig, rnd, op)
        if step % 250 == 249:
            crashed = rig.crash()
            same_state(rig, crashed)
            assert _keys(crashed) == _keys(rig)
            crashed.close()
    after = rig.restart()
    same_state(rig, after)
    assert _keys(after) == _keys(rig)
    after.close()
