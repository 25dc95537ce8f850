"""The room list's page over rooms in memory: what a node answers from the Redis cache while
PostgreSQL is down, with the same order, cursor and search as the SQL."""

from chattrio.models import Room
from chattrio.rooms import page_of_rooms

ROOMS = [
    Room(i, name, "x", "")
    for i, name in [(1, "General"), (2, "random"), (3, "gen-2"), (4, "Off topic"), (5, "GENERATIONS")]
]


def _ids(rooms: list[Room]) -> list[int]:
    return [room.id for room in rooms]


def test_newest_first_limited():
    assert _ids(page_of_rooms(ROOMS, 2, None, "")) == [5, 4]


def test_the_cursor_continues_below_the_last_id():
    assert _ids(page_of_rooms(ROOMS, 2, 4, "")) == [3, 2]
    assert _ids(page_of_rooms(ROOMS, 10, 1, "")) == []


def test_search_is_a_case_insensitive_substring():
    assert _ids(page_of_rooms(ROOMS, 10, None, "gen")) == [5, 3, 1]
    assert _ids(page_of_rooms(ROOMS, 10, None, "TOPIC")) == [4]
    assert _ids(page_of_rooms(ROOMS, 1, 5, "gen")) == [3]
