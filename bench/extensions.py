"""beanq's extensions (issue 15), on beanq alone: beanstalkd has none of them.

* flush: a tube of N ready jobs in one ``beanq-flush``; the server's resident memory before
  the fill, filled, after the flush and after the same fill drained by reserve/delete;
* list: pages of 1,000 ids from that N-job tube at random after-ids (round trip, so an upper
  bound of the server's time);
* move: ``beanq-move`` of M ready jobs to another tube;
* reserve-batch: jobs reserved per second by 50 connections with ``beanq-reserve-batch 100 0``
  against the same 50 connections with ``reserve-with-timeout 0``, then the same with each
  reserve's deletes pipelined with the next reserve; one driver process for all (so the
  ratio compares the commands).
"""

from __future__ import annotations

import random
import selectors
import socket
import time
from typing import Any

from bench.loadgen import LoadGen, LoadSpec
from bench.proto import HOST, Client, split_replies
from bench.servers import Server, ServerKind

SETTLE_S = 1.5  # beanq gives memory back at its next look (every 0.25 s) after a burst


def _fill(lg: LoadGen, server: Server, tube: str, jobs: int) -> None:
    spec = LoadSpec(
        kind="put",
        port=server.port,
        conns=10,
        depth=32,
        tube=tube,
        duration=None,
        count=jobs,
        hard_timeout=300.0,
    )
    lg.run(spec, server.pid)


def _timed(c: Client, command: bytes) -> tuple[float, bytes]:
    t = time.perf_counter()
    line, _ = c.call(command)
    return time.perf_counter() - t, line


def _rss(server: Server) -> int:
    time.sleep(SETTLE_S)
    return server.rss_kb()


def flush_list_move(kind: ServerKind, lg: LoadGen, jobs: int, moved: int) -> dict[str, Any]:
    out: dict[str, Any] = {"server": kind.name, "jobs": jobs, "moved_jobs": moved}
    server = Server(kind)
    try:
        server.start()
        with Client(server.port, timeout=120.0) as c:
            out["rss_empty_kb"] = _rss(server)
            _fill(lg, server, "big", jobs)
            out["rss_filled_kb"] = _rss(server)
            pages = []
            rnd = random.Random(15)
            for _ in range(100):
                took, line = _timed(c, b"beanq-list big ready %d 1000\r\n" % rnd.randrange(jobs))
                if not line.startswith(b"OK "):
                    raise RuntimeError(f"beanq-list: {line!r}")
                pages.append(took)
            pages.sort()
            out["list_page_ms_median"] = round(pages[len(pages) // 2] * 1000, 3)
            out["list_page_ms_p99"] = round(pages[98] * 1000, 3)
            took, line = _timed(c, b"beanq-flush big ready\r\n")
            out["flush_s"] = round(took, 3)
            out["flush_reply"] = line.decode()
            out["rss_after_flush_kb"] = _rss(server)
            _fill(lg, server, "big", jobs)
            drain = LoadSpec(
                kind="reserve", port=server.port, conns=10, depth=32, tube="big", duration=None
            )
            t = time.monotonic()
            lg.run(drain, server.pid)
            out["drain_by_deletes_s"] = round(time.monotonic() - t, 2)
            out["rss_after_deletes_kb"] = _rss(server)
            _fill(lg, server, "from", moved)
            took, line = _timed(c, b"beanq-move from to ready %d\r\n" % moved)
            out["move_s"] = round(took, 3)
            out["move_reply"] = line.decode()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return out


class _Conn:
    __slots__ = ("buf", "sock")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""


def _drain_rate(
    port: int, conns: int, batch: int, seconds: float, delete: bool
) -> tuple[float, int]:
    """Jobs reserved (and, with ``delete``, deleted) per second by ``conns`` connections
    taking ``batch`` at a time (1: plain ``reserve-with-timeout 0``); the deletes of what a
    reserve gave go in one write with the next reserve."""
    ask = b"beanq-reserve-batch %d 0\r\n" % batch if batch > 1 else b"reserve-with-timeout 0\r\n"
    sel = selectors.DefaultSelector()
    socks = [_Conn(port) for _ in range(conns)]
    for each in socks:
        each.sock.setblocking(False)
        each.sock.sendall(ask)
        sel.register(each.sock, selectors.EVENT_READ, each)
    done = 0
    empty = 0
    start = last = time.perf_counter()
    end = start + seconds
    while last < end and empty < conns:
        for key, _ in sel.select(0.5):
            conn: _Conn = key.data
            conn.buf += conn.sock.recv(1 << 20)
            replies, conn.buf = split_replies(conn.buf)
            deletes = []
            for line, _body in replies:
                if line.startswith(b"RESERVED "):
                    if delete:
                        deletes.append(b"delete %s\r\n" % line.split()[1])
                    else:
                        done += 1
                elif line == b"DELETED":
                    done += 1
                elif line == b"TIMED_OUT":
                    empty += 1  # the tube is empty: this connection stops asking
            if deletes:
                conn.sock.sendall(b"".join(deletes) + ask)
            elif not delete and any(line.startswith(b"RESERVED ") for line, _ in replies):
                conn.sock.sendall(ask)
        last = time.perf_counter()
    elapsed = last - start
    for each in socks:
        sel.unregister(each.sock)
        each.sock.close()
    return done / elapsed, done


def reserve_batch(kind: ServerKind, lg: LoadGen, jobs: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"server": kind.name, "conns": 50, "batch": 100}
    for delete in (False, True):
        what = "reserved_and_deleted" if delete else "reserved"
        for batch in (1, 100):
            server = Server(kind)
            try:
                server.start()
                _fill(lg, server, "default", jobs)
                rate, done = _drain_rate(server.port, 50, batch, seconds, delete)
                out[f"{what}_per_s_batch_{batch}"] = round(rate, 1)
                out[f"{what}_batch_{batch}"] = done
            except Exception as e:
                out["error"] = f"{type(e).__name__}: {e}"
            finally:
                server.stop()
        single = out.get(f"{what}_per_s_batch_1")
        if single:
            out[f"{what}_ratio"] = round(out.get(f"{what}_per_s_batch_100", 0) / single, 2)
    return out


def render(res: dict[str, Any]) -> str:
    f = res.get("flush_list_move", {})
    b = res.get("reserve_batch", {})
    mb = 1 / 1024
    lines = ["\nExtensions (beanq alone; targets from issue 15)"]
    if "error" in f:
        lines.append(f"  flush/list/move: ERROR {f['error']}")
    elif f:
        lines += [
            f"  flush of {f['jobs']:,} ready jobs: {f['flush_s']} s (target < 2 s);"
            f" RSS empty {f['rss_empty_kb'] * mb:.0f} MB, filled {f['rss_filled_kb'] * mb:.0f},"
            f" after flush {f['rss_after_flush_kb'] * mb:.0f},"
            f" after the same drained by deletes {f['rss_after_deletes_kb'] * mb:.0f}",
            f"  a page of 1,000 ids from {f['jobs']:,}: median {f['list_page_ms_median']} ms,"
            f" p99 {f['list_page_ms_p99']} ms round trip (target < 5 ms at the server)",
            f"  move of {f['moved_jobs']:,} jobs: {f['move_s']} s (target < 1 s)",
        ]
    if "error" in b:
        lines.append(f"  reserve-batch: ERROR {b['error']}")
    elif b:
        for what, text in (("reserved", "reserving"), ("reserved_and_deleted", "and deleting")):
            lines.append(
                f"  50 connections {text}: reserve-batch 100"
                f" {b.get(f'{what}_per_s_batch_100', 0):,.0f} jobs/s, single reserves"
                f" {b.get(f'{what}_per_s_batch_1', 0):,.0f}: {b.get(f'{what}_ratio')}x"
                " (target >= 3x)"
            )
    return "\n".join(lines)
