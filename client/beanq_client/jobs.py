"""Jobs as values, and the three ways a body travels: bytes, text, or serialized objects."""

from __future__ import annotations

import json
from typing import Any, Final, Generic, Protocol, TypeVar

import attrs

T = TypeVar("T")

DEFAULT_PRIORITY: Final = 1 << 31  # beanstalkd's conventional middle priority
DEFAULT_DELAY: Final = 0
DEFAULT_TTR: Final = 120


@attrs.frozen
class Job(Generic[T]):
    """A job as the server handed it out. ``server`` is set by pools, so that the follow-up
    commands (delete, release, touch...) go back to the connection that holds the job."""

    id: int
    body: T
    server: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class JobRef:
    """A job a pool inserted: job ids are only unique per server."""

    server: str
    id: int


JobLike = Job[Any] | JobRef | int


def job_id(job: JobLike) -> int:
    return job if isinstance(job, int) else job.id


class Serializer(Protocol):
    """What ``serializer=`` accepts; ``json``-like modules wrapped by ``JSONSerializer``."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """Compact UTF-8 JSON, the format the worker layer's task payloads use."""

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


JSON: Final = JSONSerializer()


class BodyCodec(Generic[T]):
    """Turns user bodies into bytes and back; chosen once per client."""

    def encode(self, body: T) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> T:
        raise NotImplementedError


class RawCodec(BodyCodec[bytes]):
    def encode(self, body: bytes) -> bytes:
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(
                f"this client sends bytes; got {type(body).__name__} "
                "(pass encoding= or serializer= to the client for other bodies)"
            )
        return bytes(body)

    def decode(self, data: bytes) -> bytes:
        return data


@attrs.frozen
class TextCodec(BodyCodec[str]):
    encoding: str = "utf-8"

    def encode(self, body: str) -> bytes:
        if not isinstance(body, str):
            raise TypeError(f"this client sends str; got {type(body).__name__}")
        return body.encode(self.encoding)

    def decode(self, data: bytes) -> str:
        return data.decode(self.encoding)


@attrs.frozen
class SerializerCodec(BodyCodec[Any]):
    serializer: Serializer

    def encode(self, body: Any) -> bytes:
        return self.serializer.dumps(body)

    def decode(self, data: bytes) -> Any:
        return self.serializer.loads(data)


RAW: Final = RawCodec()


def make_codec(encoding: str | None, serializer: Serializer | None) -> BodyCodec[Any]:
    if encoding is not None and serializer is not None:
        raise ValueError("pass encoding= or serializer=, not both")
    if serializer is not None:
        return SerializerCodec(serializer)
    if encoding is not None:
        "".encode(encoding)  # fail now, not at the first put, on an unknown encoding
        return TextCodec(encoding)
    return RAW
