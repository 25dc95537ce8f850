"""No record can stop the persistence group: poison records produced straight to Kafka end in the
dead_letters table, every other message is still stored, and the nodes stay ready."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
import trio
from client import connect, create_room, login
from confluent_kafka import Producer

from chattrio.models import ChatRecord, chat_record_encoder
from chattrio.storage.bridge import open_asyncio_bridge, run_asyncio
from chattrio.storage.kafka import partition_of
from chattrio.validation import skeleton

STORED_TIMEOUT = 60.0


def _user(prefix: str = "p") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def _sql(stack_env: dict[str, str], query: str, *args) -> list:
    async def fetch() -> list:
        conn = await asyncpg.connect(stack_env["CHATTRIO_PG_DSN"])
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async with open_asyncio_bridge():
        return await run_asyncio(fetch)


def _produce_raw(bootstrap: str, topic: str, room_id: int, values: list[bytes | None]) -> tuple[int, list[int]]:
    """Produce to the room's partition as the nodes would, but without any of their checks;
    returns the partition and the offsets."""
    producer = Producer({"bootstrap.servers": bootstrap})
    partitions = _partition_count(bootstrap, topic)
    offsets: list[int] = []

    def delivered(error, message) -> None:
        assert error is None, error
        offsets.append(message.offset())

    partition = partition_of(room_id, partitions)
    for value in values:
        producer.produce(topic, value=value, key=str(room_id).encode(), partition=partition, on_delivery=delivered)
    assert producer.flush(15) == 0
    return partition, offsets


def _partition_count(bootstrap: str, topic: str) -> int:
    producer = Producer({"bootstrap.servers": bootstrap})
    return len(producer.list_topics(topic, timeout=10).topics[topic].partitions)


async def _room_in_partition(url: str, token: str, topic: str, partition: int, stack_env: dict[str, str]) -> dict:
    """A new room whose messages share `partition`."""
    count = await trio.to_thread.run_sync(_partition_count, stack_env["CHATTRIO_KAFKA_BOOTSTRAP"], topic)
    for _ in range(20 * count):
        room = await create_room(url, token, f"neighbour-{uuid.uuid4().hex[:6]}")
        if partition_of(room["id"], count) == partition:
            return room
    raise AssertionError(f"no room landed in partition {partition}")


async def _history_ids(url: str, room_id: int) -> set[str]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get(f"/api/room/{room_id}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {m["id"] for m in response.json()["data"]}


async def _dead_lettered_total(cluster) -> float:
    total = 0.0
    async with httpx.AsyncClient(timeout=10) as http:
        for node in cluster.nodes:
            for line in (await http.get(f"{node.internal_url}/metrics")).text.splitlines():
                if line.startswith("chattrio_records_dead_lettered_total"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def test_poison_records_are_dead_lettered_and_storing_goes_on(cluster, stack_env):
    token = await login(cluster.urls[0], _user("owner"))
    room = await create_room(cluster.urls[0], token, f"poison-{uuid.uuid4().hex[:6]}")
    topic = f"{cluster.prefix}.messages"
    before = await _dead_lettered_total(cluster)
    poison = [
        chat_record_encoder.encode(ChatRecord(str(uuid.uuid4()), room["id"], "mallory", "chat", "a\x00b", None)),
        chat_record_encoder.encode(ChatRecord(str(uuid.uuid4()), room["id"], "mallory", "chat", "ok", "c\x00")),
        chat_record_encoder.encode(ChatRecord("not-a-uuid", room["id"], "mallory", "chat", "bad id", None)),
        b"\xff\xfe not JSON",
        b'["too", "short"]',
        None,  # a tombstone
    ]
    partition, poison_offsets = await trio.to_thread.run_sync(
        _produce_raw, stack_env["CHATTRIO_KAFKA_BOOTSTRAP"], topic, room["id"], poison
    )

    # Messages behind the poison in the same partition, sent the normal way: in its room and in
    # another room of that partition.
    neighbour = await _room_in_partition(cluster.urls[0], token, topic, partition, stack_env)
    acked = {room["id"]: [], neighbour["id"]: []}
    async with connect(cluster.urls[1], _user()) as client:
        for room_id, replies in acked.items():
            assert (await client.subscribe(room_id))["type"] == "SUBSCRIBED"
            for n in range(3):
                reply = await client.send_chat(room_id, f"after poison {n}", client_msg_id=str(uuid.uuid4()))
                assert reply["type"] == "ACK", reply
                replies.append(reply)
    assert min(a["seq"] for replies in acked.values() for a in replies) > max(poison_offsets)

    with trio.fail_after(STORED_TIMEOUT):
        for room_id, replies in acked.items():
            while not {a["id"] for a in replies} <= await _history_ids(cluster.urls[2], room_id):
                await trio.sleep(0.3)

    rows = await _sql(
        stack_env,
        "SELECT record_offset, reason, value FROM dead_letters WHERE topic = $1 AND partition = $2",
        topic,
        partition,
    )
    letters = {row["record_offset"]: row for row in rows}
    assert set(poison_offsets) <= set(letters), rows
    nul_text = letters[poison_offsets[0]]
    assert "0x00" in nul_text["reason"] and b"a\\u0000b" in nul_text["value"]
    assert "UUID" in letters[poison_offsets[2]]["reason"]
    assert letters[poison_offsets[3]]["value"] == b"\xff\xfe not JSON"
    assert letters[poison_offsets[5]]["value"] is None
    assert await _dead_lettered_total(cluster) - before >= len(poison)
    async with httpx.AsyncClient(timeout=10) as http:
        for node in cluster.nodes:
            ready = await http.get(f"{node.internal_url}/readyz")
            assert ready.status_code == 200, ready.text


async def test_a_dead_lettered_message_can_be_replayed_with_sql(cluster, stack_env):
    """The replay that docs/security.md gives operators: drop the U+0000, insert at the
    record's offset."""
    token = await login(cluster.urls[0], _user("owner"))
    room = await create_room(cluster.urls[0], token, f"replay-{uuid.uuid4().hex[:6]}")
    topic = f"{cluster.prefix}.messages"
    message_id = str(uuid.uuid4())
    record = chat_record_encoder.encode(ChatRecord(message_id, room["id"], "mallory", "chat", "re\x00play", None))
    partition, [offset] = await trio.to_thread.run_sync(
        _produce_raw, stack_env["CHATTRIO_KAFKA_BOOTSTRAP"], topic, room["id"], [record]
    )
    find = "SELECT id FROM dead_letters WHERE topic = $1 AND partition = $2 AND record_offset = $3"
    with trio.fail_after(STORED_TIMEOUT):
        while not (found := await _sql(stack_env, find, topic, partition, offset)):
            await trio.sleep(0.3)
    await _sql(stack_env, REPLAY_SQL, found[0]["id"])
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        history = (await http.get(f"/api/room/{room['id']}/messages")).json()["data"]
    assert [(m["id"], m["seq"], m["text"]) for m in history] == [(message_id, offset, "replay")]


async def test_an_undecodable_event_is_dead_lettered_and_rooms_are_still_announced(cluster, stack_env):
    topic = f"{cluster.prefix}.events"
    partition, [offset] = await trio.to_thread.run_sync(
        _produce_raw, stack_env["CHATTRIO_KAFKA_BOOTSTRAP"], topic, 1, [b'{"type": "no_such_event"}']
    )
    token = await login(cluster.urls[0], _user("owner"))
    async with connect(cluster.urls[1], _user()) as watcher:
        await watcher.send(type="SUBSCRIBE", destination="/topic/rooms", ref="rooms")
        await watcher.wait_for(lambda f: f.get("ref") == "rooms")
        room = await create_room(cluster.urls[0], token, f"after-bad-event-{uuid.uuid4().hex[:6]}")
        await watcher.wait_for(lambda f: f["type"] == "ROOM_CREATED" and f["room"]["id"] == room["id"])
    find = "SELECT reason FROM dead_letters WHERE topic = $1 AND partition = $2 AND record_offset = $3"
    with trio.fail_after(STORED_TIMEOUT):
        while not (found := await _sql(stack_env, find, topic, partition, offset)):
            await trio.sleep(0.3)
    assert "no_such_event" in found[0]["reason"]


# Kept word for word in docs/security.md.
REPLAY_SQL = """
INSERT INTO messages (id, room_id, seq, sender_id, kind, text, client_msg_id, sent_at)
SELECT (r->>0)::uuid, (r->>1)::bigint, d.record_offset, r->>2, r->>3, r->>4, r->>5, d.record_time
FROM dead_letters d,
     LATERAL (SELECT replace(convert_from(d.value, 'UTF8'), '\\u0000', '')::jsonb AS r) AS fixed
WHERE d.id = $1
ON CONFLICT DO NOTHING
"""


# Look-alike user ids against the database -------------------------------------------------------


async def _enter(url: str, user_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.post(f"/api/user/enter/{user_id}")


async def test_an_id_that_looks_like_an_existing_one_is_409(cluster):
    base = uuid.uuid4().hex[:8].replace("1", "2").replace("0", "3")  # no 1 or 0: its look-alike has one
    first = await _enter(cluster.urls[0], f"lily{base}")
    assert first.status_code == 201, first.text
    for lookalike in (f"1ily{base}", f"li1y{base}", f"1i1y{base}"):
        response = await _enter(cluster.urls[1], lookalike)
        assert response.status_code == 409, (lookalike, response.text)
        assert f"lily{base}" in response.json()["message"]
    again = await _enter(cluster.urls[2], f"LILY{base}")  # the same user, case folded
    assert again.status_code == 200 and again.json()["data"]["userId"] == f"lily{base}"


async def test_a_whole_script_look_alike_is_409(cluster):
    digits = "".join(c for c in uuid.uuid4().hex if c.isdigit() and c not in "01")[:6] or "2345"
    latin = await _enter(cluster.urls[0], f"pope{digits}")
    assert latin.status_code == 201, latin.text
    cyrillic = await _enter(cluster.urls[1], f"\u0440\u043e\u0440\u0435{digits}")  # Cyrillic "роре"
    assert cyrillic.status_code == 409, cyrillic.text


async def test_a_user_from_before_skeletons_gets_one_when_entering(cluster, stack_env):
    user_id = f"legacy{uuid.uuid4().hex[:8]}".replace("1", "2").replace("0", "3")
    await _sql(stack_env, "INSERT INTO users (id) VALUES ($1)", user_id)  # as written before skeletons
    lookalike = user_id.replace("l", "1", 1)
    response = await _enter(cluster.urls[0], user_id)
    assert response.status_code == 200 and response.json()["data"]["created"] is False
    [row] = await _sql(stack_env, "SELECT skeleton FROM users WHERE id = $1", user_id)
    assert row["skeleton"] == skeleton(user_id)
    assert (await _enter(cluster.urls[1], lookalike)).status_code == 409


@pytest.mark.parametrize("user_id", ["अनिल", "सुमित्रा", "วิชัย", "สมชาย"])
async def test_hindi_and_thai_ids_can_enter(cluster, user_id):
    digits = str(uuid.uuid4().int)[:8]
    response = await _enter(cluster.urls[0], user_id + digits)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["userId"] == user_id + digits
