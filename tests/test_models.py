"""Message ids: a retried SEND gets the same id on every node, as uuid5 of its sender, room and
clientMsgId (ids already stored were made with uuid.uuid5, so the fast path must equal it)."""

from __future__ import annotations

import uuid

from chattrio.models import MESSAGE_ID_NAMESPACE, message_id


def test_a_send_with_a_client_msg_id_gets_the_uuid5_of_sender_room_and_client_msg_id():
    for sender, room, client_msg_id in [("alice", 1, "c1"), ("bøb", 2**31, "é-日本"), ("x" * 64, 0, "")]:
        expected = uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{sender}\x00{room}\x00{client_msg_id}")
        assert message_id(sender, room, client_msg_id) == str(expected)
        assert uuid.UUID(message_id(sender, room, client_msg_id)).version == 5


def test_ids_differ_by_sender_room_and_client_msg_id():
    ids = {message_id(sender, room, cmid) for sender in ("a", "b") for room in (1, 2) for cmid in ("x", "y")}
    assert len(ids) == 8


def test_a_send_without_a_client_msg_id_gets_a_fresh_random_id():
    first, second = message_id("alice", 1, None), message_id("alice", 1, None)
    assert first != second and uuid.UUID(first).version == 4
