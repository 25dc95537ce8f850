"""Chat on the ha topology (scripts/ha.sh) while its primaries die one after the other.

Two nodes run on the ha stack. Between rounds of SENDs, the Kafka broker leading the room's
partition, the Redis primary and the PostgreSQL primary (Patroni and its PostgreSQL) are
SIGKILLed in turn, and each is started again before the next. Every SEND must be ACKed again,
every ACKed message delivered to a client on the other node, and stored in PostgreSQL once.

Runs only with CHATTRIO_HA_TESTS=1. It starts the ha stack when it is not running (and stops it
at the end); a running one is used as it is.
"""

from __future__ import annotations

import logging
import subprocess
import uuid

import httpx
import pytest
import trio
from client import ResumingClient, create_room, login
from conftest import SESSION_CLUSTER_BASE_PORT, Cluster
from ha_helpers import MEMBER_START_TIMEOUT, ha, ha_env, kafka_leader, requires_ha  # noqa: F401 - ha_env is a fixture

from chattrio.storage.kafka import partition_of

pytestmark = requires_ha
log = logging.getLogger(__name__)

NODE_PORT_BASE = SESSION_CLUSTER_BASE_PORT + 500
PARTITIONS = 8
MESSAGES_PER_ROUND = 10
# A failover takes Sentinel 3 s, Patroni its 10 s leader lock, Kafka its broker session; a SEND
# is retried until ACKed within this.
ACK_TIMEOUT = 120.0
DELIVERY_TIMEOUT = 120.0


@pytest.fixture
def ha_cluster(ha_env):
    nodes = Cluster(ha_env, 2, NODE_PORT_BASE, f"ha{uuid.uuid4().hex[:8]}").start()
    yield nodes
    nodes.stop()


def _psql(env: dict[str, str], sql: str) -> list[str]:
    """Rows of one query on the PostgreSQL primary (psql follows the same multi-host DSN)."""
    out = subprocess.run(
        ["psql", env["CHATTRIO_PG_DSN"], "-qtA", "-c", sql], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [line for line in out.splitlines() if line]


def _stored(env: dict[str, str], room_id: int) -> list[str]:
    """The room's stored chat messages' clientMsgIds."""
    return _psql(env, f"SELECT client_msg_id FROM messages WHERE room_id = {room_id} AND kind = 'chat'")


async def test_chat_survives_the_primaries_dying_in_turn(ha_env, ha_cluster):
    urls = ha_cluster.urls
    prefix = ha_cluster.prefix
    owner, sender_id, watcher_id, late_user = (f"{prefix}-{role}" for role in ("owner", "sender", "watcher", "late"))
    token = await login(urls[0], owner)
    room = await create_room(urls[0], token, prefix)
    partition = partition_of(room["id"], PARTITIONS)

    async with trio.open_nursery() as nursery:
        sender = ResumingClient(nursery, urls, sender_id, await login(urls[0], sender_id), room["id"], first_node=0)
        watcher = ResumingClient(nursery, urls, watcher_id, await login(urls[1], watcher_id), room["id"], first_node=1)
        await sender._connect()
        await watcher._connect()

        async def send_round(name: str) -> None:
            for n in range(MESSAGES_PER_ROUND):
                await sender.send_until_acked(f"{name} {n}", f"{name}-{n}", timeout=ACK_TIMEOUT)

        await send_round("before")
        victims = [
            ("kafka", lambda: kafka_leader(ha_env["CHATTRIO_KAFKA_BOOTSTRAP"], f"{prefix}.messages", partition)),
            ("redis", lambda: ha("primary", "redis")),
            ("postgres", lambda: ha("primary", "pg")),
        ]
        for name, find in victims:
            member = await trio.to_thread.run_sync(find)
            await trio.to_thread.run_sync(ha, "kill", member)
            killed_at = trio.current_time()
            await send_round(f"after-{name}")
            log.info(
                "after SIGKILL of %s (%s primary), %d SENDs ACKed in %.1f s",
                member,
                name,
                MESSAGES_PER_ROUND,
                trio.current_time() - killed_at,
            )
            if name == "postgres":
                # A write that needs PostgreSQL (a sign-up) succeeds again on the new primary.
                await _sign_up_until_it_succeeds(urls[0], late_user)
                log.info("sign-up succeeded %.1f s after the kill", trio.current_time() - killed_at)
            # /readyz answers 200 only when PostgreSQL and Redis answer: both nodes found the new
            # primaries without a restart.
            for node in ha_cluster.nodes:
                await _ready_again(node.internal_url)
            log.info("both nodes ready %.1f s after the kill", trio.current_time() - killed_at)
            await trio.to_thread.run_sync(lambda member=member: ha("start", member, timeout=MEMBER_START_TIMEOUT))

        acked = set(sender.acked)
        assert len(acked) == MESSAGES_PER_ROUND * (1 + len(victims))
        acked_ids = {ack["id"]: client_msg_id for client_msg_id, ack in sender.acked.items()}
        with trio.move_on_after(DELIVERY_TIMEOUT):
            await watcher.receive_until(
                lambda: acked_ids.keys() <= {m["id"] for m in watcher.received}, timeout=DELIVERY_TIMEOUT
            )
        delivered = [m["id"] for m in watcher.received if m["kind"] == "chat"]
        missing = sorted(acked_ids[i] for i in acked_ids.keys() - set(delivered))
        assert not missing, (
            f"ACKed but not delivered to the other node: {missing}; the watcher reconnected"
            f" {watcher.reconnects} times and holds {len(watcher.received)} messages;"
            f" its node's metrics: {await _fanout_metrics(ha_cluster.nodes[1].internal_url)};"
            f" the sender's: {await _fanout_metrics(ha_cluster.nodes[0].internal_url)}"
        )
        assert len(delivered) == len(set(delivered)), "a message was delivered twice"
        await sender.aclose()
        await watcher.aclose()
        nursery.cancel_scope.cancel()

    with trio.move_on_after(DELIVERY_TIMEOUT):
        while len(stored := await trio.to_thread.run_sync(_stored, ha_env, room["id"])) < len(acked):
            await trio.sleep(0.5)
    assert sorted(stored) == sorted(acked), "every ACKed message is stored exactly once"
    # The rows written before the PostgreSQL primary died are on the new one.
    users = await trio.to_thread.run_sync(_psql, ha_env, f"SELECT id FROM users WHERE id LIKE '{prefix}-%'")
    assert sorted(users) == sorted([owner, sender_id, watcher_id, late_user])
    assert await trio.to_thread.run_sync(_psql, ha_env, f"SELECT name FROM rooms WHERE id = {room['id']}") == [prefix]


async def _fanout_metrics(internal_url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=internal_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return [line for line in text.splitlines() if line.startswith("chattrio_") and "_bucket" not in line]


async def _ready_again(internal_url: str) -> None:
    with trio.fail_after(ACK_TIMEOUT):
        while True:
            try:
                async with httpx.AsyncClient(base_url=internal_url, timeout=10) as http:
                    if (await http.get("/readyz")).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.5)


async def _sign_up_until_it_succeeds(url: str, user_id: str) -> None:
    with trio.fail_after(ACK_TIMEOUT):
        while True:
            try:
                async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                    if (await http.post(f"/api/user/enter/{user_id}")).is_success:
                        return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.5)
