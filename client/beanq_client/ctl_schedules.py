"""beanqctl's ``schedule`` commands (beanq's periodic schedules): add, ls, rm, pause, resume."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from beanq_client.sync import Client

COLUMNS = ("NAME", "TUBE", "TRIGGER", "NEXT FIRE", "LAST FIRE", "FIRED", "SKIPPED", "MISSED")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trigger(s: dict[str, Any]) -> str:
    if "cron" in s:
        return f"cron {s['cron']} {s['tz']}"
    every = s["every"]
    return f"every {int(every) if every == int(every) else every}s"


def cmd_add(client: Client[bytes], args: argparse.Namespace, out: Any) -> None:
    text: str | None = args.body
    body = sys.stdin.buffer.read() if text is None or text == "-" else text.encode()
    options: dict[str, Any] = {
        "cron": args.cron,
        "tz": args.tz,
        "every": args.every,
        "priority": args.pri,
        "ttr": args.ttr,
        "delay": args.delay,
        "overlap": args.overlap,
        "catchup": args.catchup,
        "grace": args.grace,
    }
    replaced = client.schedule_add(
        args.name, args.tube, body, **{k: v for k, v in options.items() if v is not None}
    )
    word = "replaced" if replaced else "added"
    out.emit({"name": args.name, "replaced": replaced}, f"{word} schedule {args.name}")


def cmd_ls(client: Client[bytes], args: argparse.Namespace, out: Any) -> None:
    items = client.schedules()
    rows = [
        (
            s["name"],
            s["tube"],
            trigger(s),
            "paused" if s["paused"] else _when(s["next_fire"]),
            _when(s["last_fire"]),
            str(s["fired"]),
            str(s["skipped"]),
            str(s["missed"]),
        )
        for s in items
    ]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(COLUMNS)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [COLUMNS, *rows]
    ]
    out.emit(items, "\n".join(lines) if rows else "no schedules")


def _simple(word: str, done: str) -> Callable[[Client[bytes], argparse.Namespace, Any], None]:
    def command(client: Client[bytes], args: argparse.Namespace, out: Any) -> None:
        {"rm": client.schedule_remove, "pause": client.schedule_pause}.get(
            word, client.schedule_resume
        )(args.name)
        out.emit({"name": args.name, word: True}, f"{done} schedule {args.name}")

    return command


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds")
    return value


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``beanqctl schedule ...``: one command with its own subcommands."""
    parser = add("schedule", cmd_ls, "periodic schedules kept by a beanq server")
    sub = parser.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    p = sub.add_parser("add", help="add a schedule, or replace the one of that name")
    p.set_defaults(func=cmd_add)
    p.add_argument("name")
    p.add_argument("--tube", required=True)
    trig = p.add_mutually_exclusive_group(required=True)
    trig.add_argument("--cron", metavar="EXPR", help="5 fields, or 6 with seconds first")
    trig.add_argument("--every", type=_seconds, metavar="SECONDS")
    p.add_argument("--tz", metavar="ZONE", help="IANA zone of --cron (default UTC)")
    p.add_argument("--body", help="the jobs' body (default: read stdin)")
    p.add_argument("--pri", type=int)
    p.add_argument("--ttr", type=int)
    p.add_argument("--delay", type=int)
    p.add_argument("--overlap", choices=("skip", "allow"))
    p.add_argument("--catchup", choices=("none", "one", "all"))
    p.add_argument("--grace", type=_seconds, metavar="SECONDS")
    p = sub.add_parser("ls", help="list the schedules")
    p.set_defaults(func=cmd_ls)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    for word, done, text in (
        ("rm", "removed", "remove a schedule"),
        ("pause", "paused", "pause a schedule"),
        ("resume", "resumed", "resume a schedule (missed times are not caught up)"),
    ):
        p = sub.add_parser(word, help=text)
        p.set_defaults(func=_simple(word, done))
        p.add_argument("name")
