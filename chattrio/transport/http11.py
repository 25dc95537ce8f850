"""HTTP/1.1 on a Trio stream with h11: read one request, write one response."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from http import HTTPStatus
from typing import TypeVar

import h11
import msgspec
import trio

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
# Parsing a head costs the event loop a few microseconds per line: a head with more header
# fields than this is refused (431) from a count of its raw lines, before it is parsed.
MAX_HEADER_FIELDS = 100
# A client that does not read its response within this is dropped, with the buffers it held.
WRITE_TIMEOUT = 10.0
SERVER_NAME = b"chattrio"
_HEAD_END = re.compile(rb"\n\r?\n")

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
    def from_h11(cls, event: h11.Request, body: bytes) -> Request:
        target = event.target.decode("latin-1")
        try:
            parts = urllib.parse.urlsplit(target)
        except ValueError:  # e.g. "//[" : an unterminated IPv6 host
            raise BadRequest(400, "malformed request target") from None
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return cls(event.method.decode("ascii"), parts.path, query, headers, body)

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


class _HeadLimits:
    """Counts the lines and bytes of a request head as they arrive, up to the blank line that
    ends it, and refuses (431) a head over the limits before it is parsed."""

    def __init__(self) -> None:
        self.lines = 0
        self.size = 0
        self._tail = b""  # the last bytes seen, in case the blank line spans two reads
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        window = self._tail + data
        end = _HEAD_END.search(window)
        if end is not None:
            self._done = True
            window = window[: end.start() + 1]
        self.lines += window.count(b"\n") - self._tail.count(b"\n")
        self.size += len(window) - len(self._tail)
        self._tail = window[-3:]
        if self.lines > MAX_HEADER_FIELDS + 1:  # + the request line
            raise BadRequest(431, f"more than {MAX_HEADER_FIELDS} header fields")
        if self.size > MAX_HEADER_BYTES:
            raise BadRequest(431, f"request head over {MAX_HEADER_BYTES} bytes")


def _check_framing(event: h11.Request) -> None:
    """Refuse, before reading any body, what cannot be read safely or would be refused anyway."""
    names = {name for name, _ in event.headers}  # h11 gives them in lower case
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 6.1: a request smuggling pattern; the connection must not be reused.
        raise BadRequest(400, "Content-Length together with Transfer-Encoding")
    for name, value in event.headers:
        if name == b"content-length" and int(value) > MAX_BODY_BYTES:  # h11 allows at most 20 digits
            raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")


async def receive_request(conn: h11.Connection, stream: trio.abc.Stream) -> Request | None:
    """The next request on the connection, or None when the client closed it."""
    request_event = None
    head = _HeadLimits()
    head.feed(conn.trailing_data[0])  # a pipelined request read along with the previous one
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(READ_SIZE))  # a socket's bytes: no copy
            if request_event is None:
                head.feed(data)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED and request_event is None:
            return None
        if isinstance(event, h11.Request):
            _check_framing(event)
            request_event = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            assert request_event is not None  # h11 gives a request's head before its end
            return Request.from_h11(request_event, bytes(body))


async def send_response(conn: h11.Connection, stream: trio.abc.Stream, response: Response) -> None:
    """Write the response, or raise trio.TooSlowError when the client does not take it in time."""
    headers = [
        (b"Server", SERVER_NAME),
        (b"Content-Type", response.content_type.encode()),
        (b"Content-Length", str(len(response.body)).encode()),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers),
    ]
    reason = HTTPStatus(response.status).phrase.encode() if response.status in HTTPStatus._value2member_map_ else b""
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if response.body and not response.head_only:
        data += conn.send(h11.Data(data=response.body))
    data += conn.send(h11.EndOfMessage())
    with trio.fail_after(WRITE_TIMEOUT):
        await stream.send_all(data)
