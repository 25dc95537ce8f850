"""The REST API, the operational endpoints and the web client's static files."""

from __future__ import annotations

import logging
import math
import mimetypes
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from chattrio.config import Settings
from chattrio.http import BadRequest, Request, Response, error_response, json_response
from chattrio.limits import AddressLimits, client_address, in_networks, parse_networks, retry_after_ms
from chattrio.metrics import Registry
from chattrio.rooms import RoomDirectory
from chattrio.storage.postgres import Database, DatabaseUnavailable, RoomQuotaExceeded
from chattrio.storage.redis import CacheUnavailable, RedisStore
from chattrio.tokens import InvalidToken, issue_token, verify_token
from chattrio.validation import InvalidInput, normalize_room_name, normalize_user_id

log = logging.getLogger(__name__)

TOKEN_COOKIE = "chattrio_token"
HISTORY_DEFAULT = 50
HISTORY_MAX = 100
READY_TIMEOUT = 2.0

Handler = Callable[..., Awaitable[Response]]


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
        limited = metrics.counter(
            "chattrio_rate_limited_total", "Frames and requests refused by a rate limit, by kind", ["kind"]
        )
        self._signups = AddressLimits(settings.signup_limit_per_ip, "signup", limited)
        self._room_creations = AddressLimits(settings.room_create_limit_per_ip, "room_create", limited)
        self._trusted_proxies = parse_networks(settings.trusted_proxies, "trusted_proxies")
        self._limit_exempt = parse_networks(settings.limit_exempt, "limit_exempt")
        self._routes: list[tuple[str, re.Pattern, Handler]] = [
            ("GET", re.compile(r"/healthz"), self._healthz),
            ("GET", re.compile(r"/readyz"), self._readyz),
            ("GET", re.compile(r"/metrics"), self._metrics_text),
            ("POST", re.compile(r"/api/user/enter/(?P<user_id>[^/]*)"), self._enter),
            ("GET", re.compile(r"/api/room"), self._list_rooms),
            ("POST", re.compile(r"/api/room"), self._create_room),
            ("GET", re.compile(r"/api/room/(?P<room_id>[^/]+)"), self._get_room),
            ("GET", re.compile(r"/api/room/(?P<room_id>[^/]+)/messages"), self._history),
            ("GET", re.compile(r"/api/room/(?P<room_id>[^/]+)/members"), self._members),
        ]

    async def handle(self, request: Request) -> Response:
        try:
            response = await self._dispatch(request)
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

    async def _dispatch(self, request: Request) -> Response:
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match:
                if method == request.method:
                    return await handler(request, **match.groupdict())
                allowed.append(method)
        if allowed:
            return Response(405, b'{"success":false,"message":"method not allowed","data":null}',
                            headers=[("Allow", ", ".join(allowed))])
        if request.method in ("GET", "HEAD") and not request.path.startswith("/api/"):
            return self._static(request.path)
        return error_response(404, f"no such path {request.path[:100]}")

    def _user_of(self, request: Request) -> str:
        token = token_of(request)
        if token is None:
            raise BadRequest(401, "log in first: no token")
        try:
            return verify_token(token, self._settings.secret)
        except InvalidToken as exc:
            raise BadRequest(401, str(exc)) from None

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
            429, f"too many {what} from {client}: retry after {math.ceil(retry_ms / 1000)} s",
            {"retryAfterMs": retry_ms}, [("Retry-After", str(math.ceil(retry_ms / 1000)))],
        )

    async def _enter(self, request: Request, user_id: str) -> Response:
        refusal = self._over_limit(self._signups, self._client_of(request), "sign-ups")
        if refusal is not None:
            return refusal
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
        client = self._client_of(request)
        refusal = self._over_limit(self._room_creations, client, "room creations")
        if refusal is not None:
            return refusal
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
        target = (self._web_root / urllib.parse.unquote(path).lstrip("/")).resolve()
        if not target.is_relative_to(self._web_root) or not target.is_file():
            target = self._web_root / "index.html"  # client-side routes
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        cache = "no-cache" if target.name == "index.html" else "public, max-age=31536000, immutable"
        return Response(200, target.read_bytes(), content_type, [("Cache-Control", cache)])


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


def _web_root(settings: Settings) -> Path | None:
    root = Path(settings.web_root) if settings.web_root else Path(__file__).resolve().parent.parent / "web" / "dist"
    return root.resolve() if (root / "index.html").is_file() else None
