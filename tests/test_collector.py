"""The server turns CPython's automatic garbage collection off (``server.tune_collector``):
that is only safe while the engine and the dispatcher leave no reference cycles behind. Drive
every kind of state change through ``Hub``/``Connection``, close everything, and check that
the cycle collector finds nothing to free."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from beanq.dispatch import HostInfo, Hub
from beanq.tubes import Engine

HOST = HostInfo("0", 1, "host", "os", "platform", "0" * 16, lambda: (0.0, 0.0))

SCRIPT_A = (
    b"use t%d\r\nwatch t%d\r\nput 1 0 5 2\r\nhi\r\nput 1 5 5 2\r\nhi\r\n"
    b"reserve-with-timeout 0\r\nput 2 0 1 1\r\nx\r\nreserve-with-timeout 0\r\n"
)
SCRIPT_B = (
    b"release 1 7 0\r\nreserve-with-timeout 0\r\nbury 2 1\r\nkick 5\r\nkick-job 3\r\n"
    b"touch 4\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\nstats\r\nstats-job 1\r\n"
    b"stats-tube t1\r\nlist-tubes\r\nlist-tubes-watched\r\nlist-tube-used\r\n"
    b"pause-tube t1 1\r\nreserve-job 5\r\ndelete 6\r\nbogus\r\nput 1 0 1 999999\r\n"
    b"put 1 0 1 3\r\nabcde\r\nignore t0\r\nreserve-with-timeout 2\r\n"
)


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.usefixtures("no_automatic_collection")
def test_engine_and_dispatcher_leave_no_cycles() -> None:
    engine = Engine(0.0)
    hub = Hub(engine, HOST)
    conns = [hub.open() for _ in range(20)]
    now = 1.0
    for i, conn in enumerate(conns):
        conn.receive(SCRIPT_A % (i % 3, (i + 1) % 3), now)
        conn.receive(SCRIPT_B, now)
    for t in (1.5, 3.0, 10.0):  # delays end, TTRs run out, reserves time out, pauses end
        hub.tick(t)
    for conn in conns[:10]:
        conn.receive(b"reserve\r\n", 10.0)  # some still wait when their connection closes
    hub.tick(20.0)
    assert engine.jobs, "the workload should leave jobs behind"
    for conn in conns:
        conn.close(21.0)
    hub.tick(30.0)
    sweeper = hub.open()  # delete every job left, whatever its state
    sweeper.receive(b"".join(b"delete %d\r\n" % i for i in list(engine.jobs)), 31.0)
    assert not engine.jobs
    sweeper.close(32.0)
    hub.take_dirty()
    engine.changes.clear()  # (the server hands these to the binlog after every batch)
    del conns, conn, sweeper

    gc.set_debug(gc.DEBUG_SAVEALL)
    found = gc.collect()
    kinds = sorted({type(o).__name__ for o in gc.garbage})
    assert found == 0, f"cyclic garbage: {kinds}"
    assert engine.connections == 0
