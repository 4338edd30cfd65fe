"""Flags to ``Config``, as beanstalkd 1.12 parses them: same letters, defaults, messages and
exit codes. Combined short flags work (``-VV``, ``-p11300``, ``-Fb dir``).

Start-up order: flags, bind, drop privileges (``-u``), lock the binlog directory (``-b``),
listen, and only then import the server, trio and the rest. Listening comes a few milliseconds
after exec, before the imports that take a busy machine over 100 ms (see ``beanq.listener``),
and a daemon that cannot have its directory exits before it listens, so nobody's connection is
accepted and dropped. Replay comes after listening: clients that connect meanwhile wait in the
backlog, as with beanstalkd, and are answered once it is done.
"""

from __future__ import annotations

import os
import sys

from beanq import __version__, listener
from beanq.config import LOG_FORMATS, MAX_JOB_SIZE_LIMIT, YAML_MODES, Config, StartupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

USAGE = """\
Use: {prog} [OPTIONS]

Options:
 -b DIR   write-ahead log directory
 -f MS    fsync at most once every MS milliseconds (default is 50ms);
          use -f0 for "always fsync"
 -F       never fsync
 -l ADDR  listen on address (default is 127.0.0.1; use 0.0.0.0 for all interfaces,
          or unix:/path for a local socket); may be given several times:
          [tls://]ADDR[:PORT][,auth=none|optional|required], [V6]:PORT, unix:PATH
          tls:// also ,client-cert=none|optional|required (needs --tls-client-ca)
 -p PORT  listen on port (default is 11300; for -l entries without a port)
 -u USER  become user and group
 -z BYTES set the maximum job size in bytes (default is 65535);
          max allowed is 1073741824 bytes
 -s BYTES set the size of each write-ahead log file (default is 10485760);
          will be rounded up to a multiple of 4096 bytes
 -v       show version information and whether this build is compiled (also --version)
 -V       increase verbosity
 -h       show this help

Limits beyond beanstalkd (off by default):
 --max-connections N  close new connections beyond N at once
 --max-jobs N         answer put with OUT_OF_MEMORY while N jobs are held

Compatibility:
 --yaml 1.13|1.12     quote string values in stats as beanstalkd 1.13 does (default),
                      or leave them bare as beanstalkd 1.12 does

Observability (off by default; see docs/http.md):
 --http [ADDR:]PORT       serve /healthz, /readyz, /metrics and /api/v1/ over HTTP
                          (a bare port listens on 127.0.0.1)
 --http-token-file FILE   the API needs this file's token (Authorization: Bearer ...)
 --http-show-bodies       show job bodies in the API even without a token file
 --metrics-max-tubes N    tubes with their own metrics series; the rest are summed
                          under tube="_other" (default 500)
 --log-format text|json   json: one JSON object per log line

Security (see docs/security.md):
 --tls-cert FILE, --tls-key FILE   certificate chain and key for tls:// listeners
 --tls-client-ca FILE     CAs of client certificates; tls:// listeners require one
                          unless their client-cert= says optional or none
 --tls-handshake-timeout S  drop a client that has not finished its handshake (default 10)
 --auth FILE              tokens and their rights; listeners default to auth=required
 --keepalive I,N,C        TCP keepalive: idle I s, probes every N s, C probes (60,10,6;
                          0 turns it off)
 --tcp-user-timeout S     drop a peer that leaves sent data unacknowledged S s (120)
 --idle-timeout S         close connections idle S s (not waiting in reserve, not
                          holding jobs)
 --max-connections-per-ip N  close new connections from an address beyond N
"""
LONG_FLAGS = (
    "max-connections",
    "max-jobs",
    "yaml",
    "http",
    "http-token-file",
    "metrics-max-tubes",
    "log-format",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "tls-handshake-timeout",
    "auth",
    "keepalive",
    "tcp-user-timeout",
    "idle-timeout",
    "max-connections-per-ip",
)
FILE_FLAGS = ("tls-cert", "tls-key", "tls-client-ca", "auth")
SWITCHES = ("http-show-bodies",)


class UsageExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _warn(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _usage(prog: str, code: int) -> UsageExit:
    print(USAGE.format(prog=prog), file=sys.stderr, end="")
    return UsageExit(code)


def _version() -> UsageExit:
    from beanq import buildinfo

    print(f"beanq {__version__} ({buildinfo.describe()})")
    return UsageExit(0)


def _size(prog: str, text: str) -> int:
    if not text.isdigit():
        _warn(prog, f"invalid size: {text}")
        raise _usage(prog, 5)
    return int(text)


def _http_address(prog: str, text: str) -> tuple[str, int]:
    """``[ADDR:]PORT``, ``[v6]:PORT`` too; a bare port means 127.0.0.1."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        _warn(prog, f"--http takes [ADDR:]PORT, not {text}")
        raise _usage(prog, 5)
    return host, int(port)


def parse_args(argv: Sequence[str], prog: str = "beanq") -> Config:
    """Parse flags the way beanstalkd's optparse does. Raises UsageExit for -h, -v and errors."""
    values: dict[str, object] = {}
    verbose = 0
    listens: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            _warn(prog, f"unknown argument: {arg}")
            raise _usage(prog, 5)
        j = 1
        while j < len(arg):
            flag = arg[j]
            j += 1
            if flag in "plzsfub":
                if j < len(arg):
                    value = arg[j:]
                    j = len(arg)
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    _warn(prog, f"flag requires an argument: -{flag}")
                    raise _usage(prog, 5)
                if flag == "p":
                    values["port"] = value
                elif flag == "l":
                    listens.append(value)
                elif flag == "z":
                    size = _size(prog, value)
                    if size > MAX_JOB_SIZE_LIMIT:
                        _warn(prog, f"maximum job size was set to {MAX_JOB_SIZE_LIMIT}")
                        size = MAX_JOB_SIZE_LIMIT
                    values["max_job_size"] = size
                elif flag == "s":
                    values["segment_size"] = _size(prog, value)
                elif flag == "f":
                    values["fsync_ms"] = _size(prog, value)
                elif flag == "u":
                    values["user"] = value
                else:
                    values["binlog_dir"] = value
            elif arg == "--version":
                raise _version()
            elif flag == "-" and arg[2:] in SWITCHES:
                values[arg[2:].replace("-", "_")] = True
                break
            elif flag == "-" and arg[2:].partition("=")[0] in LONG_FLAGS:
                name, eq, value = arg[2:].partition("=")
                if not eq:
                    if i >= len(args):
                        _warn(prog, f"flag requires an argument: --{name}")
                        raise _usage(prog, 5)
                    value = args[i]
                    i += 1
                if name == "yaml":
                    if value not in YAML_MODES:
                        _warn(prog, f"--yaml takes 1.13 or 1.12, not {value}")
                        raise _usage(prog, 5)
                    values["yaml"] = value
                elif name == "log-format":
                    if value not in LOG_FORMATS:
                        _warn(prog, f"--log-format takes text or json, not {value}")
                        raise _usage(prog, 5)
                    values["log_format"] = value
                elif name == "http":
                    values["http"] = _http_address(prog, value)
                elif name == "http-token-file":
                    values["http_token_file"] = value
                elif name in FILE_FLAGS:
                    values[name.replace("-", "_") + ("_file" if name == "auth" else "")] = value
                elif name in ("tls-handshake-timeout", "idle-timeout"):
                    key = "idle_timeout" if name == "idle-timeout" else "tls_handshake_timeout"
                    values[key] = _seconds(prog, name, value)
                elif name == "keepalive":
                    values["keepalive"] = _keepalive(prog, value)
                elif name == "tcp-user-timeout":
                    values["user_timeout"] = _size(prog, value)
                else:
                    values[name.replace("-", "_")] = _size(prog, value)
                break
            elif flag == "F":
                values["fsync_ms"] = None
            elif flag in "cn":
                _warn(prog, f"-{flag} flag was removed. binlog is always compacted.")
            elif flag == "V":
                verbose += 1
            elif flag == "h":
                raise _usage(prog, 0)
            elif flag == "v":
                raise _version()
            else:
                _warn(prog, f"unknown flag: {arg}")
                raise _usage(prog, 5)
    port_text = str(values.pop("port", "11300"))
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        _warn(prog, f"getaddrinfo(): invalid port {port_text}")
        raise UsageExit(111)
    if listens:
        values["listen"] = tuple(listens)
    config = Config(port=port, verbose=verbose, **values)  # type: ignore[arg-type]
    _check_listeners(prog, config)
    return config


def _seconds(prog: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e9:
        _warn(prog, f"--{name} takes seconds, not {text}")
        raise _usage(prog, 5)
    return value


def _keepalive(prog: str, text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if text == "0":
        return (0, 0, 0)
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        _warn(prog, f"--keepalive takes IDLE,INTERVAL,COUNT (or 0), not {text}")
        raise _usage(prog, 5)
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _check_listeners(prog: str, config: Config) -> None:
    """Each -l parses; tls:// needs a certificate; auth= needs --auth; client-cert= makes
    sense (``listener.client_cert_mode``)."""
    try:
        wanted = listener.endpoints(config)
    except ValueError as exc:
        _warn(prog, str(exc))
        raise _usage(prog, 5) from None
    for endpoint in wanted:
        if endpoint.tls and not (config.tls_cert and config.tls_key):
            _warn(prog, f"-l {endpoint.text} needs --tls-cert and --tls-key")
            raise _usage(prog, 5)
        if endpoint.auth in ("optional", "required") and config.auth_file is None:
            _warn(prog, f"-l {endpoint.text} needs --auth FILE")
            raise _usage(prog, 5)
        try:
            listener.client_cert_mode(endpoint, config)
        except ValueError as exc:
            _warn(prog, str(exc))
            raise _usage(prog, 5) from None


def _become(user: str) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StartupError(f'getpwnam("{user}"): no such user', 33) from None
    try:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise StartupError(f'setuid({entry.pw_uid} "{user}"): {exc.strerror}', 34) from exc


def _configure_logging(verbose: int, log_format: str = "text") -> None:
    import logging

    root = logging.getLogger("beanq")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from beanq.logjson import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s beanq: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _lock_binlog(config: Config) -> tuple[int, str] | None:
    if config.binlog_dir is None:
        return None
    _configure_logging(config.verbose, config.log_format)  # the lock's own warnings say why
    from beanq import binlog

    try:
        return binlog.lock_dir(config.binlog_dir)
    except binlog.BinlogError as exc:
        raise StartupError(str(exc), exc.code) from exc


def main(argv: Sequence[str] | None = None) -> int:
    prog = "beanq"
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, prog)
    except UsageExit as exc:
        return exc.code
    try:
        bound = listener.bind(config)
        if config.user:
            _become(config.user)
        lock = _lock_binlog(config)
        listener.listen(bound)
        _configure_logging(config.verbose, config.log_format)
        from beanq import server

        server.run(config, bound, lock)
    except StartupError as exc:
        _warn(prog, str(exc))
        return exc.code
    except KeyboardInterrupt:
        pass
    return 0
