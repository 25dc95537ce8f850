"""`python -m chattrio.bot.results [FILE] [SCENARIO ...]`: the latest runs of each scenario in a
results file (JSON Lines, as the bot's `--bench-log` and scripts/bench.sh write them) as markdown
tables, to bring docs/benchmarks.md up to date by hand."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

DEFAULT_FILE = "bench-results/runs.jsonl"
LATEST = 6  # runs per scenario

HEADER = (
    "| date | commit | cores busy | deliveries/s | e2e p50 / p99 / max ms | ACK p99 ms "
    "| lost / dup / reorder | users ok / failed | reconnects | result |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)
NOTE_HEADER = "| date | commit | result |\n|---|---|---|\n"


def read_records(lines: Iterable[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.strip()]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _run_row(r: dict) -> str:
    e2e = r["endToEndMs"]
    latency = " / ".join(_ms(e2e[p]) for p in ("p50", "p99", "max")) if e2e else "-"
    reconnects = str(r["reconnects"])
    if r["reconnectMs"]:
        reconnects += f" (p50 {_ms(r['reconnectMs']['p50'])} / max {_ms(r['reconnectMs']['max'])} ms)"
    cells = [
        r["date"],
        r["commit"],
        str(r["machine"].get("chatBusyCores", "-")),
        "-" if r["deliveriesPerSecond"] is None else f"{r['deliveriesPerSecond']:,.0f}",
        latency,
        _ms(r["ackP99Ms"]),
        f"{r['lost']} / {r['duplicates']} / {r['outOfOrder']}",
        f"{r['usersConnected']} / {r['usersFailed']}",
        reconnects,
        "pass" if r["passed"] else "fail",
    ]
    return "| " + " | ".join(cells) + " |\n"


def _note_row(r: dict) -> str:
    return f"| {r['date']} | {r['commit']} | {r['result']} |\n"


def tables(records: list[dict], scenarios: list[str], latest: int = LATEST) -> str:
    """One table per scenario (all of them, in order of first appearance, when none is named)."""
    names = scenarios or list(dict.fromkeys(r["scenario"] for r in records))
    parts = []
    for name in names:
        runs = [r for r in records if r["scenario"] == name][-latest:]
        if not runs:
            continue
        notes = "result" in runs[-1]  # bench.sh's records of results that are not one bot run
        rows = "".join(_note_row(r) if notes else _run_row(r) for r in runs)
        parts.append(f"### {name}\n\n" + (NOTE_HEADER if notes else HEADER) + rows)
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    path, scenarios = (argv[0], argv[1:]) if argv else (DEFAULT_FILE, [])
    try:
        with open(path) as results:
            records = read_records(results)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"chattrio.bot.results: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    try:
        print(tables(records, scenarios), end="")
    except KeyError as exc:  # bench-results/history.jsonl keeps the older table's fields
        print(f"chattrio.bot.results: {path} is not in the bot's record format (no {exc})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
