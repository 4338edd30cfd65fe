"""beanq_client: a client for beanstalkd-protocol servers (beanq and beanstalkd alike).

The blocking client, pool and worker need only the standard library and attrs; the trio ones
(``AsyncClient``, ``AsyncPool``, ``AsyncWorker``) are imported, with trio, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beanq_client.address import Address, default_address, parse_address
from beanq_client.commands import Unique
from beanq_client.errors import (
    ERRORS,
    BadFormatError,
    BeanstalkConnectionError,
    BeanstalkError,
    BuriedError,
    CommandError,
    DeadlineSoonError,
    DecodeError,
    DrainingError,
    ExpectedCrlfError,
    InternalError,
    JobTooBigError,
    NoServerAvailableError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    PipelineError,
    TimedOutError,
    UnauthorizedError,
    UnexpectedReplyError,
    UnknownCommandError,
)
from beanq_client.jobs import JSON, Job, JobRef, JSONSerializer, Serializer
from beanq_client.pool import Pool
from beanq_client.stats import JobStats, ServerStats, TubeStats
from beanq_client.sync import Client, Pipeline
from beanq_client.worker import Backoff, Outcome, Worker, encode_task

if TYPE_CHECKING:
    from beanq_client.trio_client import AsyncClient, AsyncPipeline
    from beanq_client.trio_pool import AsyncPool
    from beanq_client.trio_worker import AsyncWorker

_LAZY = {
    "AsyncClient": "beanq_client.trio_client",
    "AsyncPipeline": "beanq_client.trio_client",
    "AsyncPool": "beanq_client.trio_pool",
    "AsyncWorker": "beanq_client.trio_worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beanq_client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ERRORS",
    "JSON",
    "Address",
    "AsyncClient",
    "AsyncPipeline",
    "AsyncPool",
    "AsyncWorker",
    "Backoff",
    "BadFormatError",
    "BeanstalkConnectionError",
    "BeanstalkError",
    "BuriedError",
    "Client",
    "CommandError",
    "DeadlineSoonError",
    "DecodeError",
    "DrainingError",
    "ExpectedCrlfError",
    "InternalError",
    "JSONSerializer",
    "Job",
    "JobRef",
    "JobStats",
    "JobTooBigError",
    "NoServerAvailableError",
    "NotFoundError",
    "NotIgnoredError",
    "OutOfMemoryError",
    "Outcome",
    "Pipeline",
    "PipelineError",
    "Pool",
    "Serializer",
    "ServerStats",
    "TimedOutError",
    "TubeStats",
    "UnauthorizedError",
    "UnexpectedReplyError",
    "Unique",
    "UnknownCommandError",
    "Worker",
    "default_address",
    "encode_task",
    "parse_address",
]
