"""The CPU time of server processes, with their children, from /proc."""

import os
import subprocess
import sys
import time

from chattrio.bot.proccpu import cpu_seconds, parse_stat, spent, tree_ticks


def test_the_fields_are_read_after_the_command_name_whatever_it_holds():
    # pid (comm) state ppid ... utime stime cutime cstime (fields 14-17 of stat(5))
    stat = "42 (a) (b c) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 100 0 0"
    assert parse_stat(stat) == (7, 11 + 22 + 33 + 44)


def test_a_tree_counts_its_live_descendants_and_nothing_else():
    table = {1: (0, 5), 10: (1, 100), 11: (10, 7), 12: (10, 3), 20: (1, 50), 21: (20, 1)}
    assert tree_ticks(table, 10) == 110
    assert tree_ticks(table, 21) == 1
    assert tree_ticks(table, 99) is None


def test_a_process_tree_on_this_machine(tmp_path):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(60)",
        ]
    )
    try:
        pid_file = tmp_path / "test.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        child_file = tmp_path / "child.pid"
        child_file.write_text(str(child.pid))
        deadline = time.monotonic() + 30
        while (cpu_seconds([str(child_file)])[0] or 0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        own, kid, missing = cpu_seconds([str(pid_file), str(child_file), str(tmp_path / "none.pid")])
        assert kid is not None and kid >= 0.3
        # the child's time is part of this process's tree
        assert own is not None and own >= time.process_time() - 0.02 + kid
        assert missing is None
    finally:
        child.kill()
        child.wait()


def test_spent_needs_every_sample():
    assert spent([1.0, 2.0], [1.5, 2.25]) == 0.75
    assert spent([1.0, None], [1.5, 2.0]) is None
    assert spent([], []) is None
