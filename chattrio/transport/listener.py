"""The node's one port: HTTP requests, WebSocket sessions, and the staged shutdown.

Each connection is handled in its own task; one connection's error closes that connection
only (trio.serve_listeners would otherwise take the listener down with it).
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable

import trio

from chattrio.api import TOKEN_IN_URL, Api, origin_allowed, token_of
from chattrio.chat import ChatService
from chattrio.config import Settings
from chattrio.frames import Auth, FrameError, SessionInfo, parse_client_frame
from chattrio.metrics import Registry
from chattrio.tokens import Identity
from chattrio.transport.expiry import SessionDeadlines
from chattrio.transport.http11 import (
    READ_SIZE,
    BadRequest,
    HttpConnection,
    Request,
    Response,
    closing_error_response,
    send_response,
)
from chattrio.transport.liveness import Liveness
from chattrio.transport.sessions import Session, SessionRegistry
from chattrio.transport.websocket import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    CLOSE_TRY_AGAIN_LATER,
    MAX_FRAGMENTS,
    FrameReader,
    IncomingText,
    binary_frame,
    handshake_response,
    text_frame,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # an idle keep-alive connection, or a slow request, is closed after this
HANDSHAKE_TIMEOUT = 10.0
# A WebSocket opened without a token must send its AUTH frame first, within this.
AUTH_TIMEOUT = 10.0
NO_AUTH_REASON = f"no AUTH frame within {AUTH_TIMEOUT:g} s"
# A refused connection (the plain-HTTP cap, a bad request head) gets this long to take its answer.
REFUSAL_TIMEOUT = 1.0
# The test-only echo route (CHATTRIO_TEST_ECHO, tests/transport/test_autobahn.py): the Autobahn TestSuite sends
# messages of up to 16 MiB, and 4 MiB ones in 64-byte fragments (65,537 frames: the last is an empty
# one); the route's caps let them through.
ECHO_PATH = "/ws-echo"
ECHO_MAX_MESSAGE_BYTES = 16 << 20
ECHO_MAX_FRAGMENTS = 1 << 17
ECHO_SEND_BUFFER_BYTES = 2 * ECHO_MAX_MESSAGE_BYTES
# Out of descriptors or memory: accept() is retried after a pause (as trio.serve_listeners does).
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_RETRY_SECONDS = 0.1
CONNECTION_TASK = "chattrio.transport.listener.connection"
MessageHandler = Callable[[Session, IncomingText], Awaitable[None]]
_EXPECTED_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


class EchoRoute:
    """A handshake for the test echo route, which has no identity."""


class HttpServer:
    def __init__(
        self, settings: Settings, api: Api, chat: ChatService, sessions: SessionRegistry, metrics: Registry
    ) -> None:
        self._settings = settings
        self._api = api
        self._chat = chat
        self._sessions = sessions
        self._awaiting_auth: set[Session] = set()
        # Each session is closed when its token expires (from AUTH for a session opened without one),
        # and one opened without a token when no AUTH came within AUTH_TIMEOUT.
        self._deadlines = SessionDeadlines()
        self._open_connections = 0
        self._http_connections = 0  # connections not (yet) upgraded to a WebSocket
        # The nursery of every connection's task, and of the sessions' writers (set by serve()).
        self._connections: trio.Nursery
        self._handshaking: dict[str, int] = {}  # user -> WebSocket handshakes being answered
        self._drain_requested = trio.Event()
        self.drained = trio.Event()
        metrics.gauge("chattrio_connections", "Open TCP connections", lambda: self._open_connections)
        metrics.gauge("chattrio_websocket_sessions", "Open WebSocket sessions", lambda: len(sessions.sessions))
        metrics.gauge("chattrio_room_sessions", "Local sessions per room", sessions.sessions_per_room, labels=["room"])
        # One bound method for every session, not one each.
        self._count_slow_close = metrics.counter("chattrio_slow_client_closes_total", "Sessions closed as too slow").inc
        self._frames_in = metrics.counter("chattrio_frames_received_total", "WebSocket frames from clients")
        self._write_timeouts = metrics.counter(
            "chattrio_http_write_timeouts_total", "HTTP responses the client did not read within the write deadline"
        )
        self._http_refusals = metrics.counter(
            "chattrio_http_connections_refused_total", "Connections refused at the plain-HTTP connection cap"
        )
        self._user_cap_refusals = metrics.counter(
            "chattrio_user_connection_cap_refusals_total",
            "WebSocket handshakes refused: the user's connections are at the cap",
        )
        timeouts = metrics.counter("chattrio_idle_timeout_closes_total", "Sessions closed for not answering pings")
        self._liveness = Liveness(settings.ping_interval_seconds, settings.idle_timeout_seconds, timeouts.inc)
        if settings.test_echo:
            log.warning("CHATTRIO_TEST_ECHO is on: %s echoes every message, without auth; tests only", ECHO_PATH)

    def request_drain(self) -> None:
        self._drain_requested.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until a drain is requested; then stop accepting, close sessions, wait a grace."""
        listeners = await trio.open_tcp_listeners(self._settings.port, host=self._settings.host)
        async with trio.open_nursery() as connections:
            self._connections = connections
            async with trio.open_nursery() as acceptor:
                for listener in listeners:
                    acceptor.start_soon(self._accept, listener, connections)
                acceptor.start_soon(self._liveness.run)
                acceptor.start_soon(self._deadlines.run)
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

    async def _accept(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        """trio.serve_listeners' loop, less a frame and a name string per connection task (its
        wrapper around the handler): ~0.4 KiB of each idle session (docs/decisions/session-memory.md)."""
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("accept: %s; retrying in %g s", os.strerror(exc.errno), ACCEPT_RETRY_SECONDS)
                await trio.sleep(ACCEPT_RETRY_SECONDS)
            else:
                connections.start_soon(self._handle_connection, stream, name=CONNECTION_TASK)

    async def serve_internal(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The operational endpoints on the internal port, which the load balancer does not expose."""
        settings = self._settings
        listeners = await trio.open_tcp_listeners(settings.internal_port_number, host=settings.internal_host)
        task_status.started()
        await trio.serve_listeners(self._handle_internal_connection, listeners)

    async def _handle_internal_connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_http(stream, self._api.handle_internal, upgrades=False)
        except* _EXPECTED_ERRORS as ended:
            log.debug("internal connection ended: %r", ended.exceptions[0])
        except* Exception:
            log.exception("internal connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        """A connection's task: its HTTP requests, then, after a WebSocket handshake, the session's
        frames until the close. The read loop is here rather than in helpers: an idle session is
        parked in this frame, and each frame more would be ~0.2 KiB more of what every idle
        session costs (docs/decisions/session-memory.md)."""
        self._open_connections += 1
        session: Session | None = None
        try:
            upgraded = await self._serve_requests(stream)
            if upgraded is None:
                return
            identity, data, batches = upgraded
            session, reader, on_message = self._open_websocket(stream, identity, batches)
            del upgraded, identity  # not kept alive for the session's life
            while True:
                if not data:
                    data = await session.receive()
                    if not data:
                        break  # the end of the stream, with no close frame
                session.last_received = trio.current_time()
                await self._handle_data(session, data, reader, on_message)
                if reader.peer_close_code is not None:
                    break
                data = b""
            session.close(reader.peer_close_code or CLOSE_NORMAL, "")  # no-op after our own close
            await session.finish()
        except* _EXPECTED_ERRORS as ended:
            log.debug("connection ended: %r", ended.exceptions[0])
        except* Exception:
            log.exception("connection failed")
        finally:
            if session is not None:
                self._end_websocket(session)
            self._open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_requests(
        self, stream: trio.SocketStream
    ) -> tuple[Identity | EchoRoute | None, bytes, bool] | None:
        """The connection's HTTP requests, under the cap on plain-HTTP connections: see _serve_http."""
        if self._http_connections >= self._settings.max_http_connections:
            await self._refuse_busy(stream)
            return None
        self._http_connections += 1
        try:
            return await self._serve_http(stream, self._api.handle)
        finally:
            self._http_connections -= 1

    async def _refuse_busy(self, stream: trio.SocketStream) -> None:
        """503 without reading the request; then a moment to drain what the client sent, so the
        close is not a reset that could destroy the answer before it is read."""
        self._http_refusals.inc()
        await _refuse(stream, 503, "node busy, retry")

    async def _serve_http(
        self, stream: trio.SocketStream, handle: Callable[[Request], Awaitable[Response]], upgrades: bool = True
    ) -> tuple[Identity | EchoRoute | None, bytes, bool] | None:
        """Serve HTTP requests until the connection ends, or until a WebSocket handshake
        succeeds: then (the token's identity, None when an AUTH frame is due; bytes already read
        past the handshake; whether the client asked for batched messages). Returning, rather than
        running the session from here, lets the HTTP parser and the request go while the session
        lives. The test echo route's identity is EchoRoute."""
        http = HttpConnection()
        peer = peer_address(stream)  # one system call per connection, not per request
        while True:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    request = await http.receive_request(stream)
            except BadRequest as exc:
                await _refuse(stream, exc.status, exc.reason)
                return None
            except trio.TooSlowError:
                return None
            if request is None:
                return None
            request.peer = peer
            if upgrades and request.headers.get("upgrade", "").lower() == "websocket":
                return await self._handshake(http, stream, request)
            response = await handle(request)
            await self._answer(stream, request, response, http.keep_alive)
            if not http.keep_alive or response.closes:
                return None

    async def _answer(self, stream: trio.SocketStream, request: Request, response: Response, keep_alive: bool) -> None:
        response.head_only = request.method == "HEAD"
        try:
            await send_response(stream, response, keep_alive)
        except trio.TooSlowError:
            self._write_timeouts.inc()
            raise

    # WebSocket ---------------------------------------------------------------------------------

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """(status, reason) to refuse the handshake, or None."""
        key = request.headers.get("sec-websocket-key")
        if (
            request.method != "GET"
            or not _is_websocket_key(key)
            or request.headers.get("sec-websocket-version") != "13"
        ):
            return 400, "bad WebSocket handshake"
        if request.path != "/ws" and not self._is_echo(request):
            return 404, "WebSocket endpoint is /ws"
        if not origin_allowed(request, self._settings.allowed_origins):
            return 403, "origin not allowed"
        if "token" in request.query:
            return 400, TOKEN_IN_URL
        if request.query.get("batch", "0") not in ("0", "1"):
            return 400, "batch must be 0 or 1"
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
            identity = await self._api.identify(token)
        except BadRequest as exc:
            return exc.status, exc.reason
        return self._over_user_cap(identity.user_id) or identity

    def _over_user_cap(self, user_id: str) -> tuple[int, str] | None:
        """(429, reason) when the user's sessions on this node, and handshakes being answered,
        are at the cap."""
        cap = self._settings.max_connections_per_user
        if self._sessions.sessions_of_user(user_id) + self._handshaking.get(user_id, 0) >= cap:
            self._user_cap_refusals.inc()
            return 429, f"too many connections: at most {cap} per user on a node; close one first"
        return None

    def _is_echo(self, request: Request) -> bool:
        return self._settings.test_echo and request.path == ECHO_PATH

    async def _handshake(
        self, http: HttpConnection, stream: trio.SocketStream, request: Request
    ) -> tuple[Identity | EchoRoute | None, bytes, bool] | None:
        verdict: Identity | EchoRoute | tuple[int, str] | None
        if self._is_echo(request):
            verdict = self._refusal(request) or EchoRoute()
        else:
            verdict = self._refusal(request) or await self._handshake_user(request)
        if isinstance(verdict, tuple):
            await self._answer(stream, request, closing_error_response(*verdict), keep_alive=False)
            return None
        # Counted until the session is registered (synchronously after this returns), so that
        # handshakes of one user in flight at once cannot pass the per-user cap together.
        user_id = verdict.user_id if isinstance(verdict, Identity) else ""
        self._handshaking[user_id] = self._handshaking.get(user_id, 0) + 1
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.send_all(handshake_response(request.headers["sec-websocket-key"]))
        finally:
            self._handshaking[user_id] -= 1
            if not self._handshaking[user_id]:
                del self._handshaking[user_id]
        return verdict, http.trailing_data, request.query.get("batch") == "1"

    def _open_websocket(
        self, stream: trio.SocketStream, identity: Identity | EchoRoute | None, batches: bool
    ) -> tuple[Session, FrameReader, MessageHandler]:
        """The session of a handshake just answered, its frame parser and what handles its messages.
        Without an identity, the session must authenticate with its first frame. The test echo
        route sends every message back as it came, through the framing, buffering and close
        handshake of /ws (with the route's larger caps)."""
        if isinstance(identity, EchoRoute):
            session = Session("", ECHO_SEND_BUFFER_BYTES)
            session.start_writing(stream, self._connections)
            return (
                session,
                FrameReader(ECHO_MAX_MESSAGE_BYTES, max_fragments=ECHO_MAX_FRAGMENTS, keep_binary=True),
                _echo,
            )
        session = Session(
            identity.user_id if identity is not None else "",
            self._settings.send_buffer_bytes,
            on_slow=self._count_slow_close,
            batches=batches,
        )
        session.last_received = trio.current_time()
        self._liveness.watch(session)
        session.start_writing(stream, self._connections)
        if identity is not None:
            self._deadlines.watch(session, _deadline_of(identity))
            self._open_session(session)
        else:
            self._awaiting_auth.add(session)
            self._deadlines.watch(session, trio.current_time() + AUTH_TIMEOUT, CLOSE_POLICY_VIOLATION, NO_AUTH_REASON)
        return session, FrameReader(self._settings.max_frame_bytes), self._on_message

    def _end_websocket(self, session: Session) -> None:
        session.stop_writing()
        self._deadlines.forget(session)
        self._awaiting_auth.discard(session)
        self._liveness.forget(session)
        self._chat.disconnected(session)
        log.debug("session ended", extra={"session": session.id, "user": session.user_id, "code": session.close_code})

    def _open_session(self, session: Session) -> None:
        self._sessions.add(session)
        session.send(SessionInfo(session.id, session.user_id, self._settings.node_id))

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
        over_cap = self._over_user_cap(identity.user_id)
        if over_cap is not None:
            return session.close(CLOSE_POLICY_VIOLATION, over_cap[1])
        self._awaiting_auth.discard(session)
        session.user_id = identity.user_id
        self._deadlines.watch(session, _deadline_of(identity))
        self._open_session(session)

    async def _handle_data(
        self, session: Session, data: bytes, reader: FrameReader, on_message: MessageHandler
    ) -> None:
        """The frames of one read. Apart from the read loop, so that an idle session does not hold
        on to its last message while it waits for the next."""
        messages, reply = reader.feed(data)
        if reply:
            session.push(reply)
        for message in messages:
            if session.closing:
                break
            self._frames_in.inc()
            await on_message(session, message)

    async def _on_message(self, session: Session, message: IncomingText) -> None:
        """One client frame."""
        if session in self._awaiting_auth:
            return await self._authenticate(session, message)
        if message.binary:
            return self._chat.bad_frame(session, "BINARY_NOT_SUPPORTED", "send JSON text frames", None)
        if message.too_large:
            limit = self._settings.max_frame_bytes
            return self._chat.bad_frame(
                session, "TOO_LARGE", f"message over {limit} bytes or {MAX_FRAGMENTS} fragments", None
            )
        assert message.text is not None  # a message has its text unless binary or too large
        try:
            frame = parse_client_frame(message.text)
        except FrameError as exc:
            return self._chat.bad_frame(session, exc.code, exc.message, exc.ref)
        if isinstance(frame, Auth):
            return self._chat.error(session, "BAD_FRAME", "already authenticated", frame.ref)
        if not self._chat.admit(session, frame):
            return
        try:
            await self._chat.handle(session, frame)
        except Exception:
            log.exception("frame failed", extra={"frame": type(frame).__name__})
            self._chat.error(session, "INTERNAL", "internal error", getattr(frame, "ref", None))


async def _echo(session: Session, message: IncomingText) -> None:
    if message.too_large:
        limit = f"{ECHO_MAX_MESSAGE_BYTES} bytes or {ECHO_MAX_FRAGMENTS} fragments"
        session.close(CLOSE_MESSAGE_TOO_BIG, f"message over {limit}")
    elif message.data is not None:
        session.push(binary_frame(message.data))
    elif message.text is not None:
        session.push(text_frame(message.text.encode()))


async def _refuse(stream: trio.SocketStream, status: int, reason: str) -> None:
    """Answer with `Connection: close`, then drain what the client is still sending for a
    moment (a lingering close, RFC 9112 9.6): closing with unread data would reset the connection
    and could destroy the answer before the client reads it."""
    with trio.move_on_after(REFUSAL_TIMEOUT):
        await send_response(stream, closing_error_response(status, reason), keep_alive=False)
        await stream.send_eof()
        while await stream.receive_some(READ_SIZE):
            pass


def peer_address(stream: trio.SocketStream) -> str:
    try:
        address: str = stream.socket.getpeername()[0]
        return address
    except (OSError, IndexError, TypeError):
        return ""


def _is_websocket_key(key: str | None) -> bool:
    """RFC 6455 4.1: the key is 16 random bytes in base64."""
    if key is None or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def _deadline_of(identity: Identity) -> float:
    """The token's expiry on Trio's clock."""
    return trio.current_time() + (identity.expires_at - time.time())
