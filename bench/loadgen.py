"""The load generator: a pool of worker processes, each one epoll loop over many sockets.

Design goals, in order:

1. Not be the bottleneck for beanq. Each worker is a separate process (no GIL sharing),
   sends a whole window of pipelined requests with one ``send``, parses replies with
   ``bytes.find`` and slices only, and records latency as one integer append per reply.
2. Bounded: every run has a hard deadline and an idle watchdog; a worker that hangs or dies
   is killed and replaced, never waited on forever.
3. Honest windows: only replies that arrive inside the measured window count; requests still
   in flight at the end are cleanup, the same rule bsload uses.
4. Not pace the server with its own wake-ups: a worker waiting for replies polls without
   sleeping for up to ``SPIN_NS`` before it blocks. Waking a sleeping process costs 10-20 us
   on this VM, as much as a whole window of pipelined commands costs a fast server, so with
   one connection the run measured how quickly the worker woke up (both servers then idle
   half the time). The polling is subtracted from the CPU share it reports, which stays the
   measure of how close the worker is to being the bottleneck.

Workers are forked once and reused for every run, so a run costs no process start-up and the
parent can read their CPU time from /proc while they work.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import select
import socket
import time
import traceback
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.procstat import CpuWindow
from bench.proto import Client, make_body, put_command

# Request kinds, kept as small ints so the hot loop compares ints, not strings.
PUT, RESERVE, DELETE = 0, 1, 2
KIND_NAMES = ("put", "reserve", "delete")
# Connection roles.
R_PUT, R_RESERVE, R_CYCLE, R_PRODUCER, R_CONSUMER = range(5)

WORKLOAD_KINDS = ("put", "reserve", "cycle", "mixed")
IDLE_WATCHDOG_NS = 10_000_000_000
SPIN_NS = 50_000  # see design goal 4
MAX_LATENCY_SAMPLES = 400_000  # per worker; beyond that we keep an even stride


@dataclass(frozen=True)
class LoadSpec:
    """One load run. ``duration`` bounds the measured window; ``count`` bounds put jobs."""

    kind: str
    port: int
    conns: int
    depth: int = 1
    body_size: int = 100
    tube: str = "bench"
    duration: float | None = 2.0
    count: int | None = None
    workers: int = 2
    mixed_cap: int = 1000
    hard_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.kind not in WORKLOAD_KINDS:
            raise ValueError(f"unknown workload kind {self.kind!r}")
        if self.duration is None and self.count is None and self.kind != "reserve":
            raise ValueError("an unbounded run needs a duration or a count")


@dataclass
class LoadResult:
    """Merged figures of one run across all workers."""

    ops: int = 0
    jobs: int = 0
    window_s: float = 0.0
    by_cmd: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: int = 0
    p50_us: float = 0.0
    p99_us: float = 0.0
    server_cpu_pct: float = 0.0
    loadgen_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    irq_pct: float = 0.0
    others_pct: float = 0.0
    complete: bool = True

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.window_s if self.window_s > 0 else 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.window_s if self.window_s > 0 else 0.0

    def rates(self) -> dict[str, Any]:
        """ops/s and, where the server's CPU was seen, ops per second of it (steadier than
        ops/s on a shared machine, and blind to the load generator's own CPU), and errors."""
        out: dict[str, Any] = {"ops_per_s": self.ops_per_s}
        if self.server_cpu_pct > 0:
            out["ops_per_cpu_s"] = self.ops_per_s * 100.0 / self.server_cpu_pct
        if self.errors:
            out["error"] = str(self.errors)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "jobs": self.jobs,
            "window_s": round(self.window_s, 4),
            "ops_per_s": round(self.ops_per_s, 1),
            "jobs_per_s": round(self.jobs_per_s, 1),
            "p50_us": round(self.p50_us, 1),
            "p99_us": round(self.p99_us, 1),
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "loadgen_cpu_pct": round(self.loadgen_cpu_pct, 1),
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "irq_pct": round(self.irq_pct, 1),
            "others_pct": round(self.others_pct, 1),
            "by_cmd": self.by_cmd,
            "errors": self.errors,
            "timed_out": self.timed_out,
            "complete": self.complete,
        }


# --------------------------------------------------------------------------- worker side


class _Conn:
    __slots__ = (
        "dels",
        "done",
        "drained",
        "flip",
        "kinds",
        "rbuf",
        "role",
        "sock",
        "stalled",
        "times",
        "wbuf",
    )

    def __init__(self, sock: socket.socket, role: int) -> None:
        self.sock = sock
        self.role = role
        self.rbuf = b""
        self.wbuf = b""
        self.kinds: deque[int] = deque()
        self.times: deque[int] = deque()
        self.dels: deque[bytes] = deque()
        self.flip = False
        self.drained = False
        self.stalled = False
        self.done = False


def _setup_commands(spec: LoadSpec, index: int) -> tuple[int, list[bytes]]:
    tube = spec.tube.encode()
    watch = [b"watch %s\r\n" % tube, b"ignore default\r\n"]
    if spec.kind == "put":
        return R_PUT, [b"use %s\r\n" % tube]
    if spec.kind == "reserve":
        return R_RESERVE, watch
    if spec.kind == "cycle":
        own = b"%s.%d" % (tube, index)
        return R_CYCLE, [b"use %s\r\n" % own, b"watch %s\r\n" % own, b"ignore default\r\n"]
    if index % 2 == 0:
        return R_PRODUCER, [b"use %s\r\n" % tube]
    return R_CONSUMER, watch


def _conn_indices(spec: LoadSpec, worker: int, nworkers: int) -> list[int]:
    """Connections of one worker. mixed deals out (producer, consumer) pairs, so every
    worker holds both roles and its local backpressure counter sees both sides."""
    if spec.kind == "mixed":
        return [i for i in range(spec.conns) if (i // 2) % nworkers == worker]
    return list(range(worker, spec.conns, nworkers))


def workers_for(spec: LoadSpec, pool_size: int) -> int:
    """How many workers a run uses: never more than it has connections (or pairs)."""
    units = spec.conns // 2 if spec.kind == "mixed" else spec.conns
    return max(1, min(spec.workers, pool_size, units))


class _Run:
    """One worker's share of one LoadSpec: its sockets, counters and the epoll loop."""

    def __init__(self, spec: LoadSpec, worker: int, nworkers: int) -> None:
        self.spec = spec
        self.conns: dict[int, _Conn] = {}
        self.ep = select.epoll()
        indices = _conn_indices(spec, worker, nworkers)
        self.remaining = -1  # -1: no job quota
        if spec.count is not None:
            share = spec.count // nworkers + (1 if worker < spec.count % nworkers else 0)
            self.remaining = share
        producers = sum(1 for i in indices if i % 2 == 0)
        self.cap = max(1, spec.mixed_cap * producers // max(1, (spec.conns + 1) // 2))
        self.outstanding = 0
        self.stalled: list[_Conn] = []
        body = make_body(spec.body_size)
        self.put_cmd = put_command(body)
        self.res0 = b"reserve-with-timeout 0\r\n"
        self.res1 = b"reserve-with-timeout 1\r\n"
        self.ops = 0
        self.jobs = 0
        self.by_cmd = [0, 0, 0]
        self.errors: Counter[str] = Counter()
        self.timed_out = 0
        self.lat: array[int] = array("q")
        self.last_reply_ns = 0
        self.spun_ns = 0  # time spent polling for replies that had not come yet
        try:
            self._connect(spec, indices)
        except BaseException:
            self.close()
            raise

    def _connect(self, spec: LoadSpec, indices: list[int]) -> None:
        for i in indices:
            role, cmds = _setup_commands(spec, i)
            client = Client(spec.port, timeout=20.0)
            try:
                prefixes = {b"use": b"USING", b"watch": b"WATCHING", b"ignore": b"WATCHING"}
                client.send(b"".join(cmds))
                for cmd, (line, _) in zip(cmds, client.read_replies(len(cmds)), strict=True):
                    if not line.startswith(prefixes[cmd.split(b" ", 1)[0]]):
                        raise RuntimeError(f"setup {cmd!r} got {line!r}")
            except BaseException:
                client.close()
                raise
            sock = client.sock
            sock.setblocking(False)
            c = _Conn(sock, role)
            self.conns[sock.fileno()] = c
            self.ep.register(sock.fileno(), select.EPOLLIN)

    def close(self) -> None:
        self.ep.close()
        for c in self.conns.values():
            with contextlib.suppress(OSError):
                c.sock.close()
        self.conns.clear()

    # -- sending

    def _write(self, c: _Conn, data: bytes) -> None:
        if c.wbuf:
            c.wbuf += data
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            c.wbuf = data[n:]
            self.ep.modify(c.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.wbuf)
        except BlockingIOError:
            return
        c.wbuf = c.wbuf[n:]
        if not c.wbuf:
            self.ep.modify(c.sock.fileno(), select.EPOLLIN)

    def _refill(self, c: _Conn, now: int) -> None:
        room = self.spec.depth - len(c.kinds)
        if room <= 0:
            return
        parts: list[bytes] = []
        kinds = c.kinds
        times = c.times
        role = c.role
        while room > 0:
            if c.dels:
                parts.append(c.dels.popleft())
                kinds.append(DELETE)
            elif role == R_PUT:
                if self.remaining == 0:
                    break
                if self.remaining > 0:
                    self.remaining -= 1
                parts.append(self.put_cmd)
                kinds.append(PUT)
            elif role == R_RESERVE:
                if c.drained:
                    break
                parts.append(self.res0)
                kinds.append(RESERVE)
            elif role == R_CYCLE:
                c.flip = not c.flip
                if c.flip:
                    parts.append(self.put_cmd)
                    kinds.append(PUT)
                else:
                    parts.append(self.res0)
                    kinds.append(RESERVE)
            elif role == R_PRODUCER:
                if self.outstanding >= self.cap:
                    if not c.stalled:
                        c.stalled = True
                        self.stalled.append(c)
                    break
                self.outstanding += 1
                parts.append(self.put_cmd)
                kinds.append(PUT)
            else:
                parts.append(self.res1)
                kinds.append(RESERVE)
            times.append(now)
            room -= 1
        if parts:
            self._write(c, parts[0] if len(parts) == 1 else b"".join(parts))

    # -- receiving

    def _on_readable(self, c: _Conn, now: int, deadline: int) -> bool:
        """Handle replies; False when the connection died."""
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError as e:
            self.errors[f"conn:{type(e).__name__}"] += 1
            return False
        if not data:
            self.errors["conn:EOF"] += 1
            return False
        if c.rbuf:
            data = c.rbuf + data
        kinds = c.kinds
        times = c.times
        lat = self.lat
        counted = now <= deadline
        pos = 0
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            first = data[pos]
            if first == 82 and data.startswith(b"RESERVED", pos):  # "R"
                ok = True
                sp1 = data.index(b" ", pos + 9, eol)
                size = int(data[sp1 + 1 : eol])
                end = eol + 2 + size + 2
                if end > len(data):
                    break
                c.dels.append(b"delete " + data[pos + 9 : sp1] + b"\r\n")
                pos = end
            else:
                ok = first in (73, 68)  # INSERTED, DELETED
                if not ok:
                    line = data[pos:eol]
                    if line == b"TIMED_OUT":
                        self._timed_out(c)
                    else:
                        self.errors[line.split(b" ", 1)[0].decode("ascii", "replace")] += 1
                elif first == 68:  # DELETED
                    if counted:
                        self.jobs += 1
                    if c.role == R_PRODUCER or c.role == R_CONSUMER:
                        self.outstanding -= 1
                elif c.role == R_PUT and counted:
                    self.jobs += 1
                pos = eol + 2
            if not kinds:
                self.errors["conn:UNSOLICITED"] += 1
                return False
            kind = kinds.popleft()
            t0 = times.popleft()
            if counted:
                self.ops += 1
                self.by_cmd[kind] += 1
                lat.append(now - t0)
        c.rbuf = data[pos:] if pos < len(data) else b""
        self.last_reply_ns = now
        return True

    def _spin(self, since: int) -> list[tuple[int, int]]:
        """Poll without sleeping for up to SPIN_NS; the time counts as waiting, not work."""
        poll = self.ep.poll
        clock = time.monotonic_ns
        until = since + SPIN_NS
        events: list[tuple[int, int]] = []
        now = clock()
        while now < until and not events:
            events = poll(0)
            now = clock()
        self.spun_ns += now - since
        return events

    def _timed_out(self, c: _Conn) -> None:
        self.timed_out += 1
        if c.role == R_RESERVE:
            c.drained = True
        elif c.role == R_CYCLE:
            self.errors["reserve:TIMED_OUT"] += 1

    # -- the loop

    def run(self, t0: int, deadline: int, hard_deadline: int) -> int:
        """Drive all connections until the window ends; return the window's end (ns)."""
        conns = self.conns
        for c in conns.values():
            self._refill(c, t0)
        active = sum(1 for c in conns.values() if c.kinds or c.stalled)
        for c in conns.values():
            if not c.kinds and not c.stalled:
                c.done = True
        poll = self.ep.poll
        last_event = time.monotonic_ns()
        end = deadline
        while active > 0:
            now = time.monotonic_ns()
            if now >= deadline or now >= hard_deadline:
                break
            if now - last_event > IDLE_WATCHDOG_NS:
                self.errors["run:IDLE_WATCHDOG"] += 1
                break
            events = poll(0)
            if not events:
                events = self._spin(now)
            if not events:
                events = poll(min(0.1, (min(deadline, hard_deadline) - now) / 1e9))
            if not events:
                continue
            now = time.monotonic_ns()
            last_event = now
            for fd, ev in events:
                c = conns[fd]
                if c.done:
                    continue
                if ev & select.EPOLLOUT:
                    self._flush(c)
                if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                    if not self._on_readable(c, now, deadline):
                        for kind in c.kinds:
                            self.errors[f"{KIND_NAMES[kind]}:LOST"] += 1
                        c.kinds.clear()
                        c.done = True
                        active -= 1
                        self.ep.unregister(fd)
                        continue
                    self._refill(c, now)
                    if not c.kinds and not c.stalled:
                        c.done = True
                        active -= 1
            if self.stalled and self.outstanding < self.cap:
                stalled, self.stalled = self.stalled, []
                for c in stalled:
                    c.stalled = False
                    if not c.done:
                        self._refill(c, now)
            if active == 0:
                end = max(self.last_reply_ns, t0)
        if active > 0 and self.spec.duration is None:
            self.errors["run:DEADLINE"] += 1
        return min(end, deadline)


def _worker_main(pipe: Connection) -> None:
    """Serve runs from the parent until told to exit (or the parent goes away)."""
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        while True:
            msg = pipe.recv()
            if msg[0] == "exit":
                return
            _, spec, worker, nworkers = msg
            run: _Run | None = None
            try:
                run = _Run(spec, worker, nworkers)
                pipe.send(("ready", len(run.conns)))
                go = pipe.recv()
                if go[0] != "go":
                    continue
                _, t0, deadline, hard_deadline = go
                delay = (t0 - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                end = run.run(t0, deadline, hard_deadline)
                pipe.send(("done", end))
                lat = run.lat
                if len(lat) > MAX_LATENCY_SAMPLES:
                    lat = lat[:: len(lat) // MAX_LATENCY_SAMPLES + 1]
                pipe.send(
                    (
                        "result",
                        {
                            "ops": run.ops,
                            "jobs": run.jobs,
                            "by_cmd": run.by_cmd,
                            "errors": dict(run.errors),
                            "timed_out": run.timed_out,
                            "lat": lat.tobytes(),
                            "end": end,
                            "spun_ns": run.spun_ns,
                        },
                    )
                )
            except Exception:
                pipe.send(("error", traceback.format_exc()))
            finally:
                if run is not None:
                    run.close()


# --------------------------------------------------------------------------- parent side


class LoadGenError(RuntimeError):
    pass


class LoadGen:
    """The pool of forked workers. Use as a context manager so workers always get reaped."""

    def __init__(self, workers: int) -> None:
        self.size = workers
        self._ctx = mp.get_context("fork")
        self._procs: list[Any] = []
        self._pipes: list[Connection] = []
        self._spawn()

    def _spawn(self) -> None:
        for _ in range(self.size):
            parent_end, child_end = self._ctx.Pipe()
            proc = self._ctx.Process(target=_worker_main, args=(child_end,), daemon=True)
            proc.start()
            child_end.close()
            self._procs.append(proc)
            self._pipes.append(parent_end)

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("exit",))
        for proc in self._procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        for pipe in self._pipes:
            pipe.close()
        self._procs.clear()
        self._pipes.clear()

    def _reset(self) -> None:
        """Throw away every worker after a failure: their state is unknown."""
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=2)
        for pipe in self._pipes:
            pipe.close()
        self._procs.clear()
        self._pipes.clear()
        self._spawn()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @staticmethod
    def _recv(pipe: Connection, want: str, timeout: float) -> Any:
        if not pipe.poll(max(0.0, timeout)):
            raise LoadGenError(f"worker did not report {want!r} within {timeout:.1f}s")
        msg = pipe.recv()
        if msg[0] == "error":
            raise LoadGenError(f"worker failed:\n{msg[1]}")
        if msg[0] != want:
            raise LoadGenError(f"worker said {msg[0]!r}, expected {want!r}")
        return msg[1]

    def run(self, spec: LoadSpec, server_pid: int) -> LoadResult:
        try:
            return self._run(spec, server_pid)
        except BaseException:
            self._reset()
            raise

    def _run(self, spec: LoadSpec, server_pid: int) -> LoadResult:
        n = workers_for(spec, self.size)
        pipes = self._pipes[:n]
        for i, pipe in enumerate(pipes):
            pipe.send(("run", spec, i, n))
        for pipe in pipes:
            self._recv(pipe, "ready", 60.0)
        t0 = time.monotonic_ns() + 20_000_000
        hard = t0 + int(spec.hard_timeout * 1e9)
        deadline = hard if spec.duration is None else min(hard, t0 + int(spec.duration * 1e9))
        cpu = CpuWindow({"server": [server_pid], "loadgen": self.pids()[:n]})
        for pipe in pipes:
            pipe.send(("go", t0, deadline, hard))
        time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
        cpu.start()
        ends = []
        limit = (hard - time.monotonic_ns()) / 1e9 + 15.0
        for pipe in pipes:
            ends.append(self._recv(pipe, "done", limit))
        cpu.stop()
        parts = [self._recv(pipe, "result", 30.0) for pipe in pipes]
        result = LoadResult()
        lat = array("q")
        by_cmd = [0, 0, 0]
        errors: Counter[str] = Counter()
        spun_ns = 0
        for part in parts:
            spun_ns += part["spun_ns"]
            result.ops += part["ops"]
            result.jobs += part["jobs"]
            result.timed_out += part["timed_out"]
            for k in range(3):
                by_cmd[k] += part["by_cmd"][k]
            errors.update(part["errors"])
            chunk = array("q")
            chunk.frombytes(part["lat"])
            lat.extend(chunk)
        result.window_s = max(1e-9, (max(ends) - t0) / 1e9)
        result.by_cmd = {KIND_NAMES[k]: by_cmd[k] for k in range(3) if by_cmd[k]}
        result.errors = dict(errors)
        result.complete = not any(k.startswith("run:") for k in errors)
        if lat:
            ordered = sorted(lat)
            result.p50_us = ordered[(len(ordered) - 1) // 2] / 1000
            result.p99_us = ordered[int((len(ordered) - 1) * 0.99)] / 1000
        result.server_cpu_pct = cpu.shares["server"]
        # (the polling for replies is waiting: see design goal 4)
        spun_pct = 100 * spun_ns / (result.window_s * 1e9)
        result.loadgen_cpu_pct = max(0.0, cpu.shares["loadgen"] - spun_pct)
        result.machine_busy_pct = cpu.machine_busy_pct
        result.irq_pct = cpu.irq_pct
        result.others_pct = cpu.others_pct
        return result
