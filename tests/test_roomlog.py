"""RoomLog: what a node's fan-out has seen, so a session resumes without a gap or a duplicate."""

from __future__ import annotations

from chattrio import roomlog
from chattrio.models import Message
from chattrio.roomlog import RECENT_PER_ROOM, RoomLog

PARTITION = 3


def _message(room_id: int, seq: int, message_id: str | None = None) -> Message:
    return Message(message_id or f"m-{room_id}-{seq}", room_id, seq, "alice", "chat", f"text {seq}", None, 0)


def _record(log: RoomLog, room_id: int, seq: int, message_id: str | None = None, partition: int = PARTITION) -> bool:
    return log.record(partition, _message(room_id, seq, message_id), f"frame-{room_id}-{seq}".encode())


def test_empty_log_knows_nothing():
    log = RoomLog()
    assert log.seen("m-1-1") is None
    assert log.covers(1, 0) is False
    assert log.after(1, 0) == []
    assert log.last_seq(1) is None


def test_recorded_messages_are_seen_by_id():
    log = RoomLog()
    assert _record(log, 1, 10) is True
    assert log.seen("m-1-10") == 10
    assert log.last_seq(1) == 10


def test_a_retried_send_is_recorded_once():
    log = RoomLog()
    assert _record(log, 1, 10, "same-id") is True
    assert _record(log, 1, 11, "same-id") is False  # the retry got a new offset but is the same message
    assert log.seen("same-id") == 10
    assert log.after(1, 0) == [(10, b"frame-1-10")]
    assert log.last_seq(1) == 10


def test_after_returns_frames_newer_than_since_in_order():
    log = RoomLog()
    for seq in (5, 9, 12, 20):  # offsets are not contiguous: other rooms share the partition
        _record(log, 1, seq)
    _record(log, 2, 13)
    assert log.after(1, 9) == [(12, b"frame-1-12"), (20, b"frame-1-20")]
    assert log.after(1, 4) == [(s, f"frame-1-{s}".encode()) for s in (5, 9, 12, 20)]
    assert log.after(1, 20) == []
    assert log.after(2, 0) == [(13, b"frame-2-13")]
    assert log.last_seq(1) == 20 and log.last_seq(2) == 13


def test_without_a_start_offset_the_tail_is_complete_from_its_first_message():
    log = RoomLog()
    _record(log, 1, 100)
    _record(log, 1, 105)
    assert log.covers(1, 99) is True  # everything after 99 is held: 100, 105
    assert log.covers(1, 100) is True
    assert log.covers(1, 500) is True
    assert log.covers(1, 98) is False  # seq 99 may exist from before this node started


def test_with_a_start_offset_the_tail_is_complete_from_the_partition_start():
    log = RoomLog()
    log.note_start(PARTITION, 50)
    log.note_start(PARTITION, 70)  # only the first start counts: the consumer resumes, it does not skip
    _record(log, 1, 100)
    assert log.covers(1, 49) is True  # the node read the partition from 50, so room 1 had nothing in 50..99
    assert log.covers(1, 48) is False


def test_start_offset_of_another_partition_does_not_count():
    log = RoomLog()
    log.note_start(PARTITION + 1, 0)
    _record(log, 1, 100)
    assert log.covers(1, 0) is False
    assert log.covers(1, 99) is True


def test_tail_is_bounded_and_completeness_moves_with_it():
    log = RoomLog()
    log.note_start(PARTITION, 0)
    total = RECENT_PER_ROOM + 10
    for seq in range(total):
        _record(log, 1, seq)
    held = log.after(1, -1)
    assert len(held) == RECENT_PER_ROOM
    assert held[0][0] == 10 and held[-1][0] == total - 1
    assert log.covers(1, 9) is True  # seq 10.. held
    assert log.covers(1, 8) is False  # seq 9 was dropped
    assert log.covers(1, -1) is False
    # dropped messages are still recognised as already delivered
    assert log.seen("m-1-0") == 0


def test_events_are_first_time_once():
    log = RoomLog()
    assert log.first_time_event("e1") is True
    assert log.first_time_event("e1") is False
    assert log.first_time_event("e2") is True


def test_remembered_ids_are_bounded(monkeypatch):
    monkeypatch.setattr(roomlog, "IDS_REMEMBERED", 3)
    log = RoomLog()
    for seq in range(5):
        _record(log, 1, seq)
    assert log.seen("m-1-0") is None and log.seen("m-1-1") is None
    assert log.seen("m-1-4") == 4
    for n in range(5):
        log.first_time_event(f"e{n}")
    assert log.first_time_event("e0") is True  # forgotten
    assert log.first_time_event("e4") is False


def test_least_recently_active_room_is_forgotten(monkeypatch):
    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 2)
    log = RoomLog()
    _record(log, 1, 1)
    _record(log, 2, 2)
    _record(log, 1, 3)  # room 1 active again: room 2 is now the oldest
    _record(log, 3, 4)
    assert log.last_seq(2) is None and log.after(2, 0) == [] and log.covers(2, 1) is False
    assert log.last_seq(1) == 3 and log.last_seq(3) == 4


def test_a_forgotten_room_does_not_claim_messages_it_no_longer_holds_without_start(monkeypatch):
    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 1)
    log = RoomLog()
    _record(log, 1, 10)
    _record(log, 2, 11)  # room 1 forgotten
    _record(log, 1, 12)
    assert log.after(1, 9) == [(12, b"frame-1-12")]
    assert log.covers(1, 9) is False  # seq 10 is gone: a resume from 9 must read the store


def test_a_forgotten_room_does_not_claim_messages_it_no_longer_holds(monkeypatch):
    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 1)
    log = RoomLog()
    log.note_start(PARTITION, 0)
    _record(log, 1, 10)
    _record(log, 2, 11)  # room 1 forgotten, with its message 10
    _record(log, 1, 12)
    assert log.after(1, 9) == [(12, b"frame-1-12")]  # 10 is not held any more ...
    assert log.covers(1, 9) is False  # ... so the log must not claim to cover a resume from 9


def test_passed_is_the_last_offset_read_in_the_rooms_partition():
    from chattrio.storage.kafka import partition_of

    log = RoomLog("t.messages")
    assert log.passed(5) is None  # nothing assigned yet
    log.positions.update({("t.messages", p): 100 + p for p in range(4)} | {("t.events", 0): 7})
    assert log.passed(5) == 100 + partition_of(5, 4) - 1
    assert {partition_of(room, 4) for room in range(1, 200)} == {0, 1, 2, 3}


def test_partition_start_is_where_the_fan_out_began_reading_the_rooms_partition():
    from chattrio.storage.kafka import partition_of

    log = RoomLog("t.messages")
    assert log.partition_start(5) is None  # nothing assigned yet
    log.positions.update({("t.messages", p): 100 + p for p in range(4)})
    for p in range(4):
        log.note_start(p, 50 + p)
    log.note_start(partition_of(5, 4), 999)  # later assignments keep the first start
    assert log.partition_start(5) == (partition_of(5, 4), 50 + partition_of(5, 4))


def test_dropped_is_the_newest_message_read_and_no_longer_held(monkeypatch):
    monkeypatch.setattr(roomlog, "RECENT_PER_ROOM", 3)
    log = RoomLog()
    log.note_start(PARTITION, 0)
    for seq in (1, 4, 6):
        _record(log, 1, seq)
    assert log.dropped(1) is None  # everything read is held
    _record(log, 1, 9)
    _record(log, 1, 11)
    assert log.dropped(1) == 4  # 1 and 4 left the tail
    assert log.dropped(2) is None  # a room never read


def test_a_forgotten_room_remembers_what_it_dropped(monkeypatch):
    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 1)
    log = RoomLog()
    _record(log, 1, 10)
    _record(log, 2, 11)  # room 1 forgotten with 10, its newest
    assert log.dropped(1) == 10
    _record(log, 1, 12)
    assert log.dropped(1) == 10
    _record(log, 2, 13)  # forgotten again: now 12 is the newest it held
    assert log.dropped(1) == 12


def test_past_the_rooms_it_remembers_one_by_one_a_partition_floor_keeps_resumes_safe(monkeypatch):
    from chattrio.storage.kafka import partition_of

    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 1)
    monkeypatch.setattr(roomlog, "FORGOTTEN_REMEMBERED", 1)
    log = RoomLog("t.messages")
    log.positions.update({("t.messages", p): 0 for p in range(4)})
    rooms = [room for room in range(1, 100) if partition_of(room, 4) == PARTITION][:4]
    first, second, third, elsewhere = (
        rooms[0],
        rooms[1],
        rooms[2],
        next(r for r in range(1, 100) if partition_of(r, 4) != PARTITION),
    )
    log.note_start(PARTITION, 0)
    assert log.dropped_floor(first) is None  # nothing forgotten yet
    _record(log, first, 10)
    _record(log, second, 11)  # first's tail forgotten, remembered as dropping 10
    assert log.dropped(first) == 10 and log.dropped_floor(first) is None
    _record(log, third, 12)  # second forgotten too: first's entry goes into the partition's floor
    assert log.dropped(first) is None  # no longer named ...
    assert log.dropped_floor(first) == (PARTITION, 11)  # ... so storage must be past 10 first
    assert log.dropped_floor(rooms[3]) == (PARTITION, 11)  # a room never seen here: cannot tell
    assert log.dropped(second) == 11 and log.dropped_floor(second) is None
    assert log.dropped_floor(elsewhere) is None  # the other partitions lost nothing
    _record(log, first, 13)  # back: its tail starts at 13 and does not claim what came before
    assert log.after(first, 9) == [(13, b"frame-%d-13" % first)]
    assert log.covers(first, 9) is False and log.covers(first, 12) is True


def _quiet_log(start: int = 50) -> tuple[RoomLog, int]:
    """A log whose fan-out started every partition at `start`, and a room of PARTITION."""
    from chattrio.storage.kafka import partition_of

    log = RoomLog("t.messages")
    log.positions.update({("t.messages", p): start for p in range(4)})
    for p in range(4):
        log.note_start(p, start)
    room = next(r for r in range(1, 100) if partition_of(r, 4) == PARTITION)
    return log, room


def test_a_quiet_rooms_newest_seq_is_remembered_until_the_fan_out_reads_one_of_its_messages():
    log, room = _quiet_log()
    assert log.quiet_start(room) == (PARTITION, 50)
    assert log.quiet_last_seq(room) == (False, None)
    log.remember_quiet(room, 42)
    assert log.quiet_last_seq(room) == (True, 42)
    _record(log, room, 55)
    assert log.quiet_start(room) is None
    assert log.quiet_last_seq(room) == (False, None)
    log.remember_quiet(room, 42)  # a lookup that began before the message came in
    assert log.quiet_last_seq(room) == (False, None)


def test_an_empty_quiet_room_is_remembered_as_empty():
    log, room = _quiet_log()
    log.remember_quiet(room, None)
    assert log.quiet_last_seq(room) == (True, None)


def test_a_seq_at_or_past_the_fan_outs_start_is_not_remembered_as_quiet():
    log, room = _quiet_log(start=50)
    log.remember_quiet(room, 50)  # stored, but not read by this fan-out yet
    assert log.quiet_last_seq(room) == (False, None)


def test_a_new_partition_forgets_the_quiet_rooms():
    log, room = _quiet_log()
    log.remember_quiet(room, 42)
    log.positions[("t.messages", 4)] = 0
    log.note_start(4, 0)  # rooms now map to other partitions
    assert log.quiet_last_seq(room) == (False, None)


def test_a_room_forgotten_by_the_log_is_not_quiet(monkeypatch):
    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 1)
    log, room = _quiet_log()
    _record(log, room, 60)
    _record(log, room + 1, 61)  # another room pushes the first out of the log
    assert log.last_seq(room) is None
    assert log.quiet_start(room) is None


def test_quiet_rooms_are_remembered_up_to_a_bound(monkeypatch):
    monkeypatch.setattr(roomlog, "QUIET_ROOMS_REMEMBERED", 2)
    log, _ = _quiet_log()
    for room in (1, 2, 3):
        log.remember_quiet(room, room)
    assert [log.quiet_last_seq(room)[0] for room in (1, 2, 3)] == [False, True, True]
