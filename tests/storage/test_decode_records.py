"""Decoding fetched records (pure): a record that does not decode is set aside, never raised."""

from __future__ import annotations

from collections import namedtuple

from chattrio.models import ChatRecord, chat_record_encoder
from chattrio.storage.kafka import ReadBatch, decode_records

Record = namedtuple("Record", "offset timestamp value")
TOPICS = ("p.messages", "p.events")


def test_undecodable_records_and_tombstones_are_set_aside_and_reading_goes_on():
    """A tombstone (no value) raised TypeError, which crash-looped the fan-out and persistence."""
    fine = chat_record_encoder.encode(ChatRecord("id-1", 7, "alice", "chat", "fine", None))
    records = [Record(5, 100, None), Record(6, 101, b"{not json"), Record(7, 102, b'["short"]'), Record(8, 103, fine)]
    batch = ReadBatch([], [], {})
    decode_records("p.messages", 2, records, batch, TOPICS)
    assert [(partition, m.seq, m.text) for partition, m in batch.messages] == [(2, 8, "fine")]
    assert [(d.topic, d.partition, d.offset, d.timestamp, d.value) for d in batch.undecodable] == [
        ("p.messages", 2, 5, 100, None),
        ("p.messages", 2, 6, 101, b"{not json"),
        ("p.messages", 2, 7, 102, b'["short"]'),
    ]
    assert all(d.reason for d in batch.undecodable)
    assert batch.positions == {("p.messages", 2): 9}


def test_an_undecodable_event_is_set_aside():
    batch = ReadBatch([], [], {})
    decode_records("p.events", 0, [Record(3, 100, b'{"type": "no_such_event"}')], batch, TOPICS)
    assert batch.events == [] and [d.offset for d in batch.undecodable] == [3]
