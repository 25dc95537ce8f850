"""Tokens (PyJWT): HS256 issued by the nodes, HS256/RS256/ES256 from an identity service, and the
settings a node refuses to start with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chattrio.config import Settings
from chattrio.tokens import (
    DEFAULT_SECRET,
    Identity,
    InvalidToken,
    TokenConfigError,
    TokenVerifier,
    issue_token,
    load_jwks,
    verifier_from_settings,
)

SECRET = "unit-test-secret-0123456789abcdef0123"
OPEN = TokenVerifier("HS256", {None: SECRET})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hs256_by_hand(header: dict, claims: dict, key: bytes) -> str:
    """An HS256 token made without PyJWT, which refuses to use a public key as an HMAC secret."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def _claims(user: str = "alice", ttl: int = 3600, **extra) -> dict:
    return {"sub": user, "exp": int(time.time()) + ttl, **extra}


# Open mode: the nodes' own HS256 tokens -----------------------------------------------------------


def test_issued_token_is_an_hs256_jwt_for_the_user():
    token, expires_at = issue_token("alice", SECRET, 3600)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] == expires_at
    assert expires_at - 3601 <= claims["iat"] <= expires_at - 3599
    identity = OPEN.verify(token)
    assert (identity.user_id, identity.expires_at) == ("alice", expires_at)


def test_non_ascii_user_id_round_trips():
    token, _ = issue_token("김철수", SECRET, 60)
    assert token.isascii()
    assert OPEN.verify(token).user_id == "김철수"


def test_expired_token_is_refused():
    token, _ = issue_token("alice", SECRET, -10)
    with pytest.raises(InvalidToken, match="expired"):
        OPEN.verify(token)


def test_token_of_another_secret_is_refused():
    token, _ = issue_token("alice", "another-secret-0123456789abcdef0123", 3600)
    with pytest.raises(InvalidToken, match="signature"):
        OPEN.verify(token)


def test_changed_payload_is_refused():
    header, _, signature = issue_token("alice", SECRET, 3600)[0].split(".")
    forged = _b64(json.dumps(_claims("mallory")).encode())
    with pytest.raises(InvalidToken, match="signature"):
        OPEN.verify(f"{header}.{forged}.{signature}")


def test_a_token_checked_once_is_answered_from_memory_until_its_expiry(monkeypatch):
    verifier = TokenVerifier("HS256", {None: SECRET})
    token, expires_at = issue_token("alice", SECRET, 3600)
    assert verifier.verify(token) == Identity("alice", expires_at)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(jwt, "decode", no_decoding)
    assert verifier.verify(token) == Identity("alice", expires_at)
    monkeypatch.setattr(time, "time", lambda: expires_at)  # the token's last second is over
    with pytest.raises(AssertionError, match="decoded again"):
        verifier.verify(token)


def test_a_token_this_node_issued_needs_no_decoding_but_a_changed_one_does():
    verifier = TokenVerifier("HS256", {None: SECRET})
    token, expires_at = issue_token("alice", SECRET, 3600)
    verifier.remember(token, Identity("alice", expires_at))
    header, payload, signature = token.split(".")
    forged = f"{header}.{_b64(json.dumps(_claims('mallory')).encode())}.{signature}"
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(forged)
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(f"{header}.{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}")
    assert verifier.verify(token).user_id == "alice"


def test_a_remembered_token_past_its_expiry_is_refused():
    verifier = TokenVerifier("HS256", {None: SECRET})
    token, expires_at = issue_token("alice", SECRET, -10)
    verifier.remember(token, Identity("alice", expires_at))
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


@pytest.mark.parametrize("token", ["", ".", "abc", "a.b", "a.b.c", "abc.é", "é.é.é", "no-dot-at-all"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(InvalidToken):
        OPEN.verify(token)


@pytest.mark.parametrize("claims", [{"sub": "alice"}, {"exp": int(time.time()) + 60}, {"sub": 7, "exp": 10**10}])
def test_missing_or_wrong_claims_are_refused(claims):
    with pytest.raises(InvalidToken):
        OPEN.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_unsigned_token_is_refused():
    token = jwt.encode(_claims(), None, algorithm="none")
    with pytest.raises(InvalidToken, match="algorithm"):
        OPEN.verify(token)


def test_hs512_token_is_refused_where_hs256_is_configured():
    token = jwt.encode(_claims(), SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken, match="algorithm"):
        OPEN.verify(token)


# jwt mode: keys from a JWKS file --------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(private_key, kid: str | None = None, public: bool = True) -> dict:
    key = private_key.public_key() if public else private_key
    algorithm = (
        jwt.algorithms.RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    )
    jwk = algorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"} if kid else jwk


def _jwks_file(tmp_path, *jwks: dict) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(jwks)}))
    return str(path)


def _jwt_settings(algorithm: str, jwks_file: str = "", **extra) -> Settings:
    return Settings(auth_mode="jwt", jwt_algorithm=algorithm, jwks_file=jwks_file, secret=SECRET, **extra)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_token_signed_by_the_identity_service_is_accepted(tmp_path, rsa_key, ec_key, algorithm):
    key = rsa_key if algorithm == "RS256" else ec_key
    verifier = verifier_from_settings(_jwt_settings(algorithm, _jwks_file(tmp_path, _jwk(key))))
    token = jwt.encode(_claims("bob"), key, algorithm=algorithm)
    assert verifier.verify(token).user_id == "bob"


def test_the_kid_chooses_among_several_keys(tmp_path, ec_key):
    other = ec.generate_private_key(ec.SECP256R1())
    verifier = verifier_from_settings(
        _jwt_settings("ES256", _jwks_file(tmp_path, _jwk(other, "k1"), _jwk(ec_key, "k2")))
    )
    assert (
        verifier.verify(jwt.encode(_claims("bob"), ec_key, algorithm="ES256", headers={"kid": "k2"})).user_id == "bob"
    )
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(jwt.encode(_claims("bob"), ec_key, algorithm="ES256", headers={"kid": "k1"}))
    with pytest.raises(InvalidToken, match="unknown key"):
        verifier.verify(jwt.encode(_claims("bob"), ec_key, algorithm="ES256", headers={"kid": "k3"}))
    with pytest.raises(InvalidToken, match="unknown key"):
        verifier.verify(jwt.encode(_claims("bob"), ec_key, algorithm="ES256"))


def test_token_signed_with_another_private_key_is_refused(tmp_path, rsa_key):
    verifier = verifier_from_settings(_jwt_settings("RS256", _jwks_file(tmp_path, _jwk(rsa_key))))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(jwt.encode(_claims(), stranger, algorithm="RS256"))


def test_expired_identity_service_token_is_refused(tmp_path, ec_key):
    verifier = verifier_from_settings(_jwt_settings("ES256", _jwks_file(tmp_path, _jwk(ec_key))))
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(jwt.encode(_claims(ttl=-5), ec_key, algorithm="ES256"))


def test_hs256_signed_with_the_public_key_is_refused(tmp_path, rsa_key):
    """The classic confusion: the public key (which anyone has) used as an HMAC secret."""
    verifier = verifier_from_settings(_jwt_settings("RS256", _jwks_file(tmp_path, _jwk(rsa_key))))
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for key in (public_pem, json.dumps(_jwk(rsa_key)).encode()):
        token = _hs256_by_hand({"alg": "HS256", "typ": "JWT"}, _claims("mallory"), key)
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(token)


def test_none_and_other_algorithms_are_refused_in_jwt_mode(tmp_path, rsa_key, ec_key):
    verifier = verifier_from_settings(_jwt_settings("RS256", _jwks_file(tmp_path, _jwk(rsa_key))))
    for token in (
        jwt.encode(_claims(), None, algorithm="none"),
        jwt.encode(_claims(), ec_key, algorithm="ES256"),
        jwt.encode(_claims(), SECRET, algorithm="HS256"),
    ):
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(token)


def test_issuer_and_audience_are_required_when_configured(tmp_path, ec_key):
    jwks = _jwks_file(tmp_path, _jwk(ec_key))
    verifier = verifier_from_settings(
        _jwt_settings("ES256", jwks, jwt_issuer="https://id.example", jwt_audience="chat")
    )
    good = _claims("bob", iss="https://id.example", aud="chat")
    assert verifier.verify(jwt.encode(good, ec_key, algorithm="ES256")).user_id == "bob"
    for bad in (
        {**good, "iss": "https://evil.example"},
        {**good, "aud": "other"},
        {k: v for k, v in good.items() if k != "iss"},
        {k: v for k, v in good.items() if k != "aud"},
    ):
        with pytest.raises(InvalidToken):
            verifier.verify(jwt.encode(bad, ec_key, algorithm="ES256"))


def test_hs256_jwt_mode_uses_the_shared_secret():
    verifier = verifier_from_settings(_jwt_settings("HS256"))
    assert verifier.verify(jwt.encode(_claims("carol"), SECRET, algorithm="HS256")).user_id == "carol"


# Settings a node refuses -------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [DEFAULT_SECRET, "", "short-secret"])
@pytest.mark.parametrize("mode", [{"auth_mode": "open"}, {"auth_mode": "jwt", "jwt_algorithm": "HS256"}])
def test_default_empty_or_short_secret_is_refused_without_dev_mode(secret, mode):
    with pytest.raises(TokenConfigError, match="CHATTRIO_SECRET"):
        verifier_from_settings(Settings(secret=secret, **mode))
    assert verifier_from_settings(Settings(secret=secret, dev_mode=True, **mode)).algorithm == "HS256"


def test_a_long_random_secret_needs_no_dev_mode():
    assert verifier_from_settings(Settings(secret=SECRET)).algorithm == "HS256"


@pytest.mark.parametrize(
    "settings, reason",
    [
        (Settings(auth_mode="ldap", secret=SECRET), "CHATTRIO_AUTH_MODE"),
        (Settings(auth_mode="jwt", jwt_algorithm="none", secret=SECRET), "CHATTRIO_JWT_ALGORITHM"),
        (Settings(auth_mode="jwt", jwt_algorithm="RS256"), "needs CHATTRIO_JWKS_FILE"),
        (Settings(auth_mode="jwt", jwt_algorithm="ES256", jwks_file="/nonexistent/jwks.json"), "CHATTRIO_JWKS_FILE"),
    ],
)
def test_bad_auth_settings_are_refused(settings, reason):
    with pytest.raises(TokenConfigError, match=reason):
        verifier_from_settings(settings)


def test_jwks_without_a_key_of_the_algorithm_is_refused(tmp_path, rsa_key):
    with pytest.raises(TokenConfigError, match="no ES256 signing key"):
        load_jwks(_jwks_file(tmp_path, _jwk(rsa_key)), "ES256")


def test_jwks_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text("not json")
    with pytest.raises(TokenConfigError, match="not a usable JWKS"):
        load_jwks(str(path), "RS256")


def test_jwks_with_a_private_key_is_refused(tmp_path, ec_key):
    with pytest.raises(TokenConfigError, match="private key"):
        load_jwks(_jwks_file(tmp_path, _jwk(ec_key, public=False)), "ES256")


def test_token_for_an_audience_is_refused_where_none_is_configured():
    token = jwt.encode(_claims(aud="another-service"), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="audience"):
        OPEN.verify(token)


def test_token_not_valid_yet_is_refused():
    token = jwt.encode(_claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="not yet valid"):
        OPEN.verify(token)


def test_public_key_modes_do_not_use_the_secret(tmp_path, ec_key):
    settings = Settings(auth_mode="jwt", jwt_algorithm="ES256", jwks_file=_jwks_file(tmp_path, _jwk(ec_key)))
    assert settings.secret == DEFAULT_SECRET and not settings.dev_mode
    verifier = verifier_from_settings(settings)
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(jwt.encode(_claims(), DEFAULT_SECRET, algorithm="HS256"))
