"""The persistence group's reader (aiokafka) against the test stack's broker."""

from __future__ import annotations

import inspect
import types

import pytest
import trio
from aiokafka.consumer.fetcher import Fetcher

from chattrio.config import settings_from_env
from chattrio.models import ChatRecord
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge

ROOM = 7
# Far longer than a record takes to arrive: a fetch that returns with the record was ended by it.
LONG_POLL_MS = 60_000
# aiokafka's own pause before it fetches again while records wait for the caller.
AIOKAFKA_PREFETCH_BACKOFF = 0.1


def _record(text: str) -> ChatRecord:
    return ChatRecord(f"id-{text}", ROOM, "alice", "chat", text, None)


def test_aiokafka_still_reads_the_prefetch_backoff_the_reader_sets():
    """open_topic_reader sets Fetcher._prefetch_backoff, private to the pinned aiokafka: this
    fails as soon as an aiokafka that no longer reads it is installed."""
    assert "prefetch_backoff" in inspect.signature(Fetcher).parameters
    assert "_prefetch_backoff" in Fetcher._proc_fetch_request.__code__.co_names


def test_a_reader_whose_aiokafka_lacks_the_backoff_refuses_to_start():
    consumer = types.SimpleNamespace(_fetcher=types.SimpleNamespace())
    with pytest.raises(RuntimeError, match="_prefetch_backoff"):
        kafka._fetch_only_once_taken(consumer)
    assert not hasattr(consumer._fetcher, "_prefetch_backoff")


async def test_the_reader_sets_the_prefetch_backoff(stack_env, run_prefix):
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-backoff", topic_partitions=1)
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
        async with kafka.open_topic_reader(settings, f"{run_prefix}-backoff") as reader:
            assert reader._consumer._fetcher._prefetch_backoff == kafka.PREFETCH_BACKOFF


async def test_a_caller_that_comes_late_gets_the_next_record_without_waiting_out_a_long_poll(
    stack_env, run_prefix, monkeypatch
):
    """aiokafka fetches a reader's quiet partitions again once a fetched record has waited
    AIOKAFKA_PREFETCH_BACKOFF for the caller; that fetch waits out the long poll at the broker, with
    the busy partition's next record behind it (one fetch in flight per broker). Here the long
    poll is a minute and the caller takes the first record late: the second must still come
    with the caller's next fetch, which gives up long before the long poll ends."""
    monkeypatch.setattr(kafka, "FETCH_LONG_POLL_MS", LONG_POLL_MS)
    monkeypatch.setattr(kafka, "CONNECT_TIMEOUT", 2 * LONG_POLL_MS / 1000)  # aiokafka's request timeout
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-prefetch", topic_partitions=4)
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
        group = f"{run_prefix}-prefetch"
        async with kafka.open_chat_producer(settings) as chat, kafka.open_topic_reader(settings, group) as reader:
            await chat.produce(_record("zero"))
            with trio.fail_after(60):  # joining the group takes a few seconds
                while not (await reader.fetch(1.0)).messages:
                    pass
            await chat.produce(_record("first"))
            await trio.sleep(5 * AIOKAFKA_PREFETCH_BACKOFF)  # the caller comes late
            first = await reader.fetch(LONG_POLL_MS / 1000 / 2)  # returns at once: "first" waits for it
            assert [m.text for _, m in first.messages] == ["first"]
            await chat.produce(_record("second"))
            second = await reader.fetch(LONG_POLL_MS / 1000 / 2)
    assert [m.text for _, m in second.messages] == ["second"], "the record waited behind a long poll"


class _ReportWithoutPosition:
    """A delivery report as librdkafka never should give one: no partition, no offset."""

    def partition(self) -> None:
        return None

    def offset(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


async def test_a_delivery_report_without_a_position_fails_that_send_not_the_delivery_loop():
    producer = kafka.ChatProducer(None, settings_from_env({}))  # type: ignore[arg-type]  # never produces here
    pending = kafka.PendingSend()
    producer._on_delivery(pending, None, _ReportWithoutPosition())  # type: ignore[arg-type]
    producer._settle_reports()
    assert pending.settled and pending.result is None
    assert pending.error == "delivery report without partition or offset"
