"""scripts/lib.sh's pid_matches, which the stack scripts use to tell their own process from a
reused pid. Redis and Sentinel rewrite their command line once at startup, and a read at that
moment sees it empty: `scripts/ha.sh up` once took a live Sentinel for one that had exited.

The checks on the command line are pure logic: `cmdline_of` is replaced by one that answers from
a file, one line per read (the last line repeats), and `pid_alive` by one that says yes.
"""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_WITH_PREPARED_ANSWERS = """
source "$0/scripts/lib.sh"
pid_alive() { true; }
cmdline_of() {  # the "pid" is the file of answers
  local n; n=$(( $(cat "$1.reads") + 1 )); echo "$n" > "$1.reads"
  sed -n "${n}p;\\$p" "$1" | head -n1
}
echo 0 > "$1.reads"
if pid_matches "$1" "$2"; then echo yes; else echo no; fi
cat "$1.reads"
"""


def _pid_matches(tmp_path: Path, answers: list[str], needle: str) -> tuple[bool, int]:
    """pid_matches's verdict when the command line reads `answers` in turn, and how many reads it made."""
    answers_file = tmp_path / "answers"
    answers_file.write_text("".join(line + "\n" for line in answers))
    verdict, reads = subprocess.run(
        ["bash", "-c", _WITH_PREPARED_ANSWERS, str(REPO), str(answers_file), needle],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return verdict == "yes", int(reads)


def test_a_command_line_read_empty_while_the_title_is_rewritten_is_read_again(tmp_path):
    assert _pid_matches(tmp_path, ["", "", "redis-server 127.0.0.1:57471 [sentinel]"], "redis-server") == (True, 3)


def test_a_command_line_that_stays_empty_does_not_match(tmp_path):
    matched, reads = _pid_matches(tmp_path, [""], "redis-server")
    assert not matched
    assert reads > 1


def test_another_program_on_the_pid_does_not_match_and_is_read_once(tmp_path):
    assert _pid_matches(tmp_path, ["sleep 100"], "redis-server") == (False, 1)


def test_a_live_process_matches_its_own_command_line():
    script = 'source "$0/scripts/lib.sh"; pid_matches "$1" "$2" && echo yes'
    out = subprocess.run(
        ["bash", "-c", script, str(REPO), str(os.getpid()), "pytest"],
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == "yes"
