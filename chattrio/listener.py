"""The node's one port: HTTP requests, WebSocket sessions, and the staged shutdown.

Each connection is handled in its own task; one connection's error closes that connection
only (trio.serve_listeners would otherwise take the listener down with it).
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from functools import partial

import h11
import trio

from chattrio.api import TOKEN_IN_URL, Api, token_of
from chattrio.chat import ChatService
from chattrio.config import Settings
from chattrio.frames import Auth, FrameError, SessionInfo, parse_client_frame
from chattrio.http import MAX_HEADER_BYTES, BadRequest, Request, error_response, receive_request, send_response
from chattrio.metrics import Registry
from chattrio.sessions import Session, SessionRegistry
from chattrio.tokens import Identity
from chattrio.websocket import (
    CLOSE_POLICY_VIOLATION, CLOSE_SERVICE_RESTART, CLOSE_TOKEN_EXPIRED, CLOSE_TRY_AGAIN_LATER, FrameReader,
    IncomingText, handshake_response,
)

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
REQUEST_TIMEOUT = 30.0  # an idle keep-alive connection, or a slow request, is closed after this
HANDSHAKE_TIMEOUT = 10.0
# A WebSocket opened without a token must send its AUTH frame first, within this.
AUTH_TIMEOUT = 10.0
_EXPECTED_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.ProtocolError)


class HttpServer:
    def __init__(
        self, settings: Settings, api: Api, chat: ChatService, sessions: SessionRegistry, metrics: Registry
    ) -> None:
        self._settings = settings
        self._api = api
        self._chat = chat
        self._sessions = sessions
        self._awaiting_auth: set[Session] = set()
        # Each session's reading ends when its token expires (set at AUTH for a session opened without one).
        self._token_lifetimes: dict[Session, trio.CancelScope] = {}
        self._open_connections = 0
        self._drain_requested = trio.Event()
        self.drained = trio.Event()
        metrics.gauge("chattrio_connections", "Open TCP connections", lambda: self._open_connections)
        metrics.gauge("chattrio_websocket_sessions", "Open WebSocket sessions", lambda: len(sessions.sessions))
        metrics.gauge(
            "chattrio_room_sessions", "Local sessions per room", sessions.sessions_per_room, labels=["room"]
        )
        self._slow_closes = metrics.counter("chattrio_slow_client_closes_total", "Sessions closed as too slow")
        self._frames_in = metrics.counter("chattrio_frames_received_total", "WebSocket frames from clients")

    def request_drain(self) -> None:
        self._drain_requested.set()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until a drain is requested; then stop accepting, close sessions, wait a grace."""
        listeners = await trio.open_tcp_listeners(self._settings.port, host=self._settings.host)
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(
                    partial(trio.serve_listeners, self._handle_connection, listeners, handler_nursery=connections)
                )
                task_status.started()
                await self._drain_requested.wait()
                acceptor.cancel_scope.cancel()
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            for session in list(self._sessions.sessions):
                session.close(CLOSE_SERVICE_RESTART, "service restart: reconnect")
            with trio.move_on_after(self._settings.shutdown_grace_seconds):
                while self._open_connections:
                    await trio.sleep(0.05)
            connections.cancel_scope.cancel()
        self.drained.set()
        await trio.sleep_forever()  # a drained server stays stopped; the node cancels it

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        self._open_connections += 1
        try:
            upgraded = await self._serve_http(stream)
            if upgraded is not None:
                await self._serve_session(stream, *upgraded)
        except* _EXPECTED_ERRORS as ended:
            # A session's reader and writer run in a nursery, so its errors arrive grouped.
            log.debug("connection ended: %r", ended.exceptions[0])
        except* Exception:
            log.exception("connection failed")
        finally:
            self._open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.SocketStream) -> tuple[Identity | None, bytes] | None:
        """Serve HTTP requests until the connection ends, or until a WebSocket handshake
        succeeds: then (the token's identity, None when an AUTH frame is due; bytes already read
        past the handshake). Returning, rather than running the session from here, lets the HTTP
        parser and the request go while the session lives."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        while True:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    request = await receive_request(conn, stream)
            except BadRequest as exc:
                await send_response(conn, stream, error_response(exc.status, exc.reason))
                return None
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await send_response(conn, stream, error_response(exc.error_status_hint, str(exc)))
                return None
            except trio.TooSlowError:
                return None
            if request is None:
                return None
            if request.headers.get("upgrade", "").lower() == "websocket":
                return await self._handshake(conn, stream, request)
            await send_response(conn, stream, await self._api.handle(request))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return None
            conn.start_next_cycle()

    # WebSocket ---------------------------------------------------------------------------------

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """(status, reason) to refuse the handshake, or None."""
        key = request.headers.get("sec-websocket-key")
        if request.method != "GET" or not key or request.headers.get("sec-websocket-version") != "13":
            return 400, "bad WebSocket handshake"
        if request.path != "/ws":
            return 404, "WebSocket endpoint is /ws"
        if not self._origin_allowed(request):
            return 403, "origin not allowed"
        if "token" in request.query:
            return 400, TOKEN_IN_URL
        if len(self._sessions.sessions) + len(self._awaiting_auth) >= self._settings.max_connections:
            return 503, "node full, try another"
        return None

    async def _handshake_user(self, request: Request) -> Identity | tuple[int, str] | None:
        """The identity of the handshake's Authorization header or cookie, (status, reason) for a bad
        token, or None without either: then the first frame must be AUTH."""
        token = token_of(request)
        if token is None:
            return None
        try:
            return await self._api.identify(token)
        except BadRequest as exc:
            return exc.status, exc.reason

    def _origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser
        allowed = self._settings.allowed_origins
        if allowed:
            return "*" in allowed or origin in allowed
        return urllib.parse.urlsplit(origin).netloc == request.headers.get("host")

    async def _handshake(self, conn: h11.Connection, stream: trio.SocketStream, request: Request) -> tuple[Identity | None, bytes] | None:
        verdict = self._refusal(request) or await self._handshake_user(request)
        if isinstance(verdict, tuple):
            await send_response(conn, stream, error_response(*verdict))
            return None
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.send_all(handshake_response(request.headers["sec-websocket-key"]))
        return verdict, conn.trailing_data[0]

    async def _serve_session(self, stream: trio.SocketStream, identity: Identity | None, leftover: bytes) -> None:
        session = Session(identity.user_id if identity is not None else "", self._settings.send_buffer_bytes,
                          on_slow=self._slow_closes.inc)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_until_closed, session, stream, nursery.cancel_scope)
                if identity is not None:
                    self._open_session(session)
                else:
                    self._awaiting_auth.add(session)
                    nursery.start_soon(self._close_unless_authenticated, session)
                # A deadline on the reading costs no task; the writer then sends the close frame.
                with trio.CancelScope(deadline=_deadline_of(identity)) as token_lifetime:
                    self._token_lifetimes[session] = token_lifetime
                    await self._read_frames(session, stream, leftover)
                session.close(CLOSE_TOKEN_EXPIRED, "token expired")
                await trio.sleep_forever()  # the writer sends the close frame, then cancels us
        finally:
            self._token_lifetimes.pop(session, None)
            self._awaiting_auth.discard(session)
            self._chat.disconnected(session)
            log.debug("session ended", extra={"session": session.id, "user": session.user_id, "code": session.close_code})

    def _open_session(self, session: Session) -> None:
        self._sessions.add(session)
        session.send(SessionInfo(session.id, session.user_id, self._settings.node_id))

    async def _close_unless_authenticated(self, session: Session) -> None:
        await trio.sleep(AUTH_TIMEOUT)
        if session in self._awaiting_auth:
            session.close(CLOSE_POLICY_VIOLATION, f"no AUTH frame within {AUTH_TIMEOUT:g} s")

    async def _authenticate(self, session: Session, message: IncomingText) -> None:
        """A session opened without a token: its first frame must be AUTH with a valid one."""
        if session.closing:
            return  # frames that came with a refused first one
        frame = None
        if message.text is not None:
            try:
                frame = parse_client_frame(message.text)
            except FrameError:
                pass
        if not isinstance(frame, Auth):
            return session.close(CLOSE_POLICY_VIOLATION, 'authenticate first: {"type": "AUTH", "token": ...}')
        try:
            identity = await self._api.identify(frame.token)
        except BadRequest as exc:
            code = CLOSE_POLICY_VIOLATION if exc.status < 500 else CLOSE_TRY_AGAIN_LATER
            return session.close(code, exc.reason)
        if session.closing:
            return  # the deadline passed while the token was checked
        self._awaiting_auth.discard(session)
        session.user_id = identity.user_id
        self._token_lifetimes[session].deadline = _deadline_of(identity)
        self._open_session(session)

    async def _write_until_closed(self, session: Session, stream, scope: trio.CancelScope) -> None:
        await session.run_writer(stream)
        scope.cancel()

    async def _read_frames(self, session: Session, stream: trio.SocketStream, data: bytes) -> None:
        reader = FrameReader(self._settings.max_frame_bytes)
        while True:
            if data:
                messages, reply = reader.feed(data)
                if reply:
                    session.push(reply)
                for message in messages:
                    self._frames_in.inc()
                    await self._on_message(session, message)
                if reader.peer_close_code is not None:
                    session.close(reader.peer_close_code, "")
                    await trio.sleep_forever()  # the writer sends the close reply, then cancels us
            data = await stream.receive_some(READ_SIZE)
            if not data:
                session.close(1000, "")
                await trio.sleep_forever()

    async def _on_message(self, session: Session, message: IncomingText) -> None:
        if session in self._awaiting_auth:
            return await self._authenticate(session, message)
        if message.binary:
            return self._chat.error(session, "BINARY_NOT_SUPPORTED", "send JSON text frames", None)
        if message.too_large:
            limit = self._settings.max_frame_bytes
            return self._chat.error(session, "TOO_LARGE", f"frame over {limit} bytes", None)
        try:
            frame = parse_client_frame(message.text)
        except FrameError as exc:
            return self._chat.error(session, exc.code, exc.message, exc.ref)
        if isinstance(frame, Auth):
            return self._chat.error(session, "BAD_FRAME", "already authenticated", frame.ref)
        try:
            await self._chat.handle(session, frame)
        except Exception:
            log.exception("frame failed", extra={"frame": type(frame).__name__})
            self._chat.error(session, "INTERNAL", "internal error", getattr(frame, "ref", None))


def _deadline_of(identity: Identity | None) -> float:
    """The token's expiry on Trio's clock; none while AUTH is awaited (its own timeout applies)."""
    if identity is None:
        return math.inf
    return trio.current_time() + (identity.expires_at - time.time())
