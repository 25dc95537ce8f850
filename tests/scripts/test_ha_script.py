"""scripts/ha.sh without a running ha stack: what it tells nodes, and what it refuses."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from chattrio.storage.redis import parse_sentinel_url

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "scripts" / "ha.sh"


def _env(*command: str) -> dict[str, str]:
    out = subprocess.run(
        [*(command or [str(HA)]), "env"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    values = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values


def test_env_names_every_member_of_each_service():
    env = _env()
    dsn = urlsplit(env["CHATTRIO_PG_DSN"])
    assert dsn.netloc.split("@")[1] == "127.0.0.1:57431,127.0.0.1:57432"
    assert parse_qs(dsn.query) == {"target_session_attrs": ["read-write"]}
    sentinel = parse_sentinel_url(env["CHATTRIO_REDIS_URL"])
    assert sentinel.sentinels == (("127.0.0.1", 57471), ("127.0.0.1", 57472), ("127.0.0.1", 57473))
    assert sentinel.service == "chattrio"
    assert env["CHATTRIO_KAFKA_BOOTSTRAP"] == "127.0.0.1:57491,127.0.0.1:57492,127.0.0.1:57493"
    assert env["CHATTRIO_TOPIC_REPLICATION"] == "3"


def test_stack_sh_hands_the_ha_stack_to_ha_sh():
    stack_sh = str(REPO / "scripts" / "stack.sh")
    assert _env("env", "CHATTRIO_STACK=ha", stack_sh) == _env()
    assert _env("env", "-u", "CHATTRIO_STACK", "TOPOLOGY=ha", stack_sh) == _env()
    # A named stack wins over TOPOLOGY (make test names its own).
    assert _env("env", "CHATTRIO_STACK=test", "TOPOLOGY=ha", stack_sh)["CHATTRIO_STACK"] == "test"


@pytest.mark.parametrize("member", ["etcd-4", "kafka", "pg-0"])
def test_an_unknown_member_is_refused(member):
    result = subprocess.run([str(HA), "kill", member], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"unknown member '{member}'" in result.stderr
