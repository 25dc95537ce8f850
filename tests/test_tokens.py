"""Signed tokens: base64url(payload) "." base64url(hmac_sha256), payload {"sub", "exp"}."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from chattrio.tokens import InvalidToken, issue_token, verify_token

SECRET = "test-secret"
NOW = 1_764_072_000.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signed(claims_json: bytes, secret: str = SECRET) -> str:
    """A token with an arbitrary payload and a valid signature (as a node with the secret would make)."""
    payload = _b64(claims_json)
    return f"{payload}.{_b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())}"


def test_round_trip_and_format():
    token, expires_at = issue_token("alice", SECRET, 3600, now=NOW)
    assert expires_at == int(NOW) + 3600
    payload, signature = token.split(".")
    assert "=" not in token and "+" not in token and "/" not in token
    assert json.loads(_unb64(payload)) == {"sub": "alice", "exp": expires_at}
    expected = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()
    assert _unb64(signature) == expected
    assert verify_token(token, SECRET, now=NOW) == "alice"
    assert verify_token(token, SECRET, now=NOW + 3599) == "alice"


def test_non_latin_user_id_round_trips():
    token, _ = issue_token("김철수", SECRET, 60, now=NOW)
    assert token.isascii()
    assert verify_token(token, SECRET, now=NOW) == "김철수"


def test_token_expires_at_exp():
    token, expires_at = issue_token("alice", SECRET, 60, now=NOW)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, SECRET, now=expires_at)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, SECRET, now=expires_at + 1000)


def test_negative_ttl_gives_an_already_expired_token():
    token, expires_at = issue_token("alice", SECRET, -10)
    assert expires_at < NOW * 2  # sanity: a unix time
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, SECRET)


def test_other_secret_is_rejected():
    token, _ = issue_token("alice", "other-secret", 3600, now=NOW)
    with pytest.raises(InvalidToken, match="signature"):
        verify_token(token, SECRET, now=NOW)


def test_tampered_payload_is_rejected():
    token, _ = issue_token("alice", SECRET, 3600, now=NOW)
    _, signature = token.split(".")
    forged_payload = _b64(json.dumps({"sub": "admin", "exp": int(NOW) + 3600}).encode())
    with pytest.raises(InvalidToken, match="signature"):
        verify_token(f"{forged_payload}.{signature}", SECRET, now=NOW)


def test_tampered_signature_is_rejected():
    token, _ = issue_token("alice", SECRET, 3600, now=NOW)
    payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidToken, match="signature"):
        verify_token(f"{payload}.{flipped}", SECRET, now=NOW)


@pytest.mark.parametrize("token", ["", ".", "abc", "abc.", ".abc", "no-dot-at-all"])
def test_malformed_tokens_are_rejected(token):
    with pytest.raises(InvalidToken, match="malformed"):
        verify_token(token, SECRET, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        b"not json",
        b"[1, 2]",
        b'"alice"',
        b'{"exp": 9999999999}',
        b'{"sub": "alice"}',
        b'{"sub": "alice", "exp": "soon"}',
        b'{"sub": 42, "exp": 9999999999}',
        b'{"sub": null, "exp": 9999999999}',
        b"\xff\xfe",
    ],
)
def test_signed_but_malformed_claims_are_rejected(claims):
    with pytest.raises(InvalidToken, match="malformed"):
        verify_token(_signed(claims), SECRET, now=NOW)


@pytest.mark.parametrize("token", ["abc.é", "abc.\u2603", "é.é"])
def test_non_ascii_signature_is_an_invalid_token(token):
    with pytest.raises(InvalidToken):
        verify_token(token, SECRET, now=NOW)
