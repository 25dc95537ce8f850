"""The PostgreSQL adapter against the test stack's database: values PostgreSQL refuses are
DataRefused (not an outage, not a crash), dead letters are kept once, look-alike ids collide, a
hung first host of a failover pair is passed over."""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import trio

from chattrio.models import DeadLetter, Message
from chattrio.storage.bridge import open_asyncio_bridge
from chattrio.storage.postgres import DatabaseUnavailable, DataRefused, LookalikeTaken, open_database
from chattrio.validation import skeleton


@pytest.fixture
async def db(stack_env, run_prefix):
    async with open_asyncio_bridge(), open_database(stack_env["CHATTRIO_PG_DSN"], f"{run_prefix}-pg.events") as db:
        await db.migrate()
        yield db


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}".replace("1", "2").replace("0", "3")


def _message(message_id: str, text: str, seq: int) -> Message:
    return Message(message_id, 1, seq, "mallory", "chat", text, None, 0)


async def test_values_postgresql_refuses_are_data_refused(db, run_prefix):
    user = _name("owner")
    await db.enter_user(user, skeleton(user))
    with pytest.raises(DataRefused, match="0x00"):
        await db.create_room("a\x00b", user)
    topic = f"{run_prefix}-pg.messages"
    for message in (
        _message(str(uuid.uuid4()), "a\x00b", 1),
        _message("not-a-uuid", "ok", 2),
        _message(str(uuid.uuid4()), "a\ud800b", 3),
    ):
        with pytest.raises(DataRefused):
            await db.store_messages([message], topic, {0: 4})
    assert await db.stored_offset(topic, 0) is None, "a refused batch stores nothing, offsets included"


async def test_a_stored_batch_gives_back_only_new_messages_and_never_moves_an_offset_back(db, run_prefix):
    topic = f"{run_prefix}-pg.store"
    room_id = uuid.uuid4().int % 2**31
    batch = [Message(str(uuid.uuid4()), room_id, seq, "mallory", "chat", f"m{seq}", None, 0) for seq in (1, 2, 3)]
    assert await db.store_messages(batch[:2], topic, {0: 5}) == batch[:2]
    assert await db.store_messages(batch, topic, {0: 4}) == batch[2:], "a redelivered batch stores only what is new"
    assert await db.stored_offset(topic, 0) == 5, "an older batch's offset does not move the partition back"
    assert await db.store_messages([], topic, {0: 9, 1: 2}) == []
    assert (await db.stored_offset(topic, 0), await db.stored_offset(topic, 1)) == (9, 2)


async def test_a_dead_letter_is_kept_once(db, run_prefix):
    letter = DeadLetter(f"{run_prefix}-pg.messages", 3, 17, 1_700_000_000_000, b"\xff", "reason with \x00 in it")
    assert await db.dead_letter([letter]) == 1
    assert await db.dead_letter([letter]) == 0


async def test_look_alike_ids_collide_and_the_first_wins(db):
    first = _name("lily")
    assert await db.enter_user(first, skeleton(first)) is True
    assert await db.enter_user(first, skeleton(first)) is False
    lookalike = first.replace("l", "1", 1)
    with pytest.raises(LookalikeTaken) as exc:
        await db.enter_user(lookalike, skeleton(lookalike))
    assert exc.value.existing == first


async def test_of_two_look_alikes_entering_at_once_one_is_created(db):
    one = _name("lola")
    other = one.replace("l", "1", 1)
    outcomes: list[str] = []

    async def enter(user_id: str) -> None:
        try:
            await db.enter_user(user_id, skeleton(user_id))
            outcomes.append("created")
        except LookalikeTaken:
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(enter, one)
        nursery.start_soon(enter, other)
    assert sorted(outcomes) == ["created", "refused"]


async def _enter_all(db, user_ids: list[str]) -> list[object]:
    """Each user's sign-in, all at once: True, False or the exception raised, in order."""
    outcomes: list[object] = [None] * len(user_ids)

    async def enter(index: int, user_id: str) -> None:
        try:
            outcomes[index] = await db.enter_user(user_id, skeleton(user_id))
        except Exception as exc:
            outcomes[index] = exc

    async with trio.open_nursery() as nursery:
        for index, user_id in enumerate(user_ids):
            nursery.start_soon(enter, index, user_id)
    return outcomes


async def _outbox_rows_by_key(db, keys: list[str]) -> dict[str, int]:
    rows = await db._run(
        db._pool.fetch, "SELECT key, count(*) FROM outbox WHERE key = ANY($1::text[]) GROUP BY key", keys
    )
    return {row[0]: row[1] for row in rows}


async def test_sign_ins_at_once_share_statements_and_each_new_user_queues_one_event(db):
    users = [_name("crowd") for _ in range(40)]
    statements_before = db.sign_in_statements
    assert await _enter_all(db, users) == [True] * len(users)
    assert db.sign_in_statements - statements_before < len(users)
    assert await _outbox_rows_by_key(db, users) == {user: 1 for user in users}
    assert await _enter_all(db, users) == [False] * len(users), "returning users are known"
    assert await _outbox_rows_by_key(db, users) == {user: 1 for user in users}


async def test_one_user_signing_in_twice_at_once_is_created_once(db):
    user = _name("twice")
    assert sorted(await _enter_all(db, [user, user, user])) == [False, False, True]
    assert await _outbox_rows_by_key(db, [user]) == {user: 1}


async def test_a_sign_in_postgresql_refuses_fails_alone(db):
    good = [_name("good") for _ in range(3)]
    outcomes = await _enter_all(db, [good[0], "bad\x00id", *good[1:]])
    assert outcomes[0] is True and outcomes[2:] == [True, True]
    assert isinstance(outcomes[1], DataRefused)
    assert await _outbox_rows_by_key(db, good) == {user: 1 for user in good}


async def test_a_connection_left_mid_operation_is_an_outage_not_a_crash(db):
    async def broken_connection():
        # what asyncpg raises on a pooled connection whose earlier operation was cancelled
        raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")

    with pytest.raises(DatabaseUnavailable, match="another operation"):
        await db._run(broken_connection)


async def test_a_new_outbox_row_wakes_the_listener(db):
    wakes = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.listen_outbox, lambda: wakes.append("row"))
        with trio.fail_after(10):
            while not wakes:  # the first call says it listens
                await trio.sleep(0.01)
        owner = _name("owner")
        await db.enter_user(owner, skeleton(owner))
        with trio.fail_after(10):
            while len(wakes) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_hung_first_host_is_passed_over_for_the_next(stack_env, run_prefix):
    """A frozen machine (SIGSTOP): its kernel completes the TCP handshake and nothing answers. A
    socket listening and never accepting is just that. Listed first in the DSN, it must not use
    up the connection's whole deadline: the pool opens its connections on the host behind it."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        parts = urlsplit(stack_env["CHATTRIO_PG_DSN"])
        user, _, real = parts.netloc.rpartition("@")
        dsn = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{hung.getsockname()[1]},{real}"))
        async with open_asyncio_bridge(), open_database(dsn, f"{run_prefix}-pg.events") as db:
            await db.ping()
            user_id = _name("past")
            assert await db.enter_user(user_id, skeleton(user_id)) is True
