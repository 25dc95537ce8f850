"""Resume pages from PostgreSQL: capped by count and by bytes of text, and the replay-limit count."""

from __future__ import annotations

import uuid

from chattrio.chat import _within_text_bytes
from chattrio.models import Message
from chattrio.storage.bridge import open_asyncio_bridge
from chattrio.storage.postgres import open_database
from chattrio.validation import skeleton


def _message(room_id: int, seq: int, text: str) -> Message:
    return Message(str(uuid.uuid4()), room_id, seq, "pager", "chat", text, None, 0)


async def _room_with(db, run_prefix: str, texts: list[str]) -> int:
    await db.enter_user("pager", skeleton("pager"))
    room = await db.create_room(f"pages-{uuid.uuid4().hex[:6]}", "pager")
    await db.store_messages(
        [_message(room.id, 10 + 3 * n, t) for n, t in enumerate(texts)], f"{run_prefix}-pages.messages", {}
    )
    return room.id


async def test_a_page_is_cut_by_bytes_of_text_and_by_count(stack_env, run_prefix):
    async with open_asyncio_bridge(), open_database(stack_env["CHATTRIO_PG_DSN"], f"{run_prefix}-pages.events") as db:
        await db.migrate()
        room_id = await _room_with(db, run_prefix, ["é" * 500] * 10)  # 1000 bytes each
        by_bytes = await db.messages_after(room_id, -1, 100, 3500)
        assert [m.seq for m in by_bytes] == [10, 13, 16]  # a fourth would make 4000 bytes
        assert [m.seq for m in await db.messages_after(room_id, 13, 100, 3500)] == [16, 19, 22]
        assert [m.seq for m in await db.messages_after(room_id, -1, 2, 1 << 20)] == [10, 13]
        assert [m.seq for m in await db.messages_after(room_id, -1, 100, 10)] == [10]  # one always comes
        assert await db.messages_after(room_id, 37, 100, 1 << 20) == []
        assert await db.count_messages_after(room_id, -1, 4) == 4
        assert await db.count_messages_after(room_id, 30, 100) == 3  # 31, 34, 37


def test_the_cached_page_is_cut_by_bytes_of_text_too():
    messages = [_message(1, seq, "€" * 100) for seq in range(5)]  # 300 bytes each
    assert [m.seq for m in _within_text_bytes(messages, 900)] == [0, 1, 2]
    assert [m.seq for m in _within_text_bytes(messages, 10)] == [0]
    assert _within_text_bytes(messages, 1 << 20) == messages
    assert _within_text_bytes([], 10) == []
