"""CPU time of server processes on this machine, read from /proc: a node, or a backing service
with its children (PostgreSQL serves each connection from a child process).

A process's time is its own user and system time plus that of its children, the live ones
(walked through /proc) and those it has already waited for (cutime, cstime). Elsewhere than
Linux, or for a pid file that cannot be read, there is no figure (None)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

PROC = Path("/proc")


def parse_stat(stat: str) -> tuple[int, int]:
    """(parent pid, clock ticks of the process and its waited-for children) from /proc/PID/stat.
    The command name may hold spaces and parentheses: the fields start after the last ')'."""
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state; ppid is field 4 of stat(5), utime..cstime fields 14-17
    return int(fields[1]), sum(int(v) for v in fields[11:15])


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, ticks) of every process readable now."""
    table = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            table[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    return table


def tree_ticks(table: dict[int, tuple[int, int]], root: int) -> int | None:
    """Ticks of `root` and every live descendant in `table`, None when `root` is not there."""
    if root not in table:
        return None
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += table[pid][1]
        todo += children.get(pid, [])
    return total


def read_pid_file(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid_files: list[str]) -> list[float | None]:
    """CPU seconds so far of each pid file's process tree (None when unreadable)."""
    if not pid_files:
        return []
    table = _process_table()
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    out: list[float | None] = []
    for path in pid_files:
        pid = read_pid_file(path)
        ticks = tree_ticks(table, pid) if pid is not None else None
        out.append(None if ticks is None else ticks / ticks_per_second)
    return out


def spent(before: list[float | None], after: list[float | None]) -> float | None:
    """CPU seconds spent between two samples, over all processes; None when any is missing."""
    pairs = [(a, b) for a, b in zip(after, before) if a is not None and b is not None]
    if not before or len(before) != len(after) or len(pairs) != len(before):
        return None
    return round(sum(a - b for a, b in pairs), 3)
