"""chattrio against Centrifugo: the figures of `scripts/bench.sh peers` (scripts/peers.sh).

    python -m chattrio.bot.compare quiet SYSTEM SECONDS N_NODES PIDFILE...
        the CPU of the nodes (the first N_NODES pid files) and of the backing services (the
        rest) over SECONDS with no client, as one JSON record
    python -m chattrio.bot.compare table LOG FIXED_N COMMAND
        the comparison of the runs recorded in LOG as a markdown table
    python -m chattrio.bot.compare record LOG FIXED_N COMMAND
        the same as one JSON record (for bench-results/runs.jsonl)

Each figure is given per run for both systems, and as the ratio of the medians, chattrio over
Centrifugo: below 1 means chattrio needed less (or, for N and rates, reached less).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from chattrio.bot.proccpu import cpu_seconds, spent

SYSTEMS = ("chattrio", "centrifugo")
NAMES = {"chattrio": "chattrio", "centrifugo": "Centrifugo"}
CPU_PER_DELIVERY_N = 100  # the seed step whose CPU per delivery is compared (if it ran)


def quiet(system: str, seconds: float, node_pid_files: list[str], service_pid_files: list[str]) -> dict:
    load = os.getloadavg()[0]
    before = cpu_seconds(node_pid_files), cpu_seconds(service_pid_files)
    time.sleep(seconds)
    after = cpu_seconds(node_pid_files), cpu_seconds(service_pid_files)
    nodes, services = spent(before[0], after[0]), spent(before[1], after[1])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "system": system,
        "scenario": "peers-quiet",
        "seconds": seconds,
        "machine": {"loadAverageBefore": round(load, 1)},
        "nodes": len(node_pid_files),
        "nodesCores": None if nodes is None else round(nodes / seconds, 4),
        "servicesCores": None if services is None else round(services / seconds, 4),
    }


def seed_ramps(records: list[dict]) -> list[list[dict]]:
    """One system's seed runs split into ramps: a ramp starts again when N does not grow."""
    ramps: list[list[dict]] = []
    for r in records:
        if not ramps or r["parameters"]["users"] <= ramps[-1][-1]["parameters"]["users"]:
            ramps.append([])
        ramps[-1].append(r)
    return ramps


def _get(record: dict, *path: str) -> float | None:
    value: object = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class Figure:
    label: str
    values: dict[str, list[float]]  # system -> one value per run
    digits: int = 1

    def ratio(self) -> float | None:
        a, b = self.values.get("chattrio"), self.values.get("centrifugo")
        if not a or not b or statistics.median(b) == 0:
            return None
        return round(statistics.median(a) / statistics.median(b), 2)

    def cell(self, system: str) -> str:
        values = self.values.get(system) or []
        return "; ".join(f"{v:,.{self.digits}f}" for v in values) or "–"


def figures(records: list[dict], fixed_n: int) -> list[Figure]:
    by: dict[str, dict[str, list[dict]]] = {s: {} for s in SYSTEMS}
    for r in records:
        if r.get("system") in by:
            by[r["system"]].setdefault(r["scenario"], []).append(r)

    def per_run(scenario: str, value: Callable[[dict], float | None], keep=lambda r: True) -> dict[str, list[float]]:
        out = {}
        for s in SYSTEMS:
            vals = [value(r) for r in by[s].get(scenario, []) if keep(r)]
            out[s] = [v for v in vals if v is not None]
        return out

    def largest(s: str) -> list[float]:
        return [
            max((r["parameters"]["users"] for r in ramp if r["passed"]), default=0)
            for ramp in seed_ramps(by[s].get("peers-seed", []))
        ]

    def users_are(n: int):
        return lambda r: r["parameters"]["users"] == n

    def idle_cores(group: str):
        """Over the hold window when the run had one (the sessions alone, after the ramp's joins),
        else over the whole chat."""

        def cores(r: dict) -> float | None:
            window = r["parameters"].get("holdWindowSeconds")
            spent = _get(r, "serverCpu", group, "holdSeconds" if window else "chatSeconds")
            return None if spent is None else spent / (window or r["parameters"]["chatSeconds"])

        return cores

    def idle_per_node(r: dict) -> float | None:
        value, nodes = idle_cores("nodes")(r), r["parameters"].get("nodes")
        return None if value is None or not nodes else value / nodes

    def per_node(r: dict) -> float | None:
        value, nodes = _get(r, "nodesCores"), r.get("nodes")
        return None if value is None or not nodes else value / nodes

    idle_users = next((r["parameters"]["users"] for s in SYSTEMS for r in by[s].get("peers-idle", [])), 0)
    seed_cpu_n = CPU_PER_DELIVERY_N
    return [
        Figure("seed: largest passing N (one per ramp)", {s: largest(s) for s in SYSTEMS}, 0),
        Figure(
            f"seed N={fixed_n}: end-to-end p99, ms",
            per_run("peers-seed", lambda r: _get(r, "endToEndMs", "p99"), users_are(fixed_n)),
        ),
        Figure(
            f"seed N={seed_cpu_n}: node CPU per delivery, µs",
            per_run("peers-seed", lambda r: _get(r, "serverCpu", "perDeliveryUs", "nodes"), users_are(seed_cpu_n)),
        ),
        Figure(
            f"seed N={seed_cpu_n}: nodes + backing services CPU per delivery, µs",
            per_run(
                "peers-seed", lambda r: _get(r, "serverCpu", "perDeliveryUs", "withServices"), users_are(seed_cpu_n)
            ),
        ),
        Figure("rooms: end-to-end p50, ms", per_run("peers-rooms", lambda r: _get(r, "endToEndMs", "p50")), 1),
        Figure("rooms: end-to-end p99, ms", per_run("peers-rooms", lambda r: _get(r, "endToEndMs", "p99")), 1),
        Figure("rooms: users connected", per_run("peers-rooms", lambda r: _get(r, "usersConnected")), 0),
        Figure("rooms: lost deliveries", per_run("peers-rooms", lambda r: _get(r, "lost")), 0),
        Figure(
            "rooms: node CPU per delivery, µs",
            per_run("peers-rooms", lambda r: _get(r, "serverCpu", "perDeliveryUs", "nodes")),
        ),
        Figure(
            "rooms: nodes + backing services CPU per delivery, µs",
            per_run("peers-rooms", lambda r: _get(r, "serverCpu", "perDeliveryUs", "withServices")),
        ),
        Figure(
            f"connecting {idle_users:,} users: connected",
            per_run("peers-idle", lambda r: _get(r, "usersConnected")),
            0,
        ),
        Figure(
            f"connecting {idle_users:,} users: per second",
            per_run("peers-idle", lambda r: _get(r, "connectPerSecond")),
            0,
        ),
        Figure(
            f"connecting {idle_users:,} users: node CPU per connection, ms",
            per_run("peers-idle", lambda r: _get(r, "serverCpu", "perConnectionMs", "nodes")),
            2,
        ),
        Figure(
            f"connecting {idle_users:,} users: nodes + services CPU per connection, ms",
            per_run("peers-idle", lambda r: _get(r, "serverCpu", "perConnectionMs", "withServices")),
            2,
        ),
        Figure(f"idle, {idle_users:,} sessions: nodes, cores", per_run("peers-idle", idle_cores("nodes")), 3),
        Figure(f"idle, {idle_users:,} sessions: cores per node", per_run("peers-idle", idle_per_node), 4),
        Figure(
            f"idle, {idle_users:,} sessions: backing services, cores", per_run("peers-idle", idle_cores("services")), 3
        ),
        Figure("idle, no client: nodes, cores", per_run("peers-quiet", lambda r: _get(r, "nodesCores")), 3),
        Figure("idle, no client: cores per node", per_run("peers-quiet", per_node), 4),
        Figure(
            "idle, no client: backing services, cores", per_run("peers-quiet", lambda r: _get(r, "servicesCores")), 3
        ),
        Figure(
            "idle: node memory per connection, KiB",
            per_run("peers-idle", lambda r: _get(r, "parameters", "memoryPerConnectionKiB")),
        ),
    ]


def load_range(records: list[dict]) -> str:
    loads = [r["machine"]["loadAverageBefore"] for r in records if "machine" in r]
    return f"{min(loads)}-{max(loads)}" if loads else "?"


def table(records: list[dict], fixed_n: int, command: str) -> str:
    lines = [
        f"Command: `{command}`; {len(records)} runs, {records[0]['date'] if records else '?'} to "
        f"{records[-1]['date'] if records else '?'} UTC; the machine's 1-minute load average before each run: "
        f"{load_range(records)}.",
        "",
        "| | chattrio (each run) | Centrifugo (each run) | chattrio / Centrifugo (medians) |",
        "|---|---|---|---|",
    ]
    for f in figures(records, fixed_n):
        if not any(f.values.values()):  # a scenario left out of this comparison (PEERS_PARTS)
            continue
        ratio = f.ratio()
        lines.append(
            f"| {f.label} | {f.cell('chattrio')} | {f.cell('centrifugo')} | {'–' if ratio is None else ratio} |"
        )
    return "\n".join(lines) + "\n"


def record(records: list[dict], fixed_n: int, command: str) -> dict:
    return {
        "date": records[-1]["date"] if records else None,
        "scenario": "peers (result)",
        "runs": len(records),
        "loadAverageBefore": load_range(records),
        "figures": [
            {"figure": f.label, **{s: f.values.get(s, []) for s in SYSTEMS}, "ratio": f.ratio()}
            for f in figures(records, fixed_n)
        ],
        "command": command,
    }


def read_log(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "quiet":
        system, seconds, n_nodes, pid_files = argv[1], float(argv[2]), int(argv[3]), argv[4:]
        print(json.dumps(quiet(system, seconds, pid_files[:n_nodes], pid_files[n_nodes:])))
        return 0
    if len(argv) == 4 and argv[0] in ("table", "record"):
        records = read_log(argv[1])
        if argv[0] == "table":
            sys.stdout.write(table(records, int(argv[2]), argv[3]))
        else:
            print(json.dumps(record(records, int(argv[2]), argv[3])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
