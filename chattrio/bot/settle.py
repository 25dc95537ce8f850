"""Ending the loss grace once the run has settled (`--until-settled`), instead of waiting it out.

After the chat no user sends anything new. The run has settled when every user that joined is
in its room again with every SEND answered, and holds every acknowledged message of its room:
then waiting longer can change no count. Users of one room may live in different workers, so
each worker reports what it knows and the parent decides:

- `acked`: per room, the highest seq acknowledged to the worker's users. Once no worker has a
  user still unsettled (a SEND unanswered, or a connection being opened), no new seq is acked,
  and the highest of all workers is the room's last message.
- `held`: per room, the lowest of the worker's users' highest seq held. Messages reach a member
  in seq order, so a user holding a seq at or past the room's last one has had every message
  it will ever get: one it lacks was lost, and is counted so, rather than waited for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec


class SettleState(msgspec.Struct, frozen=True):
    """One worker's report, from the end of the chat on."""

    unsettled: int  # users still joining, reconnecting, or with a SEND unanswered
    acked: dict[int, int]  # room -> highest seq acknowledged to this worker's users
    held: dict[int, int]  # room -> lowest highest-seq held by this worker's users in it


class Member(Protocol):
    """What `SettleState.of` reads of a user (chattrio.bot.user.SimUser)."""

    room_id: int

    def unsettled(self) -> bool: ...

    def highest_held(self) -> int | None: ...


def state_of(users: Iterable[Member], acked: dict[int, int]) -> SettleState:
    unsettled = 0
    held: dict[int, int] = {}
    for user in users:
        if user.unsettled():
            unsettled += 1
            continue
        highest = user.highest_held()
        if highest is None:
            continue  # it failed to join, or joined nothing: it holds nothing
        held[user.room_id] = min(held.get(user.room_id, highest), highest)
    return SettleState(unsettled, dict(acked), held)


def settled(states: list[SettleState | None]) -> bool:
    """True when every worker has reported, none has an unsettled user, and in every room every
    worker's users hold the highest seq acknowledged to anyone."""
    if any(state is None or state.unsettled for state in states):
        return False
    last: dict[int, int] = {}
    for state in states:
        assert state is not None
        for room, seq in state.acked.items():
            last[room] = max(last.get(room, seq), seq)
    return all(
        state.held.get(room, seq) >= seq
        for state in states
        if state is not None
        for room, seq in last.items()
        if room in state.held
    )
