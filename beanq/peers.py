"""From the bound ``-l`` endpoints to what the loop serves: each listener with its TLS (one
context per ``client-cert=`` mode) and its authentication, TCP keepalive on every TCP
listener (``beanq.listener.tune_keepalive``), and the SIGHUP reload of certificates and
tokens. ``ssl`` and the token store are imported only when a listener needs them: a
plaintext daemon starts as fast as before."""

from __future__ import annotations

import logging
from collections.abc import Callable

from beanq.config import Config, StartupError
from beanq.listener import Endpoint, auth_mode, client_cert_mode, tune_keepalive
from beanq.server import Gate, Listening, TlsServer

log = logging.getLogger("beanq")


def listeners(config: Config, bound: list[Endpoint]) -> tuple[list[Listening], Callable[[], None]]:
    """The loop's listeners, and the function SIGHUP calls to reload certificates and
    tokens (without dropping a connection: each keeps what it negotiated or proved)."""
    files = None
    reloads: list[Callable[[], None]] = []
    if any(endpoint.tls for endpoint in bound):
        from beanq.tls import TlsFiles

        assert config.tls_cert is not None and config.tls_key is not None
        files = TlsFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
        reloads.append(files.reload)
    store = None
    if config.auth_file is not None:
        from beanq.auth import TokenStore

        store = TokenStore.load(config.auth_file)
        reloads.append(store.reload)
    made = []
    for endpoint in bound:
        assert endpoint.sock is not None
        sock = endpoint.sock
        tune_keepalive(sock, config.keepalive, config.user_timeout)
        mode = auth_mode(endpoint, config)
        gate: Gate | None = None
        if mode != "none":
            if store is None:
                raise StartupError(f"-l {endpoint.text} needs --auth FILE", 5)
            from beanq.auth import Authority

            gate = Authority(store, required=mode == "required")
        tls: TlsServer | None = None
        certs = ""
        if endpoint.tls:
            assert files is not None
            try:
                client_cert = client_cert_mode(endpoint, config)
            except ValueError as exc:  # (beanq.cli says so first; an inherited socket may not)
                raise StartupError(str(exc), 5) from None
            tls = files.context(client_cert)
            certs = f", client-cert={client_cert}"
        made.append(Listening(sock, tls, gate))
        where = endpoint.text or "inherited socket"
        log.info("listening on %s (auth=%s%s)", where, mode, certs)

    def reload() -> None:
        for each in reloads:
            try:
                each()
            except Exception as exc:  # a broken file must not take the server down
                log.warning("reload failed, keeping the old settings: %s", exc)

    return made, reload
