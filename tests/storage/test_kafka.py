"""The persistence group's reader (aiokafka) against the test stack's broker."""

from __future__ import annotations

import trio

from chattrio.config import settings_from_env
from chattrio.models import ChatRecord
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge

ROOM = 7


def _record(text: str) -> ChatRecord:
    return ChatRecord(f"id-{text}", ROOM, "alice", "chat", text, None)


async def test_a_caller_that_comes_late_gets_the_next_record_without_waiting_out_a_long_poll(stack_env, run_prefix):
    """aiokafka fetched a reader's quiet partitions again once a fetched record had waited 0.1 s
    for the caller. That fetch waited out the long poll (0.5 s) at the broker, with the busy
    partition's next record behind it: under load, messages reached the fan-out up to 0.5 s late.
    Here the caller takes the first record 0.15 s late; the second must not wait for the rest of
    that long poll (about 0.45 s) but arrive as soon as it is stored."""
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-prefetch", topic_partitions=4)
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
        group = f"{run_prefix}-prefetch"
        async with kafka.open_chat_producer(settings) as chat, kafka.open_topic_reader(settings, group) as reader:
            await chat.produce(_record("zero"))
            with trio.fail_after(20):  # joining the group takes a few seconds
                while not (await reader.fetch(1.0)).messages:
                    pass
            await chat.produce(_record("first"))
            await trio.sleep(0.15)
            first = await reader.fetch(1.0)
            assert [m.text for _, m in first.messages] == ["first"]
            produced_at = trio.current_time()
            await chat.produce(_record("second"))
            second = await reader.fetch(1.0)
            waited = trio.current_time() - produced_at
    assert [m.text for _, m in second.messages] == ["second"]
    assert waited < 0.25, f"the second record took {waited:.3f} s"
