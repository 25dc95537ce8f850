"""The listener's accept loop (a stand-in listener: the loop's logic only; every other listener
test runs a real node)."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from chattrio.config import Settings
from chattrio.metrics import Registry
from chattrio.transport import listener as listener_module
from chattrio.transport.listener import CONNECTION_TASK, HttpServer
from chattrio.transport.sessions import SessionRegistry


class _Listener:
    """Answers accept() with the given streams or errors in turn, then waits forever."""

    def __init__(self, *answers: object) -> None:
        self._answers = list(answers)

    async def accept(self) -> object:
        await trio.lowlevel.checkpoint()
        if not self._answers:
            await trio.sleep_forever()
        answer = self._answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _server(handled: list[tuple[object, str]]) -> HttpServer:
    server = HttpServer(Settings(), None, None, SessionRegistry(), Registry())  # type: ignore[arg-type]

    async def handle(stream: object) -> None:
        handled.append((stream, trio.lowlevel.current_task().name))

    server._handle_connection = handle  # type: ignore[method-assign]
    return server


async def test_each_connection_gets_a_task_and_running_out_of_descriptors_only_pauses(autojump_clock):
    handled: list[tuple[object, str]] = []
    server = _server(handled)
    listener = _Listener("first", OSError(errno.EMFILE, "Too many open files"), "second")
    async with trio.open_nursery() as connections:
        connections.start_soon(server._accept, listener, connections)
        await trio.sleep(listener_module.ACCEPT_RETRY_SECONDS * 2)
        connections.cancel_scope.cancel()
    assert handled == [("first", CONNECTION_TASK), ("second", CONNECTION_TASK)]


async def test_another_accept_error_ends_the_loop():
    server = _server([])
    with pytest.raises(OSError, match="Bad file descriptor"):
        await server._accept(_Listener(OSError(errno.EBADF, "Bad file descriptor")), None)  # type: ignore[arg-type]
