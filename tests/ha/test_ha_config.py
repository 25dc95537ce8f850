"""The ha stack is what docs/ha.md says: replicated topics, a synchronous standby, every member
shown with its role by `scripts/ha.sh status`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource
from ha_helpers import HA, METADATA_TIMEOUT, ha, ha_env, requires_ha, topic_partitions  # noqa: F401 - ha_env is a fixture

from chattrio.config import settings_from_env
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge

pytestmark = requires_ha


def _config(bootstrap: str, resource: ConfigResource) -> dict[str, str]:
    """A topic's or broker's configuration; the broker asked may not know a new topic yet."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # held: its futures fail once it is freed
    deadline = time.monotonic() + METADATA_TIMEOUT
    while True:
        (future,) = admin.describe_configs([resource]).values()
        try:
            return {name: entry.value for name, entry in future.result(timeout=METADATA_TIMEOUT).items()}
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


async def test_topics_have_three_replicas_and_need_two_in_sync(ha_env):
    settings = settings_from_env(ha_env, topic_prefix=f"ha-config-{uuid.uuid4().hex[:8]}")
    assert settings.topic_replication == 3  # from `scripts/ha.sh env`
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
    for topic in (settings.messages_topic, settings.events_topic):
        partitions = topic_partitions(settings.kafka_bootstrap, topic)
        assert {len(p.replicas) for p in partitions.values()} == {3}, topic
        config = _config(settings.kafka_bootstrap, ConfigResource(ConfigResource.Type.TOPIC, topic))
        assert config["min.insync.replicas"] == "2", topic
        assert config["unclean.leader.election.enable"] == "false", topic
    # The internal topics are created on first use, with these.
    for broker in ("1", "2", "3"):
        config = _config(settings.kafka_bootstrap, ConfigResource(ConfigResource.Type.BROKER, broker))
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.replication.factor"] == "3"
        assert config["transaction.state.log.min.isr"] == "2"


def _psql(env: dict[str, str], sql: str) -> str:
    return subprocess.run(
        ["psql", env["CHATTRIO_PG_DSN"], "-qtA", "-c", sql], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def test_the_primary_commits_synchronously_to_the_standby(ha_env):
    assert _psql(ha_env, "SHOW synchronous_commit") == "on"
    assert _psql(ha_env, "SELECT sync_state FROM pg_stat_replication") == "sync"


def test_status_shows_every_member_and_its_role(ha_env):
    result = subprocess.run(
        [str(HA), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, CHATTRIO_PYTHON=os.environ.get("CHATTRIO_PYTHON", sys.executable)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    roles = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert sorted(roles) == sorted(ha("members").split())
    assert all(" up " in line for line in roles.values())

    def count(prefix: str, role: str) -> int:
        return sum(1 for name, line in roles.items() if name.startswith(prefix) and line.endswith(role))

    assert count("etcd-", "leader") == 1 and count("etcd-", "follower") == 2
    assert count("pg-", "primary") == 1 and count("pg-", "sync standby") == 1
    assert sum(1 for n, line in roles.items() if n.startswith("redis-") and "primary, 1 replica(s)" in line) == 1
    redis_primary = next(n for n, line in roles.items() if n.startswith("redis-") and "primary," in line)
    primary_address = roles[redis_primary].split()[4]  # name up pid PID ADDRESS role...
    assert count("sentinel-", f"sees primary {primary_address}") == 3
    assert sum(1 for n, line in roles.items() if n.startswith("kafka-") and "quorum leader" in line) == 1
    assert all("leads" in line for n, line in roles.items() if n.startswith("kafka-"))
