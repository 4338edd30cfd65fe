"""``beanqctl auth-new`` and ``auth-hash``: entries for beanq's ``--auth`` token file, made
offline (no server is contacted). See docs/security.md."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TextIO

from beanq import tokens


def entry(name: str, hashed: str, put: list[str], reserve: list[str], admin: bool) -> str:
    """One ``[tokens.NAME]`` table of the token file (TOML)."""
    return (
        f"[tokens.{name}]\n"
        f"hash = {json.dumps(hashed)}\n"
        f"put = {json.dumps(put)}\n"
        f"reserve = {json.dumps(reserve)}\n"
        f"admin = {'true' if admin else 'false'}\n"
    )


def cmd_auth_new(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    token = tokens.new_token(args.name)
    print(entry(args.name, tokens.hash_token(token), args.put, args.reserve, args.admin), file=out)
    print(
        f"# the token (shown once; give it to the client, keep it out of the file):\n{token}",
        file=err,
    )


def cmd_auth_hash(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    token = sys.stdin.readline().strip()
    if not token:
        raise ValueError("no token on stdin")
    name = token.partition(".")[0]
    print(entry(name, tokens.hash_token(token), args.put, args.reserve, args.admin), file=out)


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    def rights(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--put",
            action="append",
            default=[],
            metavar="GLOB",
            help="tubes it may use and put into (repeatable)",
        )
        p.add_argument(
            "--reserve",
            action="append",
            default=[],
            metavar="GLOB",
            help="tubes it may watch and reserve from (repeatable)",
        )
        p.add_argument("--admin", action="store_true", help="admin commands too")

    p = add(
        "auth-new",
        cmd_auth_new,
        "make a token: its --auth file entry on stdout, the token on stderr",
    )
    p.add_argument("name")
    rights(p)
    rights(
        add(
            "auth-hash",
            cmd_auth_hash,
            "the --auth file entry for a token read from stdin (NAME.SECRET)",
        )
    )
