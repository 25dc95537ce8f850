"""Signed session tokens: any node verifies any node's token with the shared secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


class InvalidToken(Exception):
    """The token is malformed, forged or expired; the message says which."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(user_id: str, secret: str, ttl_seconds: int, now: float | None = None) -> tuple[str, int]:
    expires_at = int((time.time() if now is None else now) + ttl_seconds)
    payload = _b64encode(json.dumps({"sub": user_id, "exp": expires_at}, ensure_ascii=False).encode())
    signature = _b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}", expires_at


def verify_token(token: str, secret: str, now: float | None = None) -> str:
    """Return the token's user id, or raise InvalidToken."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise InvalidToken("malformed token")
    expected = _b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        raise InvalidToken("bad token signature")
    try:
        claims = json.loads(_b64decode(payload))
        user_id, expires_at = claims["sub"], int(claims["exp"])
    except (ValueError, KeyError, TypeError):
        raise InvalidToken("malformed token") from None
    if expires_at <= (time.time() if now is None else now):
        raise InvalidToken("token expired")
    if not isinstance(user_id, str):
        raise InvalidToken("malformed token")
    return user_id
