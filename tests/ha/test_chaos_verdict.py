"""The chaos verdict's reading of the presence probe (scripts/ha/chaos.py): when presence and the
outbox lock worked again after a fault. Pure logic on records built here; the chaos runs
themselves are tests/ha/test_chaos.py."""

from __future__ import annotations

import importlib.util

from conftest import REPO

_spec = importlib.util.spec_from_file_location("chaos", REPO / "scripts" / "ha" / "chaos.py")
assert _spec is not None and _spec.loader is not None
chaos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos)

FAULT = 1000.0


def _presence(entries: list[tuple[float, float | None]]) -> dict:
    """(entered, joined or None) per probe user, seconds after the fault."""
    return {
        "entries": [{"user": f"u{k}", "node": "n", "at": FAULT + at} for k, (at, _) in enumerate(entries)],
        "joins": {f"u{k}": FAULT + joined for k, (_, joined) in enumerate(entries) if joined is not None},
        "announced": {},
    }


def _room(room_id: int, answered: float, announced: float | None, presence: dict) -> dict:
    if announced is not None:
        presence["announced"][str(room_id)] = FAULT + announced
    attempt = {"node": "n", "at": FAULT + answered - 0.1, "status": 201, "seconds": 0.1}
    return {
        "kind": "room",
        "status": 201,
        "startedAt": FAULT + answered - 0.1,
        "attempts": [attempt],
        "roomId": room_id,
    }


def test_nothing_late_means_working_from_the_fault_on():
    presence = _presence([(1, 1.2), (2, 2.3), (3, 3.1)])
    writes = [_room(7, 1, 1.5, presence)]
    assert chaos.presence_and_outbox_back(presence, writes, FAULT) == {"presence": FAULT, "announcements": FAULT}


def test_back_at_the_first_prompt_one_after_the_last_late_one():
    # entries at 1 and 2 s got their joins only at 11 s; a missing join at 4 s; prompt from 6 s on
    presence = _presence([(1, 11), (2, 11), (3, 3.5), (4, None), (6, 6.4), (7, 7.2)])
    writes = [_room(1, 2, 12, presence), _room(2, 4, 12.1, presence), _room(3, 14, 14.5, presence)]
    back = chaos.presence_and_outbox_back(presence, writes, FAULT)
    assert back == {"presence": FAULT + 6, "announcements": FAULT + 14}


def test_never_back_when_the_last_one_was_late():
    presence = _presence([(1, 1.1), (2, None)])
    writes = [_room(1, 3, None, presence)]
    assert chaos.presence_and_outbox_back(presence, writes, FAULT) == {"presence": None, "announcements": None}


def test_entries_before_the_fault_and_refused_ones_are_not_judged():
    presence = _presence([(-3, None), (1, 1.2)])
    presence["entries"].append({"user": "refused", "node": "n", "at": FAULT + 2, "error": "WsError: closed"})
    writes = [_room(1, -2, None, presence)]
    assert chaos.presence_and_outbox_back(presence, writes, FAULT) == {"presence": FAULT, "announcements": FAULT}


def test_joins_never_announced_counts_only_entries_after_the_fault_that_got_in():
    presence = _presence([(-2, None), (1, 11), (2, None), (3, None)])
    presence["entries"][3]["error"] = "503"  # refused: nobody to announce
    assert chaos.joins_never_announced(presence, FAULT) == 1
