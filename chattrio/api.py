"""The REST API, the operational endpoints and the web client's static files."""

from __future__ import annotations

import logging
import math
import mimetypes
import re
import time
import unicodedata
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import trio

from chattrio.config import Settings
from chattrio.limits import AddressLimits, client_address, in_networks, parse_networks, retry_after_ms
from chattrio.metrics import Registry
from chattrio.models import Room
from chattrio.rooms import RoomDirectory
from chattrio.signals import UNREAD_CAP
from chattrio.storage.postgres import Database, DatabaseUnavailable, DataRefused, LookalikeTaken, RoomQuotaExceeded
from chattrio.storage.redis import CacheUnavailable, RedisStore
from chattrio.tokens import Identity, InvalidToken, issue_token, verifier_from_settings
from chattrio.transport.http11 import BadRequest, Request, Response, error_response, json_response
from chattrio.validation import InvalidInput, normalize_room_name, normalize_user_id, skeleton

log = logging.getLogger(__name__)

TOKEN_COOKIE = "chattrio_token"
HISTORY_DEFAULT = 50
HISTORY_MAX = 100
ROOMS_PAGE_DEFAULT = 50
ROOMS_PAGE_MAX = 200
ROOM_SEARCH_MAX = 100  # a room name's own limit
READY_TIMEOUT = 2.0
# jwt mode: users this node knows to exist, so only a user's first token costs a PostgreSQL write.
KNOWN_USERS_MAX = 100_000
TOKEN_IN_URL = (
    "a token in the URL is refused (URLs end up in logs): send it in an Authorization: Bearer "
    "header, the chattrio_token cookie, or an AUTH frame"
)
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
# Sec-Fetch-Site values of a request a page of this origin made, or the user made directly.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})

Handler = Callable[..., Awaitable[Response]]
_Default = TypeVar("_Default", int, None)  # an absent int parameter: its default, or None
Routes = list[tuple[str, re.Pattern[str], Handler]]


class CreateRoom(msgspec.Struct, frozen=True):
    name: object = None  # checked by normalize_room_name, whose reason the client sees


def token_of(request: Request) -> str | None:
    """The request's token: an explicit Authorization header wins over the ambient cookie."""
    return request.bearer_token() or request.cookie(TOKEN_COOKIE)


def token_cookie(token: str, max_age: int) -> tuple[str, str]:
    return "Set-Cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max(max_age, 0)}"


class Api:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        cache: RedisStore,
        rooms: RoomDirectory,
        metrics: Registry,
        readiness: Callable[[], list[str]],
    ) -> None:
        self._settings = settings
        self._db = db
        self._cache = cache
        self._rooms = rooms
        self._metrics = metrics
        self._not_ready = readiness
        self._web_root = _web_root(settings)
        self._verifier = verifier_from_settings(settings)
        self._known_users: OrderedDict[str, None] = OrderedDict()
        # A rise is someone guessing or replaying tokens, or a clock or key out of step.
        self._refused_tokens = metrics.counter(
            "chattrio_tokens_refused_total", "Tokens refused (REST, WebSocket handshake, AUTH frame)"
        )
        self._requests = metrics.counter("chattrio_http_requests_total", "HTTP requests by status", ["status"])
        limited = metrics.counter(
            "chattrio_rate_limited_total", "Frames and requests refused by a rate limit, by kind", ["kind"]
        )
        self._signups = AddressLimits(settings.signup_limit_per_ip, "signup", limited)
        self._room_creations = AddressLimits(settings.room_create_limit_per_ip, "room_create", limited)
        self._trusted_proxies = parse_networks(settings.trusted_proxies, "trusted_proxies")
        self._limit_exempt = parse_networks(settings.limit_exempt, "limit_exempt")
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/healthz"), self._healthz),
            ("GET", re.compile(r"/readyz|/metrics"), self._internal_only),
            ("GET", re.compile(r"/api/openapi\.yaml"), self._openapi),
            ("POST", re.compile(r"/api/user/enter/(?P<user_id>[^/]*)"), self._enter),
            ("GET", re.compile(r"/api/auth"), self._auth_mode),
            ("GET", re.compile(r"/api/me"), self._me),
            ("POST", re.compile(r"/api/auth/session"), self._start_web_session),
            ("DELETE", re.compile(r"/api/auth/session"), self._end_web_session),
            ("GET", re.compile(r"/api/room"), self._list_rooms),
            ("POST", re.compile(r"/api/room"), self._create_room),
            ("GET", re.compile(r"/api/room/(?P<room_id>[^/]+)"), self._get_room),
            ("GET", re.compile(r"/api/room/(?P<room_id>[^/]+)/messages"), self._history),
            ("GET", re.compile(r"/api/room/(?P<room_id>[^/]+)/members"), self._members),
        ]
        self._internal_routes: Routes = [
            ("GET", re.compile(r"/healthz"), self._healthz),
            ("GET", re.compile(r"/readyz"), self._readyz),
            ("GET", re.compile(r"/metrics"), self._metrics_text),
        ]

    async def handle(self, request: Request) -> Response:
        """A request on the public port."""
        return await self._answer(request, self._routes, serve_static=True)

    async def handle_internal(self, request: Request) -> Response:
        """A request on the internal port: the operational endpoints only."""
        return await self._answer(request, self._internal_routes, serve_static=False)

    async def _answer(self, request: Request, routes: Routes, serve_static: bool) -> Response:
        try:
            response = await self._dispatch(request, routes, serve_static)
        except BadRequest as exc:
            response = error_response(exc.status, exc.reason)
        except InvalidInput as exc:
            response = error_response(400, str(exc))
        except DataRefused as exc:  # the edge's rules should have caught it: still the client's input
            log.warning("PostgreSQL refused a request's values: %s", exc)
            response = error_response(400, "a value cannot be stored (it contains a character PostgreSQL refuses)")
        except (DatabaseUnavailable, CacheUnavailable) as exc:
            log.warning("dependency unavailable: %s", exc)
            response = error_response(503, "service temporarily unavailable, retry")
        except Exception:
            log.exception("request failed", extra={"path": request.path})
            response = error_response(500, "internal error")
        self._requests.inc(1, str(response.status))
        return response

    async def _dispatch(self, request: Request, routes: Routes, serve_static: bool) -> Response:
        allowed = []
        # HEAD is a GET whose body is not sent (the listener leaves it out).
        method_wanted = "GET" if request.method == "HEAD" else request.method
        for method, pattern, handler in routes:
            match = pattern.fullmatch(request.path)
            if match:
                if method == method_wanted:
                    return await handler(request, **match.groupdict())
                allowed.append(method)
        if allowed:
            return Response(
                405,
                b'{"success":false,"message":"method not allowed","data":null}',
                headers=[("Allow", ", ".join(allowed))],
            )
        if serve_static and method_wanted == "GET" and not request.path.startswith("/api/"):
            return self._static(request.path)
        return error_response(404, f"no such path {request.path[:100]}")

    async def _user_of(self, request: Request) -> str:
        return (await self._identity_of_request(request)).user_id

    async def _identity_of_request(self, request: Request) -> Identity:
        if "token" in request.query:
            raise BadRequest(400, TOKEN_IN_URL)
        token = token_of(request)
        if token is None:
            raise BadRequest(401, "log in first: no token")
        if request.bearer_token() is None and not self._from_own_page(request):
            # A browser sends the cookie with requests other sites' pages make (same-site ones too).
            raise BadRequest(403, "cookie-authenticated writes must come from this origin")
        return await self._identity_of(token)

    async def authenticate(self, token: str) -> str:
        """The token's user id, or BadRequest: 401 for a bad token, 503 when its first use in jwt
        mode cannot create the user."""
        return (await self._identity_of(token)).user_id

    async def identify(self, token: str) -> Identity:
        """Like authenticate, with the token's expiry (a WebSocket session ends there)."""
        return await self._identity_of(token)

    async def _identity_of(self, token: str) -> Identity:
        try:
            identity = self._verifier.verify(token)
        except InvalidToken as exc:
            self._refused_tokens.inc()
            raise BadRequest(401, str(exc)) from None
        if self._settings.auth_mode == "jwt":
            await self._ensure_user(_subject_user_id(identity.user_id))
        return identity

    async def _ensure_user(self, user_id: str) -> None:
        """The first valid token of a user creates it: PostgreSQL first, with its outbox row."""
        if user_id in self._known_users:
            self._known_users.move_to_end(user_id)
            return
        try:
            await self._db.enter_user(user_id, skeleton(user_id))
        except DatabaseUnavailable as exc:
            log.warning("cannot create user %s: %s", user_id, exc)
            raise BadRequest(503, "service temporarily unavailable, retry") from None
        except LookalikeTaken as exc:
            raise BadRequest(409, f"token subject {user_id!r} {exc}") from None
        self._known_users[user_id] = None
        if len(self._known_users) > KNOWN_USERS_MAX:
            self._known_users.popitem(last=False)

    def _from_own_page(self, request: Request) -> bool:
        """False when the browser says another site or origin made the request."""
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in _OWN_FETCH_SITES:
            return False
        return origin_allowed(request, self._settings.allowed_origins)

    # Operations -------------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return json_response(200, "alive", {"nodeId": self._settings.node_id})

    async def _readyz(self, request: Request) -> Response:
        problems = [f"{name} not running" for name in self._not_ready()]
        for name, check in (("postgresql", self._db.ping), ("redis", self._cache.ping)):
            try:
                with trio.fail_after(READY_TIMEOUT):
                    await check()
            except (DatabaseUnavailable, CacheUnavailable, trio.TooSlowError):
                problems.append(f"{name} unreachable")
        if problems:
            return json_response(503, "; ".join(problems), {"nodeId": self._settings.node_id})
        return json_response(200, "ready", {"nodeId": self._settings.node_id})

    async def _metrics_text(self, request: Request) -> Response:
        return Response(200, self._metrics.render().encode(), "text/plain; version=0.0.4")

    async def _internal_only(self, request: Request) -> Response:
        return error_response(404, f"{request.path} is served on the internal port only")

    async def _openapi(self, request: Request) -> Response:
        if not OPENAPI_PATH.is_file():  # an installation without the repository's docs/
            return error_response(404, "the OpenAPI document is not installed with this node")
        return Response(200, OPENAPI_PATH.read_bytes(), "application/yaml", [("Cache-Control", "no-cache")])

    # Users and rooms --------------------------------------------------------------------------

    def _client_of(self, request: Request) -> str | None:
        """The client's address, or None when it is exempt from the per-IP limits and quotas."""
        address = client_address(request.peer, request.headers.get("x-forwarded-for"), self._trusted_proxies)
        return None if in_networks(address, self._limit_exempt) else address

    def _over_limit(self, limits: AddressLimits, client: str | None, what: str) -> Response | None:
        """None when the client may go on, else 429 with Retry-After."""
        if client is None:
            return None
        wait = limits.admit(client)
        if not wait:
            return None
        retry_ms = retry_after_ms(wait)
        return json_response(
            429,
            f"too many {what} from {client}: retry after {math.ceil(retry_ms / 1000)} s",
            {"retryAfterMs": retry_ms},
            [("Retry-After", str(math.ceil(retry_ms / 1000)))],
        )

    async def _enter(self, request: Request, user_id: str) -> Response:
        if self._settings.auth_mode != "open":
            raise BadRequest(
                403,
                "sign-up by id is off: this deployment takes tokens from its identity service "
                f"(auth mode {self._settings.auth_mode}, see GET /api/auth)",
            )
        if not self._from_own_page(request):
            # Another site's form would otherwise sign the browser in as a user of its choosing.
            raise BadRequest(403, "sign-in must come from this origin")
        refusal = self._over_limit(self._signups, self._client_of(request), "sign-ups")
        if refusal is not None:
            return refusal
        try:
            user_id = normalize_user_id(urllib.parse.unquote(user_id, errors="strict"))
        except UnicodeDecodeError:
            raise InvalidInput("user id is not valid UTF-8") from None
        try:
            created = await self._db.enter_user(user_id, skeleton(user_id))
        except LookalikeTaken as exc:
            raise BadRequest(409, f"user id {user_id!r} {exc}: choose another") from None
        token, expires_at = issue_token(user_id, self._settings.secret, self._settings.token_ttl_seconds)
        self._verifier.remember(token, Identity(user_id, expires_at))
        cookie = token_cookie(token, self._settings.token_ttl_seconds)
        data = {"userId": user_id, "token": token, "expiresAt": expires_at, "created": created}
        message = "user created" if created else "welcome back"
        return json_response(201 if created else 200, message, data, [cookie])

    async def _auth_mode(self, request: Request) -> Response:
        return json_response(200, "auth mode", {"mode": self._settings.auth_mode})

    async def _start_web_session(self, request: Request) -> Response:
        """Trade the Authorization header's token for the HttpOnly cookie the web client's
        WebSocket then carries (jwt mode's counterpart of the open mode's sign-up)."""
        token = request.bearer_token()
        if token is None:
            raise BadRequest(401, "send the token in an Authorization: Bearer header")
        identity = await self._identity_of(token)
        cookie = token_cookie(token, identity.expires_at - int(time.time()))
        data = {"userId": identity.user_id, "expiresAt": identity.expires_at}
        return json_response(200, "cookie set", data, [cookie])

    async def _me(self, request: Request) -> Response:
        """The cheap authenticated call a client makes to tell a refused token (401) from a node
        it cannot reach: a browser sees a refused WebSocket handshake only as close code 1006."""
        identity = await self._identity_of_request(request)
        return json_response(200, "you", {"userId": identity.user_id, "expiresAt": identity.expires_at})

    async def _end_web_session(self, request: Request) -> Response:
        return json_response(200, "cookie cleared", None, [token_cookie("", 0)])

    async def _list_rooms(self, request: Request) -> Response:
        """A page of rooms, newest first; `cursor` is the previous page's `nextCursor`."""
        limit = _int_param(request, "limit", ROOMS_PAGE_DEFAULT, 1, ROOMS_PAGE_MAX)
        cursor = request.query.get("cursor") or None
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise BadRequest(400, "cursor must be the nextCursor of a previous page")
        search = _room_search(request.query.get("q", ""))
        rooms = await self._rooms.list(limit + 1, int(cursor) if cursor else None, search)
        page, more = rooms[:limit], len(rooms) > limit
        page = await self._with_read_positions(request, page)
        data = {"rooms": page, "nextCursor": str(page[-1].id) if more else None, "hasMore": more}
        return json_response(200, "rooms", data)

    async def _with_read_positions(self, request: Request, rooms: list[Room]) -> list[Room]:
        """For a signed-in user (a token in the header or cookie; reading needs no origin check),
        each room with `unread` and `lastReadSeq`; left out when PostgreSQL cannot tell."""
        if "token" in request.query:
            raise BadRequest(400, TOKEN_IN_URL)
        token = token_of(request)
        if token is None or not rooms:
            return rooms
        user_id = (await self._identity_of(token)).user_id
        try:
            positions = await self._db.read_positions(user_id, [room.id for room in rooms], UNREAD_CAP)
        except DatabaseUnavailable as exc:
            log.warning("room list without read positions: %s", exc)
            return rooms
        return [_with_position(room, positions.get(room.id)) for room in rooms]

    async def _create_room(self, request: Request) -> Response:
        user_id = await self._user_of(request)
        client = self._client_of(request)
        refusal = self._over_limit(self._room_creations, client, "room creations")
        if refusal is not None:
            return refusal
        request.require_json()
        body = request.decode(CreateRoom, 'body must be a JSON object like {"name": "..."}')
        quota = None if client is None else self._settings.room_quota_per_user
        try:
            room = await self._db.create_room(normalize_room_name(body.name), user_id, quota)
        except RoomQuotaExceeded as exc:
            return error_response(403, str(exc))
        self._rooms.learn(room)
        return json_response(201, "room created", room)

    async def _room_id(self, raw: str) -> int:
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise BadRequest(400, f"room id must be a positive integer, got {raw[:40]!r}")
        room_id = int(raw)
        if await self._rooms.find(room_id) is None:
            raise BadRequest(404, f"room {room_id} does not exist")
        return room_id

    async def _get_room(self, request: Request, room_id: str) -> Response:
        room = await self._rooms.find(await self._room_id(room_id))
        assert room is not None  # _room_id answered 404 for an unknown room
        return json_response(200, "room", await self._rooms.with_member_count(room))

    async def _history(self, request: Request, room_id: str) -> Response:
        room = await self._room_id(room_id)
        before = _int_param(request, "before", None, 0, 1 << 62)
        limit = _int_param(request, "limit", HISTORY_DEFAULT, 1, HISTORY_MAX)
        return json_response(200, "messages", await self._db.messages_before(room, before, limit))

    async def _members(self, request: Request, room_id: str) -> Response:
        room = await self._room_id(room_id)
        return json_response(200, "members", {"roomId": room, "members": await self._cache.members(room)})

    # The web client -----------------------------------------------------------------------------

    def _static(self, path: str) -> Response:
        if self._web_root is None:
            return error_response(404, "the web client is not built (run `make run`)")
        relative = urllib.parse.unquote(path).lstrip("/")
        if "\0" in relative:
            raise BadRequest(400, "NUL in the path")
        target = (self._web_root / relative).resolve()
        if not target.is_relative_to(self._web_root) or not _is_file(target):
            target = self._web_root / "index.html"  # client-side routes
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        cache = "no-cache" if target.name == "index.html" else "public, max-age=31536000, immutable"
        return Response(200, target.read_bytes(), content_type, [("Cache-Control", cache)])


def _with_position(room: Room, position: tuple[int, int] | None) -> Room:
    """A room never read has no position and nothing counted unread (only rooms a user has read
    in are followed)."""
    last_read, unread = position if position is not None else (None, 0)
    return msgspec.structs.replace(room, unread=unread, last_read_seq=last_read)


def _subject_user_id(subject: str) -> str:
    """A jwt-mode token's `sub`, which must already be a normalised user id: normalising it here
    could make two of the identity service's users one."""
    try:
        user_id = normalize_user_id(subject)
    except InvalidInput as exc:
        raise BadRequest(401, f"token subject is not a valid user id: {exc}") from None
    if user_id != subject:
        raise BadRequest(401, "token subject is not a normalised user id")
    return user_id


def origin_allowed(request: Request, allowed_origins: tuple[str, ...]) -> bool:
    """An absent Origin is a client that is not a browser; otherwise it must be allowed, by
    default: its host equals the request's Host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if allowed_origins:
        return "*" in allowed_origins or origin in allowed_origins
    try:
        return urllib.parse.urlsplit(origin).netloc == request.headers.get("host")
    except ValueError:  # e.g. "http://[" : not an origin at all
        return False


def _room_search(raw: str) -> str:
    """The name search of the room list: white space at both ends ignored; what no room name can
    hold is refused rather than matched against nothing."""
    search = raw.strip()
    if len(search) > ROOM_SEARCH_MAX:
        raise BadRequest(400, f"q must be at most {ROOM_SEARCH_MAX} characters")
    if any(ch == "\0" or unicodedata.category(ch) == "Cc" for ch in search):
        raise BadRequest(400, "q must not contain control characters")
    return search


def _int_param(request: Request, name: str, default: _Default, low: int, high: int) -> int | _Default:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(400, f"{name} must be between {low} and {high}")
    return value


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name longer than the file system allows
        return False


def _web_root(settings: Settings) -> Path | None:
    root = Path(settings.web_root) if settings.web_root else Path(__file__).resolve().parent.parent / "web" / "dist"
    return root.resolve() if (root / "index.html").is_file() else None
