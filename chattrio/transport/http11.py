"""HTTP/1.1 on a Trio stream: requests read with httptools (llhttp, in C), responses written here.

h11, used first, took ~80 µs of CPU to read a small request and ~70 µs to write its answer on
the AMD EPYC host of docs/benchmarks.md; httptools reads one in a few µs
(docs/decisions/connect-path.md)."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections import deque
from http import HTTPStatus
from typing import TypeVar

import httptools
import msgspec
import trio

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
# A head with more header fields than this is refused (431) as the parser meets them.
MAX_HEADER_FIELDS = 100
# A client that does not read its response within this is dropped, with the buffers it held.
WRITE_TIMEOUT = 10.0
SERVER_NAME = b"chattrio"
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_UNSAFE_IN_HEADER = re.compile(r"[\r\n\x00]")

T = TypeVar("T")


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    peer: str = ""  # the address of the TCP peer, set by the listener

    @classmethod
    def from_parsed(cls, method: bytes, target: bytes, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> Request:
        try:
            parts = urllib.parse.urlsplit(target.decode("latin-1"))
        except ValueError:  # e.g. "//[" : an unterminated IPv6 host
            raise BadRequest(400, "malformed request target") from None
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return cls(method.decode("ascii"), parts.path, query, headers, body)

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None

    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def require_json(self) -> None:
        media_type = self.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise BadRequest(415, "the body must be JSON, sent with Content-Type: application/json")

    def decode(self, body_type: type[T], expected: str) -> T:
        """The JSON body as `body_type`, or 400 saying what was expected and what was wrong."""
        try:
            return msgspec.json.decode(self.body, type=body_type)
        except msgspec.ValidationError as exc:
            raise BadRequest(400, f"{expected}: {exc}") from None
        except msgspec.DecodeError:
            raise BadRequest(400, f"body must be valid JSON; {expected}") from None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # A HEAD answer carries the GET answer's headers and no body.
    head_only: bool = False

    @property
    def closes(self) -> bool:
        """Whether the response says the connection closes after it."""
        return any(name.lower() == "connection" and value.lower() == "close" for name, value in self.headers)


_envelope_encoder = msgspec.json.Encoder()


def json_response(
    status: int, message: str, data: object = None, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = _envelope_encoder.encode({"success": 200 <= status < 300, "message": message, "data": data})
    return Response(status, body, "application/json", headers or [])


def error_response(status: int, reason: str) -> Response:
    return json_response(status, reason)


def closing_error_response(status: int, reason: str) -> Response:
    """An error after which the connection is closed (the rest of the request is not read)."""
    return json_response(status, reason, headers=[("Connection", "close")])


class _Parsed:
    """A request as the parser gave it, turned into a Request outside the parser's callbacks."""

    __slots__ = ("method", "target", "headers", "body", "keep_alive")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool):
        self.method, self.target, self.headers, self.body, self.keep_alive = method, target, headers, body, keep_alive


class HttpConnection:
    """The HTTP/1.1 requests of one connection, read with httptools (llhttp, in C), in order.

    Requests read together (pipelined) are answered in order; an error met behind them is raised
    once they are served. A head over MAX_HEADER_FIELDS fields or MAX_HEADER_BYTES bytes is
    refused with 431, a body over MAX_BODY_BYTES with 413 (from its Content-Length, before it is
    read), anything llhttp refuses with 400.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._ready: deque[_Parsed] = deque()
        self._failure: BadRequest | None = None
        self._in_head = False
        self._head_bytes = 0  # of the fields parsed
        self._unfinished_bytes = 0  # of reads that ended inside the head
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self.keep_alive = True  # whether the connection stays open after the last request's answer
        self.trailing_data = b""  # what followed a request to upgrade the connection
        self._upgraded = False  # after an upgrade request the parser reads no further request

    async def receive_request(self, stream: trio.abc.Stream) -> Request | None:
        """The next request, or None when the client closed the connection."""
        while not self._ready:
            if self._failure is not None:
                raise self._failure
            if self._upgraded:
                return None
            data = bytes(await stream.receive_some(READ_SIZE))  # a socket's bytes: no copy
            if not data:
                return None
            self._feed(data)
        parsed = self._ready.popleft()
        self.keep_alive = parsed.keep_alive
        return Request.from_parsed(parsed.method, parsed.target, parsed.headers, parsed.body)

    def _feed(self, data: bytes) -> None:
        head_began_before = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.trailing_data, self._upgraded = data[upgrade.args[0] :], True
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, BadRequest):
                raise  # a fault of ours: the listener logs it with the traceback
            self._failure = exc.__context__
        except httptools.HttpParserError as exc:
            self._failure = BadRequest(400, f"malformed request: {exc}")
        if self._in_head and head_began_before:
            # A whole read inside one head: httptools holds the field it has not finished, which
            # the callbacks have not counted.
            self._unfinished_bytes += len(data)
            if self._unfinished_bytes > MAX_HEADER_BYTES and self._failure is None:
                self._failure = BadRequest(431, f"request head over {MAX_HEADER_BYTES} bytes")

    # httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes, self._unfinished_bytes = True, 0, 0
        self._target, self._headers, self._body = b"", [], bytearray()

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._head_field(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(self._headers) > MAX_HEADER_FIELDS:
            raise BadRequest(431, f"more than {MAX_HEADER_FIELDS} header fields")
        self._head_field(len(name) + len(value) + 4)

    def _head_field(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEADER_BYTES:
            raise BadRequest(431, f"request head over {MAX_HEADER_BYTES} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        version = self._parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise BadRequest(505, f"HTTP/{version} is not supported: HTTP/1.1 only")
        names = {name.lower() for name, _ in self._headers}
        if version == "1.1" and b"host" not in names:
            raise BadRequest(400, "missing Host header")
        for name, value in self._headers:
            # llhttp has checked that it is one number
            if name.lower() == b"content-length" and int(value) > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")

    def on_message_complete(self) -> None:
        parser = self._parser
        # As h11 did: HTTP/1.0 connections close after one answer. After a request to upgrade,
        # the connection carries no more HTTP requests.
        keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1" and not parser.should_upgrade()
        self._ready.append(_Parsed(parser.get_method(), self._target, self._headers, bytes(self._body), keep_alive))


def response_bytes(response: Response, keep_alive: bool) -> bytes:
    """The response's bytes: `Connection: close` unless the connection stays open."""
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n".encode(),
        b"Server: " + SERVER_NAME + b"\r\n",
        b"Content-Type: " + response.content_type.encode("latin-1") + b"\r\n",
        b"Content-Length: " + str(len(response.body)).encode() + b"\r\n",
    ]
    for name, value in response.headers:
        if _UNSAFE_IN_HEADER.search(name) or _UNSAFE_IN_HEADER.search(value):
            raise ValueError(f"header {name!r} would break the response head")
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive and not response.closes:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    if response.body and not response.head_only:
        head.append(response.body)
    return b"".join(head)


async def send_response(stream: trio.abc.Stream, response: Response, keep_alive: bool) -> None:
    """Write the response, or raise trio.TooSlowError when the client does not take it in time."""
    with trio.fail_after(WRITE_TIMEOUT):
        await stream.send_all(response_bytes(response, keep_alive))
