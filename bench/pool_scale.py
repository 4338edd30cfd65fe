"""Scaling out with the client's Pool: aggregate throughput with 1, 2 and 3 daemons.

beanstalk scales by running independent servers and letting clients spread over them. Here
producer processes put through ``beanq_client.Pool`` (round-robin) over K fresh daemons, then
worker processes reserve from all of them (``Pool.reserve``) and delete until every job is
gone. Rounds alternate the order of K (1 2 3, then 3 2 1, ...) so a machine that gets busier
during the run does not favour one K. Every phase is bounded in time, and the drain in count.

    .venv/bin/python -m bench.pool_scale [--seconds 3] [--producers 4] [--workers 4] [--rounds 2]

Prints, for each K, the median over rounds of puts/s and drained jobs/s (reserve + delete),
and the daemons' and clients' CPU seconds per second of the put phase, which shows what
limits the figure (see docs/operations.md for what a 2-core machine can show).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from beanq_client import Pool
from beanq_client.errors import TimedOutError

from bench.procstat import cpu_ticks
from bench.servers import Server, beanq_kind

BODY = b"x" * 100
TICKS = os.sysconf("SC_CLK_TCK")


def _produce(addresses: list[str], seconds: float, out: Connection) -> None:
    count = 0
    with Pool(addresses) as pool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(100):
                pool.put(BODY)
            count += 100
    out.send(count)


def _drain(addresses: list[str], seconds: float, out: Connection) -> None:
    count = 0
    with Pool(addresses, poll_interval=0.05) as pool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                job = pool.reserve(timeout=0.2)
            except TimedOutError:
                break  # every server empty for a whole round of polls
            pool.delete(job)
            count += 1
    out.send(count)


Client = Callable[[list[str], float, Connection], None]


def _run_clients(target: Client, n: int, addresses: list[str], seconds: float) -> tuple[int, float]:
    """Start n client processes; return their total count and their CPU seconds."""
    pipes = [mp.Pipe(duplex=False) for _ in range(n)]
    procs = [mp.Process(target=target, args=(addresses, seconds, w)) for _, w in pipes]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for proc in procs:
        proc.start()
    total = 0
    for (r, _), proc in zip(pipes, procs, strict=True):
        if r.poll(seconds + 60):
            total += r.recv()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            raise RuntimeError("a client process hung")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return total, cpu


def one_round(k: int, seconds: float, producers: int, workers: int) -> dict[str, float]:
    servers = [Server(beanq_kind()).start() for _ in range(k)]
    try:
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        ticks = [cpu_ticks(s.pid) for s in servers]
        start = time.monotonic()
        puts, client_cpu = _run_clients(_produce, producers, addresses, seconds)
        elapsed = time.monotonic() - start
        server_cpu = sum(cpu_ticks(s.pid) - t for s, t in zip(servers, ticks, strict=True))
        start = time.monotonic()
        drained, _ = _run_clients(_drain, workers, addresses, max(30.0, 10 * seconds))
        drain_elapsed = time.monotonic() - start
        if drained != puts:
            raise RuntimeError(f"drained {drained} of {puts} jobs")
        return {
            "puts_per_s": puts / elapsed,
            "drained_per_s": drained / drain_elapsed,
            "server_cpu": server_cpu / TICKS / elapsed,
            "client_cpu": client_cpu / elapsed,
        }
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_scale")
    parser.add_argument("--seconds", type=float, default=3.0, help="put phase per run")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-daemons", type=int, default=3)
    args = parser.parse_args()
    counts = list(range(1, args.max_daemons + 1))
    results: dict[int, list[dict[str, float]]] = {k: [] for k in counts}
    for n in range(args.rounds):
        for k in counts if n % 2 == 0 else reversed(counts):
            results[k].append(one_round(k, args.seconds, args.producers, args.workers))
    base = statistics.median(r["puts_per_s"] for r in results[1])
    print(f"{args.producers} producers, {args.workers} workers, 100-byte bodies")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print("daemons  puts/s  (x one)  drained/s  daemon CPU/s  client CPU/s  puts/CPU-s")
    for k in counts:
        med = {key: statistics.median(r[key] for r in results[k]) for key in results[k][0]}
        cpu = med["server_cpu"] + med["client_cpu"]
        print(
            f"{k:>7}  {med['puts_per_s']:>6.0f}  ({med['puts_per_s'] / base:.2f})"
            f"  {med['drained_per_s']:>9.0f}  {med['server_cpu']:>12.2f}"
            f"  {med['client_cpu']:>12.2f}  {med['puts_per_s'] / cpu:>10.0f}"
        )


if __name__ == "__main__":
    main()
