"""Session deadlines: the node's one task closes each session when its token expires, or when no
AUTH came in time (mock clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from chattrio.transport import expiry as expiry_module
from chattrio.transport.expiry import EXPIRED_REASON, SessionDeadlines
from chattrio.transport.sessions import Session
from chattrio.transport.websocket import CLOSE_POLICY_VIOLATION, CLOSE_TOKEN_EXPIRED


@asynccontextmanager
async def _running_deadlines() -> AsyncIterator[SessionDeadlines]:
    """SessionDeadlines with its task running until the block ends."""
    deadlines = SessionDeadlines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        yield deadlines
        nursery.cancel_scope.cancel()


def _closed_for_expiry(session: Session) -> bool:
    return session.closing and session.close_code == CLOSE_TOKEN_EXPIRED


async def test_a_session_is_closed_when_its_token_expires_and_not_before(autojump_clock):
    early, late = Session("alice", 1 << 20), Session("bob", 1 << 20)
    async with _running_deadlines() as expiry:
        await trio.testing.wait_all_tasks_blocked()
        expiry.watch(late, trio.current_time() + 20)
        expiry.watch(early, trio.current_time() + 10)  # earlier than the task's wait: it wakes sooner
        await trio.sleep(9.9)
        assert not early.closing and not late.closing
        await trio.sleep(0.2)
        assert _closed_for_expiry(early) and not late.closing
        await trio.sleep(10)
        assert _closed_for_expiry(late)
    assert early._pending[-1].endswith(EXPIRED_REASON.encode())


async def test_a_forgotten_session_is_left_alone_and_a_moved_deadline_counts(autojump_clock):
    gone, renewed = Session("alice", 1 << 20), Session("bob", 1 << 20)
    async with _running_deadlines() as expiry:
        now = trio.current_time()
        expiry.watch(gone, now + 5)
        expiry.watch(renewed, now + 5)
        expiry.watch(renewed, now + 50)  # AUTH with a new token
        expiry.forget(gone)  # the session ended
        await trio.sleep(49)
        assert not gone.closing and not renewed.closing
        await trio.sleep(2)
        assert _closed_for_expiry(renewed)
        assert not gone.closing


async def test_an_auth_deadline_closes_with_its_own_reason_unless_auth_moved_it(autojump_clock):
    silent, authenticated = Session("", 1 << 20), Session("", 1 << 20)
    async with _running_deadlines() as expiry:
        now = trio.current_time()
        for session in (silent, authenticated):
            expiry.watch(session, now + 10, CLOSE_POLICY_VIOLATION, "no AUTH frame within 10 s")
        expiry.watch(authenticated, now + 3600)  # its AUTH came: the token's expiry replaces the deadline
        await trio.sleep(11)
        assert silent.closing and silent.close_code == CLOSE_POLICY_VIOLATION
        assert silent._pending[-1].endswith(b"no AUTH frame within 10 s")
        assert not authenticated.closing
        await trio.sleep(3600)
        assert _closed_for_expiry(authenticated)


def test_the_entries_of_ended_sessions_do_not_pile_up(monkeypatch):
    monkeypatch.setattr(expiry_module, "COMPACT_SLACK", 10)
    expiry = SessionDeadlines()
    live = Session("alice", 1 << 20)
    expiry.watch(live, 1000.0)
    for n in range(500):
        ended = Session(f"user-{n}", 1 << 20)
        expiry.watch(ended, 2000.0 + n)
        expiry.forget(ended)
    assert len(expiry._heap) <= 2 * 1 + 10 + 1
    expiry.expire(1000.0)
    assert _closed_for_expiry(live)
