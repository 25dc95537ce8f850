"""A small keep-alive HTTP/1.1 client (h11 over trio) for the REST calls and /metrics.

Thousands of users log in within seconds; one TCP connection per request would also leave
thousands of TIME_WAIT sockets competing with the WebSocket connections for ephemeral ports,
so each node gets a small pool of reused connections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import h11
import trio

from chattrio.bot.config import Node


class HttpError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)


class HttpPool:
    def __init__(self, node: Node, size: int = 16, timeout: float = 10.0) -> None:
        self.node = node
        self.timeout = timeout
        self._slots = trio.Semaphore(size)
        self._idle: list[_Conn] = []

    async def request(self, method: str, path: str, body: object | None = None, token: str | None = None) -> Response:
        payload = json.dumps(body).encode() if body is not None else b""
        headers = [("Host", f"{self.node.host}:{self.node.port}"), ("Content-Length", str(len(payload)))]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        request = h11.Request(method=method, target=path, headers=headers)
        async with self._slots:
            with trio.fail_after(self.timeout):
                if self._idle:
                    conn = self._idle.pop()
                    try:
                        return await self._exchange(conn, request, payload)
                    except HttpError:
                        pass  # the server closed the idle connection: try once on a new one
                return await self._exchange(await self._open(), request, payload)

    async def _open(self) -> _Conn:
        return _Conn(await trio.open_tcp_stream(self.node.host, self.node.port))

    async def _exchange(self, conn: _Conn, request: h11.Request, payload: bytes) -> Response:
        try:
            data = conn.h11.send(request) + conn.h11.send(h11.Data(data=payload)) + conn.h11.send(h11.EndOfMessage())
            await conn.stream.send_all(data)
            status, chunks = 0, []
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    conn.h11.receive_data(await conn.stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise HttpError("connection closed before the end of the response")
        except (h11.ProtocolError, trio.BrokenResourceError, OSError, HttpError) as exc:
            await _close(conn)
            raise HttpError(f"{request.method.decode()} {request.target.decode()}: {exc!r}") from None
        except BaseException:
            await _close(conn)
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            await _close(conn)
        return Response(status, b"".join(chunks))

    async def aclose(self) -> None:
        while self._idle:
            await _close(self._idle.pop())


async def _close(conn: _Conn) -> None:
    with trio.CancelScope(shield=True):
        await conn.stream.aclose()


SETUP_ATTEMPTS = 4


async def setup_request(
    pool: HttpPool,
    method: str,
    path: str,
    body: object | None = None,
    token: str | None = None,
    retry_statuses: tuple[int, ...] = (503,),
) -> Response:
    """Setting up is not what is measured: a node still busy with the previous run (a dropped
    connection, or an answer in `retry_statuses`) gets a few more tries before the run is
    abandoned; the last answer is returned."""
    for attempt in range(SETUP_ATTEMPTS):
        try:
            response = await pool.request(method, path, body, token=token)
            if response.status not in retry_statuses:
                return response
        except (HttpError, OSError, trio.TooSlowError):
            if attempt == SETUP_ATTEMPTS - 1:
                raise
        await trio.sleep(1.0 + attempt)
    return response
