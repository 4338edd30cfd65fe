"""beanqctl: look at and operate a beanstalkd or beanq server from a shell.

Every command prints plain text for people, or with ``--json`` one JSON document (``top``: one
per refresh, one per line) for scripts. Exit status: 0 on success, 1 when the server refuses
(``NOT_FOUND``...), 2 for usage errors, 3 when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from beanq_client import ctl_auth, ctl_jobs, ctl_schedules
from beanq_client.address import ENV_VAR, default_address, parse_address
from beanq_client.errors import BeanstalkConnectionError, BeanstalkError, TimedOutError
from beanq_client.jobs import DEFAULT_PRIORITY, DEFAULT_TTR, Job
from beanq_client.stats import TubeStats
from beanq_client.sync import Client

EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
BAR_WIDTH: Final = 30
TOP_COLUMNS: Final = (
    ("READY", "current-jobs-ready"),
    ("RESERVED", "current-jobs-reserved"),
    ("DELAYED", "current-jobs-delayed"),
    ("BURIED", "current-jobs-buried"),
    ("WAITING", "current-waiting"),
)


class Output:
    """Where results go: text for a terminal, JSON for ``--json``."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def emit(self, data: Any, text: str) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, sort_keys=False) + "\n")
        else:
            self.out.write(text if text.endswith("\n") or not text else text + "\n")
        self.out.flush()

    def write_bytes(self, data: bytes) -> None:
        """Bodies go out as they are when the stream has a binary side (a real stdout)."""
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            self.out.write(data.decode("utf-8", "replace"))
            self.out.flush()

    def mapping(self, data: dict[str, Any]) -> None:
        self.emit(data, "\n".join(f"{k}: {_text(v)}" for k, v in data.items()))


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _job_data(job: Job[bytes]) -> dict[str, Any]:
    try:
        return {"id": job.id, "body": job.body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"id": job.id, "body_base64": base64.b64encode(job.body).decode("ascii")}


def _show_job(out: Output, job: Job[bytes]) -> None:
    if out.as_json:
        out.emit(_job_data(job), "")
        return
    out.out.write(f"id: {job.id}\n")
    out.write_bytes(job.body + b"\n")


# --- commands ----------------------------------------------------------------------------------


def cmd_stats(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    out.mapping(dict(client.stats()))


def cmd_tubes(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    tubes = client.tubes()
    out.emit(tubes, "\n".join(tubes))


def cmd_stats_tube(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    out.mapping(dict(client.stats_tube(args.tube)))


def cmd_put(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    if args.body is None or args.body == "-":
        body = sys.stdin.buffer.read()
    else:
        body = args.body.encode("utf-8")
    client.use(args.tube)
    job_id = client.put(body, priority=args.priority, delay=args.delay, ttr=args.ttr)
    out.emit({"id": job_id, "tube": args.tube}, str(job_id))


def cmd_peek(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    _show_job(out, client.peek(args.id))


def _peek_state(state: str) -> Callable[[Client[bytes], argparse.Namespace, Output], None]:
    def command(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
        client.use(args.tube)
        peek = {
            "ready": client.peek_ready,
            "delayed": client.peek_delayed,
            "buried": client.peek_buried,
        }[state]
        _show_job(out, peek())

    return command


def cmd_kick(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    client.use(args.tube)
    count = client.kick(args.bound)
    out.emit({"tube": args.tube, "kicked": count}, str(count))


def cmd_kick_job(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    client.kick_job(args.id)
    out.emit({"id": args.id, "kicked": True}, f"kicked {args.id}")


def cmd_delete(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    client.delete(args.id)
    out.emit({"id": args.id, "deleted": True}, f"deleted {args.id}")


def cmd_pause(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    client.pause_tube(args.tube, args.seconds)
    out.emit({"tube": args.tube, "paused": args.seconds}, f"paused {args.tube} for {args.seconds}s")


def _bar(done: int, total: int) -> str:
    filled = BAR_WIDTH if total <= 0 else min(BAR_WIDTH, BAR_WIDTH * done // total)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{max(total, done)}"


def cmd_drain(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    """Reserve and delete every ready job of the tube (with ``--all``, kick buried and delayed
    jobs first, so they are drained too). Jobs other clients hold are left alone."""
    tube = args.tube
    client.watch(tube)
    if tube != "default":
        client.ignore("default")
    client.use(tube)
    stats = client.stats_tube(tube)
    total = stats["current-jobs-ready"]
    if args.all:
        total += stats["current-jobs-buried"] + stats["current-jobs-delayed"]
    tty = out.err.isatty()
    deleted = 0
    last_drawn = 0.0
    while True:
        try:
            job = client.reserve(timeout=0)
        except TimedOutError:
            if args.all and client.kick(2**32 - 1) > 0:
                continue
            break
        client.delete(job)
        deleted += 1
        now = time.monotonic()
        if tty and now - last_drawn > 0.05:
            out.err.write(f"\rdraining {tube} {_bar(deleted, total)}")
            out.err.flush()
            last_drawn = now
    out.err.write(("\r" if tty else "") + f"draining {tube} {_bar(deleted, total)}\n")
    out.err.flush()
    out.emit({"tube": tube, "deleted": deleted}, f"deleted {deleted} jobs from {tube}")


def _tube_rows(client: Client[bytes]) -> dict[str, TubeStats]:
    rows: dict[str, TubeStats] = {}
    for tube in client.tubes():
        try:
            rows[tube] = client.stats_tube(tube)
        except BeanstalkError:
            continue  # the tube vanished between list-tubes and stats-tube
    return rows


def render_top(
    address: str,
    rows: dict[str, TubeStats],
    rates: dict[str, tuple[float, float]],
    interval: float,
) -> str:
    header = ["TUBE", *(name for name, _ in TOP_COLUMNS), "PUT/S", "DEL/S"]
    table = [header]
    for tube, stats in rows.items():
        values: dict[str, Any] = dict(stats)
        puts, deletes = rates.get(tube, (0.0, 0.0))
        table.append(
            [tube, *(str(values[key]) for _, key in TOP_COLUMNS), f"{puts:.1f}", f"{deletes:.1f}"]
        )
    width = max(len(row[0]) for row in table)
    lines = [f"beanqctl top  {address}  {time.strftime('%H:%M:%S')}  every {interval:g}s"]
    for row in table:
        cells = [row[0].ljust(width)] + [
            cell.rjust(max(len(h), 8)) for cell, h in zip(row[1:], header[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def cmd_top(client: Client[bytes], args: argparse.Namespace, out: Output) -> None:
    """Refresh a table of tubes every ``--interval`` seconds, ``--iterations`` times (0:
    until interrupted). Rates are puts and deletes per second since the previous refresh."""
    previous: dict[str, TubeStats] = {}
    previous_at = 0.0
    frame = 0
    clear = not out.as_json and out.out.isatty()
    while args.iterations == 0 or frame < args.iterations:
        if frame:
            time.sleep(args.interval)
        now = time.monotonic()
        rows = _tube_rows(client)
        rates: dict[str, tuple[float, float]] = {}
        for tube, stats in rows.items():
            if not frame or now <= previous_at:
                continue
            # A tube missing last time did not exist then; it starts from zero counts.
            puts_before, deletes_before = 0, 0
            if tube in previous:
                puts_before = previous[tube]["total-jobs"]
                deletes_before = previous[tube]["cmd-delete"]
            elapsed = now - previous_at
            rates[tube] = (
                max(0, stats["total-jobs"] - puts_before) / elapsed,
                max(0, stats["cmd-delete"] - deletes_before) / elapsed,
            )
        data = {
            "time": time.time(),
            "tubes": {
                tube: {
                    **{key: dict(stats)[key] for _, key in TOP_COLUMNS},
                    "put_rate": rates.get(tube, (0.0, 0.0))[0],
                    "delete_rate": rates.get(tube, (0.0, 0.0))[1],
                }
                for tube, stats in rows.items()
            },
        }
        text = render_top(str(client.address), rows, rates, args.interval)
        out.emit(data, ("\x1b[H\x1b[2J" if clear else "") + text + ("" if clear else "\n"))
        previous, previous_at = rows, now
        frame += 1


# --- argument parsing --------------------------------------------------------------------------


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beanqctl",
        description="Operate a beanstalkd or beanq server.",
        epilog=f"The address defaults to ${ENV_VAR}, else 127.0.0.1:11300.",
    )
    parser.add_argument(
        "-a",
        "--address",
        help="host:port, unix:/path, beanstalk://[:TOKEN@]host:port or "
        "beanstalks://[:TOKEN@]host:port?ca=FILE&cert=FILE&key=FILE",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--timeout", type=_positive_float, default=10.0, help="reply timeout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("stats", cmd_stats, "server statistics")
    add("tubes", cmd_tubes, "list the tubes")
    add("stats-tube", cmd_stats_tube, "statistics of a tube").add_argument("tube")
    p = add("put", cmd_put, "put a job (the body from the argument, or stdin)")
    p.add_argument("tube")
    p.add_argument("body", nargs="?", help="the body; '-' or nothing reads stdin")
    p.add_argument("--priority", type=_nonnegative, default=DEFAULT_PRIORITY)
    p.add_argument("--delay", type=_nonnegative, default=0)
    p.add_argument("--ttr", type=_nonnegative, default=DEFAULT_TTR)
    add("peek", cmd_peek, "show a job").add_argument("id", type=_nonnegative)
    for state in ("ready", "delayed", "buried"):
        add(
            f"peek-{state}", _peek_state(state), f"show the next {state} job of a tube"
        ).add_argument("tube")
    p = add("kick", cmd_kick, "kick up to N buried (else delayed) jobs of a tube")
    p.add_argument("tube")
    p.add_argument("bound", type=_nonnegative, metavar="N")
    add("kick-job", cmd_kick_job, "kick one buried or delayed job").add_argument(
        "id", type=_nonnegative
    )
    add("delete", cmd_delete, "delete a job").add_argument("id", type=_nonnegative)
    p = add("pause", cmd_pause, "pause a tube for some seconds")
    p.add_argument("tube")
    p.add_argument("seconds", type=_nonnegative)
    p = add("top", cmd_top, "a live table of tubes")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="seconds per refresh")
    p.add_argument(
        "--iterations", "-n", type=_nonnegative, default=0, help="refreshes (0: until Ctrl-C)"
    )
    p = add("drain", cmd_drain, "reserve and delete every job of a tube")
    p.add_argument("tube")
    p.add_argument("--all", action="store_true", help="kick buried and delayed jobs too")

    def state_choices(p: argparse.ArgumentParser, default: str, choices: tuple[str, ...]) -> None:
        p.add_argument("--state", choices=choices, default=default, help=f"default {default}")

    ctl_jobs.add_commands(add, state_choices)
    ctl_auth.add_commands(add)
    ctl_schedules.add_commands(add)
    p = add(
        "migrate",
        cmd_drain,  # (replaced in main: it opens its own two connections)
        "copy every ready, delayed and buried job to another server, then delete it here",
    )
    p.add_argument("--from", dest="source", required=True, metavar="ADDR")
    p.add_argument("--to", dest="target", required=True, metavar="ADDR")
    p.add_argument("tubes", nargs="*", metavar="TUBE", help="default: every tube")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json, sys.stdout, sys.stderr)
    if args.command in ("auth-new", "auth-hash"):  # offline: no server
        try:
            args.func(args, sys.stdout, sys.stderr)
        except ValueError as exc:
            print(f"beanqctl: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    try:
        address = default_address() if args.address is None else parse_address(args.address)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.command == "migrate":
            if parse_address(args.source) == parse_address(args.target):
                parser.error("--from and --to are the same server")
            ctl_jobs.cmd_migrate(
                lambda a: Client(parse_address(a), timeout=args.timeout), args, out
            )
            return 0
        if args.command == "move" and args.source == args.target:
            parser.error("FROM and TO are the same tube")
        with Client(address, timeout=args.timeout) as client:
            args.func(client, args, out)
    except BeanstalkConnectionError as exc:
        print(f"beanqctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (BeanstalkError, ctl_jobs.Declined) as exc:
        print(f"beanqctl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:  # a tube name or number the protocol cannot carry
        print(f"beanqctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
