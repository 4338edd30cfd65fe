"""Connection settings shared by the blocking and the trio client (and copied by ``clone``)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Options:
    """``timeout``: seconds to wait for an ordinary reply (None: forever), added to the server
    side wait of ``reserve-with-timeout``; a plain ``reserve`` is never cut short.
    ``reconnect``: open a new connection, restoring the used tube and watch list, when the
    previous one was lost. A command whose reply was lost is reported, never re-sent."""

    timeout: float | None = None
    connect_timeout: float = 10.0
    reconnect: bool = False

    def __attrs_post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be positive or None")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
