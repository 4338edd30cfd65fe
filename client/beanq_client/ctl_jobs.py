"""beanqctl's bulk commands: flush, ls, move and migrate.

Against beanq each uses the server's extension (one command for a flush or a move, pages of
ids for ls). Against beanstalkd, which has none, each falls back to the best loop the standard
protocol allows, says so on stderr, and shows its progress there:

* flush: ``peek-<state>`` then ``delete``, one job per round trip pair;
* ls: ``stats-job`` on every id from 1 to the highest one (``total-jobs`` of ``stats``);
* move and migrate: ``peek-<state>``, ``stats-job``, ``put`` on the target with the job's
  priority, TTR and remaining delay (a buried job is put, then ``reserve-job`` and ``bury``
  there), then ``delete`` at the source. The job gets a new id and its counters start again.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, TextIO

from beanq_client.errors import NotFoundError
from beanq_client.jobs import Job
from beanq_client.stats import JobStats
from beanq_client.sync import Client

STATES: Final = ("ready", "delayed", "buried")
PREVIEW: Final = 40


class Declined(Exception):
    """The user did not confirm: nothing was done (exit status 1)."""


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one final line otherwise."""

    def __init__(self, err: TextIO, what: str, total: int) -> None:
        self.err = err
        self.what = what
        self.total = total
        self.done = 0
        self.tty = err.isatty()
        self._drawn = 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._drawn > 0.05:
            self.err.write(f"\r{self.what} {self._bar()}")
            self.err.flush()
            self._drawn = now

    def end(self) -> None:
        self.err.write(("\r" if self.tty else "") + f"{self.what} {self._bar()}\n")
        self.err.flush()

    def _bar(self) -> str:
        width = 30
        total = max(self.total, self.done)
        filled = width if total <= 0 else width * self.done // total
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{total}"


def has(client: Client[bytes], extension: str) -> bool:
    return extension in client.capabilities()


def _fallback(err: TextIO, message: str) -> None:
    err.write(f"beanqctl: the server has no beanq extensions (beanstalkd?): {message}\n")
    err.flush()


def _states(state: str) -> tuple[str, ...]:
    return STATES if state == "all" else (state,)


def _count(client: Client[bytes], tube: str, states: tuple[str, ...]) -> int:
    try:
        stats: dict[str, Any] = dict(client.stats_tube(tube))
    except NotFoundError:
        return 0
    return sum(int(stats[f"current-jobs-{s}"]) for s in states)


def _peek(client: Client[bytes], state: str) -> Job[bytes] | None:
    peek = {
        "ready": client.peek_ready,
        "delayed": client.peek_delayed,
        "buried": client.peek_buried,
    }[state]
    try:
        return peek()
    except NotFoundError:
        return None


def _peeked(client: Client[bytes], tube: str, state: str) -> Iterator[Job[bytes]]:
    """The jobs of ``tube`` in ``state``, one ``peek`` at a time: the caller removes each
    before asking for the next."""
    client.use(tube)
    while True:
        job = _peek(client, state)
        if job is None:
            return
        yield job


# --- flush -----------------------------------------------------------------------------------


def matching_tubes(client: Client[bytes], pattern: str) -> list[str]:
    if not any(c in pattern for c in "*?["):
        return [pattern]
    return [t for t in client.tubes() if fnmatch.fnmatchcase(t, pattern)]


def cmd_flush(client: Client[bytes], args: argparse.Namespace, out: Any) -> None:
    tubes = matching_tubes(client, args.tube)
    states = _states(args.state)
    total = sum(_count(client, t, states) for t in tubes)
    if not args.yes and not _confirm(
        out, f"flush {total} {args.state} jobs from {', '.join(tubes) or 'no tube'}?"
    ):
        raise Declined("not flushed")
    flushed: dict[str, int] = {}
    if has(client, "flush"):
        for tube in tubes:
            flushed[tube] = client.flush(tube, args.state)
    else:
        _fallback(out.err, "deleting one job per peek and delete")
        progress = Progress(out.err, "flushing", total)
        for tube in tubes:
            flushed[tube] = 0
            for state in states:
                for job in _peeked(client, tube, state):
                    client.delete(job)
                    flushed[tube] += 1
                    progress.step()
        progress.end()
    text = "\n".join(f"{tube}: {n} flushed" for tube, n in flushed.items())
    out.emit({"flushed": flushed}, text)


def _confirm(out: Any, question: str) -> bool:
    stdin = sys.stdin
    if not stdin.isatty():
        out.err.write(f"beanqctl: {question} (not a terminal: pass --yes)\n")
        return False
    out.err.write(f"{question} [y/N] ")
    out.err.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


# --- ls --------------------------------------------------------------------------------------


def _row(client: Client[bytes], job_id: int) -> dict[str, Any] | None:
    try:
        stats: JobStats = client.stats_job(job_id)
        body = client.peek(job_id).body
    except NotFoundError:
        return None  # gone meanwhile
    text = body[:PREVIEW].decode("utf-8", "replace").replace("\n", "\\n")
    return {
        "id": job_id,
        "pri": stats["pri"],
        "age": stats["age"],
        "time-left": stats["time-left"],
        "size": len(body),
        "preview": text + ("..." if len(body) > PREVIEW else ""),
    }


def _ids_by_walk(
    client: Client[bytes], tube: str, state: str, limit: int, err: TextIO
) -> Iterator[int]:
    top = client.stats()["total-jobs"]
    progress = Progress(err, "looking at every id", top)
    found = 0
    for job_id in range(1, top + 1):
        progress.step()
        try:
            stats = client.stats_job(job_id)
        except NotFoundError:
            continue
        if stats["tube"] == tube and stats["state"] == state:
            found += 1
            yield job_id
            if found >= limit:
                break
    progress.end()


def cmd_ls(client: Client[bytes], args: argparse.Namespace, out: Any) -> None:
    if has(client, "list"):
        ids: Iterator[int] = client.list_jobs(args.tube, args.state, page=min(args.limit, 1000))
    else:
        _fallback(out.err, "walking every id with stats-job")
        ids = _ids_by_walk(client, args.tube, args.state, args.limit, out.err)
    rows = []
    for job_id in ids:
        row = _row(client, job_id)
        if row is not None:
            rows.append(row)
        if len(rows) >= args.limit:
            break
    head = f"{'ID':>10} {'PRI':>10} {'AGE':>7} {'LEFT':>7} {'SIZE':>7}  BODY"
    lines = [head] + [
        f"{r['id']:>10} {r['pri']:>10} {r['age']:>7} {r['time-left']:>7} {r['size']:>7}  "
        f"{r['preview']}"
        for r in rows
    ]
    out.emit(rows, "\n".join(lines))


# --- move and migrate ------------------------------------------------------------------------


def copy_job(target: Client[bytes], tube: str, job: Job[bytes], stats: JobStats) -> int:
    """Put ``job`` on ``target`` in ``tube`` as ``stats`` describes it: its priority, TTR,
    remaining delay; a buried job is reserved there at once and buried again."""
    target.use(tube)
    state = stats["state"]
    delay = stats["time-left"] if state == "delayed" else 0
    new_id = target.put(job.body, priority=stats["pri"], delay=delay, ttr=stats["ttr"])
    if state == "buried":
        target.reserve_job(new_id)
        target.bury(new_id, priority=stats["pri"])
    return new_id


def _copy_all(
    source: Client[bytes],
    target: Client[bytes],
    pairs: list[tuple[str, str]],
    states: tuple[str, ...],
    progress: Progress,
) -> int:
    """Copy then delete, job by job, for each (from tube, to tube)."""
    moved = 0
    for src, dst in pairs:
        for state in states:
            for job in _peeked(source, src, state):
                try:
                    stats = source.stats_job(job)
                except NotFoundError:
                    continue
                copy_job(target, dst, job, stats)
                source.delete(job)
                moved += 1
                progress.step()
    return moved


def cmd_move(client: Client[bytes], args: argparse.Namespace, out: Any) -> None:
    states = _states(args.state)
    if has(client, "move"):
        moved = sum(client.move(args.source, args.target, state) for state in states)
    else:
        _fallback(out.err, "copying each job (new id, counters reset) and deleting the original")
        progress = Progress(out.err, "moving", _count(client, args.source, states))
        with client.clone() as target:
            moved = _copy_all(client, target, [(args.source, args.target)], states, progress)
        progress.end()
    out.emit({"moved": moved}, f"moved {moved} jobs from {args.source} to {args.target}")


def cmd_migrate(
    open_client: Callable[[str], Client[bytes]], args: argparse.Namespace, out: Any
) -> None:
    with open_client(args.source) as source, open_client(args.target) as target:
        tubes = args.tubes or source.tubes()
        total = sum(_count(source, t, STATES) for t in tubes)
        progress = Progress(out.err, "migrating", total)
        moved = _copy_all(source, target, [(t, t) for t in tubes], STATES, progress)
        progress.end()
    out.emit({"migrated": moved}, f"migrated {moved} jobs")


def add_commands(
    add: Callable[..., argparse.ArgumentParser],
    state_choices: Callable[[argparse.ArgumentParser, str, tuple[str, ...]], None],
) -> None:
    p = add("flush", cmd_flush, "delete every ready, delayed or buried job of tubes (globs)")
    p.add_argument("tube", help="a tube name or a glob (quoted): 'jobs-*'")
    state_choices(p, "all", (*STATES, "all"))
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p = add("ls", cmd_ls, "list a tube's jobs in one state without reserving them")
    p.add_argument("tube")
    state_choices(p, "ready", (*STATES, "reserved"))
    p.add_argument("--limit", type=int, default=20, help="jobs to show (default 20)")
    p = add("move", cmd_move, "move a tube's jobs to another tube")
    p.add_argument("source", metavar="FROM")
    p.add_argument("target", metavar="TO")
    state_choices(p, "all", (*STATES, "all"))
