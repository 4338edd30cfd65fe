"""What the command line decides, apart from the modules that act on it: the start-up path
reads flags, binds and listens before it imports anything else of beanq (see ``beanq.cli``),
so this module imports nothing at run time (``typing`` alone costs as much as ``socket``)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

DEFAULT_MAX_JOB_SIZE: Final = 65535
MAX_JOB_SIZE_LIMIT: Final = 1 << 30
YAML_MODES: Final = ("1.13", "1.12")
LOG_FORMATS: Final = ("text", "json")
DEFAULT_METRICS_MAX_TUBES: Final = 500


class Config:
    """Defaults are beanstalkd's, except the listen address."""

    __slots__ = (
        "auth_file",
        "binlog_dir",
        "fsync_ms",
        "http",
        "http_show_bodies",
        "http_token_file",
        "idle_timeout",
        "keepalive",
        "listen",
        "log_format",
        "max_connections",
        "max_connections_per_ip",
        "max_job_size",
        "max_jobs",
        "metrics_max_tubes",
        "port",
        "segment_size",
        "tls_cert",
        "tls_client_ca",
        "tls_handshake_timeout",
        "tls_key",
        "user",
        "user_timeout",
        "verbose",
        "yaml",
    )

    def __init__(
        self,
        *,
        listen: tuple[str, ...] = ("127.0.0.1",),  # one entry per -l (see beanq.listener)
        port: int = 11300,
        max_job_size: int = DEFAULT_MAX_JOB_SIZE,
        binlog_dir: str | None = None,
        fsync_ms: int | None = 50,  # None: never fsync (-F)
        segment_size: int = 10 << 20,
        user: str | None = None,
        verbose: int = 0,
        max_connections: int | None = None,  # beyond beanstalkd: close connections past this
        max_jobs: int | None = None,  # beyond beanstalkd: put answers OUT_OF_MEMORY at this many
        yaml: str = "1.13",  # stats strings quoted as beanstalkd 1.13 does, or bare as 1.12
        http: tuple[str, int] | None = None,  # --http: (host, port) of the HTTP listener
        http_token_file: str | None = None,  # its API needs the token in this file
        http_show_bodies: bool = False,  # job bodies in the API without a token file
        metrics_max_tubes: int = DEFAULT_METRICS_MAX_TUBES,  # tubes with their own series
        log_format: str = "text",  # or "json": one object per line
        # dead peers and slow attackers (see docs/security.md)
        keepalive: tuple[int, int, int] = (60, 10, 6),  # idle, interval (s), probes; idle 0: off
        user_timeout: int = 120,  # TCP_USER_TIMEOUT seconds (0: the kernel's default)
        idle_timeout: float | None = None,  # close connections idle this long
        max_connections_per_ip: int | None = None,
        # TLS and authentication
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,  # require client certificates signed by these
        tls_handshake_timeout: float = 10.0,
        auth_file: str | None = None,
    ) -> None:
        self.listen = listen
        self.port = port
        self.max_job_size = max_job_size
        self.binlog_dir = binlog_dir
        self.fsync_ms = fsync_ms
        self.segment_size = segment_size
        self.user = user
        self.verbose = verbose
        self.max_connections = max_connections
        self.max_jobs = max_jobs
        self.yaml = yaml
        self.http = http
        self.http_token_file = http_token_file
        self.http_show_bodies = http_show_bodies
        self.metrics_max_tubes = metrics_max_tubes
        self.log_format = log_format
        self.keepalive = keepalive
        self.user_timeout = user_timeout
        self.idle_timeout = idle_timeout
        self.max_connections_per_ip = max_connections_per_ip
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_client_ca = tls_client_ca
        self.tls_handshake_timeout = tls_handshake_timeout
        self.auth_file = auth_file


class StartupError(Exception):
    """The server cannot start; ``code`` is beanstalkd's exit status for the same failure."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
