"""Entry point of one worker process (`--workers N`): a WorkerPlan as JSON on stdin, progress
lines and one final result line as JSON on stdout."""

from __future__ import annotations

import sys

import msgspec
import trio

from chattrio.bot.runner import WorkerPlan, run_worker

_encoder = msgspec.json.Encoder()


def _emit(message: dict) -> None:
    sys.stdout.buffer.write(_encoder.encode(message) + b"\n")
    sys.stdout.buffer.flush()


def main() -> int:
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=WorkerPlan)
    ledger, notes = trio.run(run_worker, plan, lambda snapshot: _emit({"progress": snapshot}))
    _emit({"result": {"ledger": ledger.to_wire(), "notes": notes}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
