"""The REST API, the operational endpoints and the web client's static files."""

from __future__ import annotations

import logging
import mimetypes
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from chattrio.config import Settings
from chattrio.http import BadRequest, Request, Response, error_response, json_response
from chattrio.metrics import Registry
from chattrio.rooms import RoomDirectory
from chattrio.storage.postgres import Database, DatabaseUnavailable
from chattrio.storage.redis import CacheUnavailable, RedisStore
from chattrio.tokens import InvalidToken, issue_token, verify_token
from chattrio.validation import InvalidInput, normalize_room_name, normalize_user_id

log = logging.getLogger(__name__)

TOKEN_COOKIE = "chattrio_token"
HISTORY_DEFAULT = 50
HISTORY_MAX = 100
READY_TIMEOUT = 2.0
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
# Sec-Fetch-Site values of a request a page of this origin made, or the user made directly.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})

Handler = Callable[..., Awaitable[Response]]
Routes = list[tuple[str, re.Pattern, Handler]]


class CreateRoom(msgspec.Struct, frozen=True):
    name: object = None  # checked by normalize_room_name, whose reason the client sees


def token_of(request: Request) -> str | None:
    return request.query.get("token") or request.bearer_token() or request.cookie(TOKEN_COOKIE)


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
        self._requests = metrics.counter("chattrio_http_requests_total", "HTTP requests by status", ["status"])
        self._routes: list[tuple[str, re.Pattern, Handler]] = [
            ("GET", re.compile(r"/healthz"), self._healthz),
            ("GET", re.compile(r"/readyz|/metrics"), self._internal_only),
            ("GET", re.compile(r"/api/openapi\.yaml"), self._openapi),
            ("POST", re.compile(r"/api/user/enter/(?P<user_id>[^/]*)"), self._enter),
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
            return Response(405, b'{"success":false,"message":"method not allowed","data":null}',
                            headers=[("Allow", ", ".join(allowed))])
        if serve_static and method_wanted == "GET" and not request.path.startswith("/api/"):
            return self._static(request.path)
        return error_response(404, f"no such path {request.path[:100]}")

    def _user_of(self, request: Request) -> str:
        token = token_of(request)
        if token is None:
            raise BadRequest(401, "log in first: no token")
        from_cookie = not request.query.get("token") and request.bearer_token() is None
        if from_cookie and not self._from_own_page(request):
            # A browser sends the cookie with requests other sites' pages make (same-site ones too).
            raise BadRequest(403, "cookie-authenticated writes must come from this origin")
        try:
            return verify_token(token, self._settings.secret)
        except InvalidToken as exc:
            raise BadRequest(401, str(exc)) from None

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

    async def _enter(self, request: Request, user_id: str) -> Response:
        if not self._from_own_page(request):
            # Another site's form would otherwise sign the browser in as a user of its choosing.
            raise BadRequest(403, "sign-in must come from this origin")
        try:
            user_id = normalize_user_id(urllib.parse.unquote(user_id, errors="strict"))
        except UnicodeDecodeError:
            raise InvalidInput("user id is not valid UTF-8") from None
        created = await self._db.enter_user(user_id)
        token, expires_at = issue_token(user_id, self._settings.secret, self._settings.token_ttl_seconds)
        cookie = (
            f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={self._settings.token_ttl_seconds}"
        )
        data = {"userId": user_id, "token": token, "expiresAt": expires_at, "created": created}
        message = "user created" if created else "welcome back"
        return json_response(201 if created else 200, message, data, [("Set-Cookie", cookie)])

    async def _list_rooms(self, request: Request) -> Response:
        return json_response(200, "rooms", await self._rooms.list())

    async def _create_room(self, request: Request) -> Response:
        user_id = self._user_of(request)
        request.require_json()
        body = request.decode(CreateRoom, 'body must be a JSON object like {"name": "..."}')
        room = await self._db.create_room(normalize_room_name(body.name), user_id)
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
        return json_response(200, "room", room)

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


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
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
