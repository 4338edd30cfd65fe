"""The opt-in HTTP listener (``--http``): health checks, Prometheus metrics, a JSON API and
the web console.

This package alone imports hypercorn, Starlette and prometheus-client (the ``http`` extra).
The server imports it only with ``--http``, after the beanstalk socket answers and on a
helper thread, and starts ``serve`` as a task of its trio nursery; it reads the engine through
``beanq.http.view.EngineView`` and changes the queue only through the console's actions, by
the ``beanq.operations.Operations`` the server hands it.
"""

from __future__ import annotations

import logging
import socket

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from beanq.http.app import Settings, build
from beanq.http.rates import Rates
from beanq.http.view import EngineView
from beanq.operations import Operations

__all__ = ["EngineView", "Settings", "bind", "serve"]

log = logging.getLogger("beanq")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (raises OSError), made here so that a port taken is the caller's
    start-up error rather than one buried in hypercorn's task."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


async def serve(
    view: EngineView,
    settings: Settings,
    sock: socket.socket,
    operations: Operations | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = HypercornConfig()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("beanq.http")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    rates = Rates(view.engine, view.clock)
    app = build(view, settings, operations, rates)
    host, port = sock.getsockname()[:2]
    log.info("http listening on %s:%d", host, port)
    task_status.started()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rates.run)
        await hypercorn_serve(app, config)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
