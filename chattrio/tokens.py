"""Session tokens: JSON Web Tokens (PyJWT), issued and verified here and nowhere else.

Open mode: the nodes issue HS256 tokens signed with the shared secret, so any node verifies any
node's token. jwt mode: the operator's identity service issues them, HS256 with the shared secret
or RS256/ES256 with private keys whose public halves the nodes read from a JWKS file; the nodes
only verify. Each node accepts exactly one algorithm, so a token cannot choose how it is checked
(`none`, or HS256 "signed" with a public key, is refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from jwt.types import Options

from chattrio.config import Settings

if TYPE_CHECKING:
    from jwt.algorithms import AllowedPublicKeys

    # A key that verifies: the shared secret (HS256) or an identity service's public key.
    VerifyingKey = AllowedPublicKeys | str

AUTH_MODES = ("open", "jwt")
ISSUED_ALGORITHM = "HS256"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
DEFAULT_SECRET = "dev-secret-change-me"
# RFC 7518 3.2: an HS256 key at least as long as the hash, or it can be guessed offline from any token.
MIN_SECRET_BYTES = 32
REQUIRED_CLAIMS = ["exp", "sub"]
# Tokens this node verified or issued, remembered by their SHA-256: checking one again (the
# WebSocket handshake right after the sign-in that issued it, a reconnect, a REST call) costs a hash
# and a lookup instead of decoding it and checking its signature. An entry answers only until the
# token's expiry; beyond this many, the oldest are forgotten first.
VERIFIED_TOKENS_REMEMBERED = 20_000


class InvalidToken(Exception):
    """The token is malformed, forged or expired; the message says which."""


class TokenConfigError(Exception):
    """The node's token settings are unsafe or unusable; it refuses to start."""


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: int


def issue_token(user_id: str, secret: str, ttl_seconds: int, now: float | None = None) -> tuple[str, int]:
    """An HS256 token for `user_id` (open mode): (token, expiry in Unix seconds)."""
    now = time.time() if now is None else now
    expires_at = int(now + ttl_seconds)
    claims = {"sub": user_id, "iat": int(now), "exp": expires_at}
    return jwt.encode(claims, secret, algorithm=ISSUED_ALGORITHM), expires_at


class TokenVerifier:
    """Checks tokens with one algorithm and its keys (by `kid`; None when there is one key)."""

    def __init__(
        self, algorithm: str, keys: dict[str | None, VerifyingKey], issuer: str = "", audience: str = ""
    ) -> None:
        self._algorithm = algorithm
        self._keys = keys
        self._issuer = issuer or None
        self._audience = audience or None
        required = REQUIRED_CLAIMS + ["iss"] * bool(issuer) + ["aud"] * bool(audience)
        self._options: Options = {"require": required, "verify_iat": False}
        self._verified: dict[bytes, Identity] = {}  # SHA-256 of a token -> its identity, oldest first

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def verify(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        known = self._verified.get(digest)
        if known is not None:
            if time.time() < known.expires_at:
                return known
            del self._verified[digest]
        identity = self._decode(token)
        self._remember(digest, identity)
        return identity

    def remember(self, token: str, identity: Identity) -> None:
        """A token this node has just issued for `identity`: its first check needs no decoding."""
        self._remember(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(), identity)

    def _remember(self, digest: bytes, identity: Identity) -> None:
        self._verified[digest] = identity
        if len(self._verified) > VERIFIED_TOKENS_REMEMBERED:
            del self._verified[next(iter(self._verified))]

    def _decode(self, token: str) -> Identity:
        try:
            key = self._key_for(jwt.get_unverified_header(token))
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad token signature") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"token algorithm not accepted (this deployment uses {self._algorithm})") from None
        except jwt.DecodeError:
            raise InvalidToken("malformed token") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        return Identity(claims["sub"], int(claims["exp"]))

    def _key_for(self, header: dict[str, Any]) -> VerifyingKey:
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))  # one key: the signature decides, whatever the kid
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("token signed with an unknown key (kid)")
        return key


def verifier_from_settings(settings: Settings) -> TokenVerifier:
    """The node's verifier, or TokenConfigError saying which setting to fix."""
    if settings.auth_mode not in AUTH_MODES:
        raise TokenConfigError(f"CHATTRIO_AUTH_MODE={settings.auth_mode!r}: use one of {', '.join(AUTH_MODES)}")
    if settings.auth_mode == "open":
        check_secret(settings.secret, settings.dev_mode)
        return TokenVerifier(ISSUED_ALGORITHM, {None: settings.secret})
    algorithm = settings.jwt_algorithm
    if algorithm == ISSUED_ALGORITHM:
        check_secret(settings.secret, settings.dev_mode)
        keys: dict[str | None, VerifyingKey] = {None: settings.secret}
    elif algorithm in ASYMMETRIC_ALGORITHMS:
        keys = load_jwks(settings.jwks_file, algorithm)
    else:
        choices = ", ".join((ISSUED_ALGORITHM, *ASYMMETRIC_ALGORITHMS))
        raise TokenConfigError(f"CHATTRIO_JWT_ALGORITHM={algorithm!r}: use one of {choices}")
    return TokenVerifier(algorithm, keys, settings.jwt_issuer, settings.jwt_audience)


def check_secret(secret: str, dev_mode: bool) -> None:
    if dev_mode:
        return
    if not secret or secret == DEFAULT_SECRET:
        raise TokenConfigError(
            "CHATTRIO_SECRET is empty or the public default, so anyone could sign a token for any user: "
            "set a random secret (e.g. `openssl rand -hex 32`), or CHATTRIO_DEV_MODE=1 for a local run"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise TokenConfigError(
            f"CHATTRIO_SECRET is shorter than {MIN_SECRET_BYTES} bytes, so it can be guessed from any token: "
            "set a random one (e.g. `openssl rand -hex 32`)"
        )


def load_jwks(path: str, algorithm: str) -> dict[str | None, VerifyingKey]:
    """The public keys for `algorithm` in the JWKS file, by `kid`."""
    if not path:
        raise TokenConfigError(f"CHATTRIO_JWT_ALGORITHM={algorithm} needs CHATTRIO_JWKS_FILE (the public keys)")
    try:
        key_set = jwt.PyJWKSet.from_json(Path(path).read_text())
    except OSError as exc:
        raise TokenConfigError(f"CHATTRIO_JWKS_FILE={path!r}: {exc.strerror or exc}") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise TokenConfigError(f"CHATTRIO_JWKS_FILE={path!r} is not a usable JWKS: {exc}") from None
    keys: dict[str | None, VerifyingKey] = {}
    for jwk in key_set.keys:
        if jwk.algorithm_name != algorithm or jwk.public_key_use not in (None, "sig"):
            continue
        if hasattr(jwk.key, "private_bytes"):
            raise TokenConfigError(
                f"CHATTRIO_JWKS_FILE={path!r} holds a private key: give the nodes only the public keys"
            )
        keys[jwk.key_id] = jwk.key
    if not keys:
        raise TokenConfigError(f"CHATTRIO_JWKS_FILE={path!r} has no {algorithm} signing key")
    return keys
