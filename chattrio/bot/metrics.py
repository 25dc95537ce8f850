"""Server-side figures: each node's /metrics (Prometheus text) and, on this machine, the RSS
of node processes named by pid files."""

from __future__ import annotations

from pathlib import Path

import trio

from chattrio.bot.http import HttpError, HttpPool


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line (comments, blanks and junk skipped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            name, _, rest = line.rpartition("}")
            name += "}"
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not fields:
            continue
        try:
            samples[name.strip()] = float(fields[0])
        except ValueError:
            continue
    return samples


async def scrape(pools: list[HttpPool]) -> list[dict[str, float] | None]:
    """One snapshot per node, None for a node that did not answer (e.g. it was killed)."""
    results: list[dict[str, float] | None] = [None] * len(pools)

    async def one(i: int, pool: HttpPool) -> None:
        try:
            response = await pool.request("GET", "/metrics")
        except (HttpError, OSError, trio.TooSlowError):
            return
        if response.status == 200:
            results[i] = parse_prometheus(response.body.decode("utf-8", "replace"))

    async with trio.open_nursery() as nursery:
        for i, pool in enumerate(pools):
            nursery.start_soon(one, i, pool)
    return results


def metric_deltas(start: dict[str, float] | None, end: dict[str, float] | None) -> dict[str, float]:
    """end - start for every sample present at the end (a sample new at the end counts from 0)."""
    if end is None:
        return {}
    start = start or {}
    return {k: v - start.get(k, 0.0) for k, v in end.items()}


def read_rss(pid_files: list[str]) -> list[int | None]:
    """Resident set size in bytes of each pid file's process (None when unreadable)."""
    out: list[int | None] = []
    for pid_file in pid_files:
        try:
            pid = int(Path(pid_file).read_text().split()[0])
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError, IndexError):
            out.append(None)
            continue
        rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), None)
        out.append(rss)
    return out
