"""HTTP/1.1 on a Trio stream with h11: read one request, write one response."""

from __future__ import annotations

import dataclasses
from typing import TypeVar
import urllib.parse
from http import HTTPStatus

import h11
import msgspec
import trio

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
SERVER_NAME = b"chattrio"

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
        parts = urllib.parse.urlsplit(target)
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


_envelope_encoder = msgspec.json.Encoder()


def json_response(status: int, message: str, data=None, headers=None) -> Response:
    body = _envelope_encoder.encode({"success": 200 <= status < 300, "message": message, "data": data})
    return Response(status, body, "application/json", headers or [])


def error_response(status: int, reason: str) -> Response:
    return json_response(status, reason)


async def receive_request(conn: h11.Connection, stream: trio.abc.Stream) -> Request | None:
    """The next request on the connection, or None when the client closed it."""
    request_event = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_SIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED and request_event is None:
            return None
        if isinstance(event, h11.Request):
            request_event = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return Request.from_h11(request_event, bytes(body))


async def send_response(conn: h11.Connection, stream: trio.abc.Stream, response: Response) -> None:
    headers = [
        ("Server", SERVER_NAME),
        ("Content-Type", response.content_type.encode()),
        ("Content-Length", str(len(response.body)).encode()),
        *((name, value.encode("latin-1")) for name, value in response.headers),
    ]
    reason = HTTPStatus(response.status).phrase.encode() if response.status in HTTPStatus._value2member_map_ else b""
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    data += conn.send(h11.Data(data=response.body)) if response.body else b""
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
