"""beanq-worker: run a ``Worker`` or ``AsyncWorker`` from a module, as ``celery worker`` does.

``beanq-worker MODULE:ATTR`` imports MODULE (the current directory first on the path) and takes
ATTR: a worker, or a function returning one. ``-a ADDRESS`` (repeatable: a pool) points it at
other servers, ``-Q`` replaces its tubes, ``-c`` its concurrency. The schedules of its
``@periodic`` handlers are declared when it starts. SIGTERM or SIGINT stops it gracefully
(running handlers finish, jobs reserved but not started are released); a second signal stops
it at once (the server puts back every job its connections held). Exit status: 0, 1 after a
second signal, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from beanq_client.worker import Worker

log = logging.getLogger("beanq_client.worker")
EXIT_AT_ONCE = 1


def load(target: str) -> Any:
    """The worker ``MODULE:ATTR`` names (ATTR called if it is a function that makes one)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    from beanq_client.trio_worker import AsyncWorker

    if not isinstance(obj, Worker | AsyncWorker) and callable(obj):
        obj = obj()
    if not isinstance(obj, Worker | AsyncWorker):
        raise ValueError(f"{target} is not a Worker or AsyncWorker (nor makes one)")
    return obj


def configure(worker: Any, args: argparse.Namespace) -> None:
    """The command line's overrides: servers, tubes, concurrency."""
    from beanq_client.trio_worker import AsyncWorker

    if args.address:
        is_async = isinstance(worker, AsyncWorker)
        if len(args.address) == 1:
            from beanq_client import AsyncClient, Client

            source: Any = (AsyncClient if is_async else Client)(args.address[0])
        else:
            from beanq_client import AsyncPool, Pool

            source = (AsyncPool if is_async else Pool)(args.address)
        worker.replace_source(source)
    if args.queues:
        tubes = [t for t in args.queues.split(",") if t]
        if not tubes:
            raise ValueError("-Q needs at least one tube")
        worker.tubes = tubes
        for p in worker.periodics.values():
            if p.tube not in tubes:
                log.warning("schedule %s puts into %s, which -Q leaves unwatched", p.name, p.tube)
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ValueError("-c must be at least 1")
        worker.concurrency = args.concurrency


def _stop(worker: Any, signum: int, count: int) -> None:
    """The ``count``-th SIGTERM or SIGINT: the first lets running jobs finish, the next one
    stops at once."""
    name = signal.Signals(signum).name
    if count == 1:
        log.info("%s: finishing running jobs (again to stop at once)", name)
        worker.stop()
    else:
        log.warning("%s again: stopping at once", name)
        os._exit(EXIT_AT_ONCE)


def run_sync(worker: Worker, burst: bool) -> int:
    signals = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        _stop(worker, signum, signals)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    worker.run(burst=burst, handle_signals=False)
    return 0


def run_async(worker: Any, burst: bool) -> int:
    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def watch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                    task_status.started()
                    count = 0
                    async for signum in received:
                        count += 1
                        _stop(worker, signum, count)

            await nursery.start(watch)
            await worker.run(burst=burst, handle_signals=False)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beanq-worker", description="Run a beanq_client Worker or AsyncWorker."
    )
    parser.add_argument("target", metavar="MODULE:ATTR", help="a worker, or a function making one")
    parser.add_argument(
        "-a",
        "--address",
        action="append",
        help="a server (repeat for a pool); default: the worker's",
    )
    parser.add_argument("-Q", "--queues", metavar="TUBES", help="comma-separated tubes to watch")
    parser.add_argument("-c", "--concurrency", type=int, metavar="N")
    parser.add_argument("-l", "--loglevel", default="info", metavar="LEVEL")
    parser.add_argument("--burst", action="store_true", help="stop once no job arrives")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.getLevelName(args.loglevel.upper())
    if not isinstance(level, int):
        parser.error(f"unknown log level {args.loglevel!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        worker = load(args.target)
        configure(worker, args)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(str(exc))
    log.info(
        "beanq-worker %s: tubes %s, concurrency %d, %d periodic",
        args.target,
        ",".join(worker.tubes),
        worker.concurrency,
        len(worker.periodics),
    )
    if isinstance(worker, Worker):
        return run_sync(worker, args.burst)
    return run_async(worker, args.burst)


if __name__ == "__main__":
    sys.exit(main())
