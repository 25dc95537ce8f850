"""Entry point of one worker process (`--workers N`), driven by runner.WorkerProcess with JSON
lines: it writes `ready` once imported, reads its WorkerPlan, then writes progress lines, settle
lines (--until-settled) and one final result line. A `leave` line (or the end of its input)
makes its users leave."""

from __future__ import annotations

import os
import sys

import msgspec
import trio

from chattrio.bot.runner import WorkerPlan, run_worker

_encoder = msgspec.json.Encoder()


def _emit(message: dict) -> None:
    sys.stdout.buffer.write(_encoder.encode(message) + b"\n")
    sys.stdout.buffer.flush()


async def _main() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    _emit({"ready": True})
    buf = b""
    while b"\n" not in buf:
        chunk = await stdin.receive_some(1 << 20)
        if not chunk:
            raise SystemExit("no plan on stdin")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    plan = msgspec.json.decode(line, type=WorkerPlan)
    leave = trio.Event()

    async def listen(rest: bytes) -> None:
        while b"leave\n" not in rest:
            chunk = await stdin.receive_some(1024)
            if not chunk:
                break  # the parent is gone: nobody waits for the grace
            rest += chunk
        leave.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen, rest)
        ledger, notes = await run_worker(
            plan,
            lambda snapshot: _emit({"progress": snapshot}),
            lambda state: _emit({"settle": state}),
            leave,
        )
        nursery.cancel_scope.cancel()
    await stdin.aclose()
    _emit({"result": {"ledger": ledger.to_wire(), "notes": notes}})


def main() -> int:
    trio.run(_main)
    return 0


if __name__ == "__main__":
    sys.exit(main())
