"""The redis+sentinel:// URL a node finds its Redis primary through (pure parsing)."""

from __future__ import annotations

import re

import pytest

from chattrio.storage.redis import RedisMisconfigured, SentinelUrl, parse_sentinel_url


def test_three_sentinels_a_service_and_a_database():
    url = "redis+sentinel://127.0.0.1:57471,127.0.0.1:57472,sentinel-3.local:26379/chattrio/2"
    assert parse_sentinel_url(url) == SentinelUrl(
        (("127.0.0.1", 57471), ("127.0.0.1", 57472), ("sentinel-3.local", 26379)), "chattrio", 2
    )


def test_the_database_defaults_to_zero_and_ipv6_hosts_lose_their_brackets():
    assert parse_sentinel_url("redis+sentinel://[::1]:26379/cache") == SentinelUrl((("::1", 26379),), "cache", 0)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://127.0.0.1:6379/0", "not a redis+sentinel"),
        ("redis+sentinel://127.0.0.1:26379", "/SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/", "/SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/chattrio/0/extra", "/SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/chattrio/zero", "must be a number"),
        ("redis+sentinel://127.0.0.1/chattrio", "HOST:PORT"),
        ("redis+sentinel://127.0.0.1:26379,:26380/chattrio", "HOST:PORT"),
        ("redis+sentinel://127.0.0.1:70000/chattrio", "HOST:PORT"),
        ("redis+sentinel://user:secret@127.0.0.1:26379/chattrio", "credentials"),
        ("redis+sentinel://127.0.0.1:26379/chattrio?timeout=1", "query"),
    ],
)
def test_a_malformed_url_is_refused_with_the_reason(url, complaint):
    with pytest.raises(RedisMisconfigured, match=re.escape(complaint)):
        parse_sentinel_url(url)
