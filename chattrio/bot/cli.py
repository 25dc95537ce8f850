"""`python -m chattrio bot ...`: run a load test and report. Exit status: 0 passed, 1 the
thresholds (loss, duplicates, reordering, p99) were exceeded, 2 bad configuration or the run
could not start."""

from __future__ import annotations

import shlex
import sys

import trio

from chattrio.bot.config import load_config
from chattrio.bot.report import append_bench_row, summarize, text_summary, write_reports
from chattrio.bot.runner import run


def _progress_printer(t: float, p: dict[str, int]) -> None:
    sys.stderr.write(
        f"\r[{t:6.1f}s] users {p.get('connected', 0)} ok {p.get('failed', 0)} failed {p.get('live', 0)} live"
        f" | sent {p.get('sent', 0)} acked {p.get('acked', 0)} | delivered {p.get('delivered', 0)}"
        f" | reconnects {p.get('reconnects', 0)}   "
    )
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    if argv == ["--receive-bench"]:
        from chattrio.bot.selfbench import receive_bench

        return receive_bench()
    if argv == ["--socket-bench"]:
        from chattrio.bot.socketbench import socket_bench

        return socket_bench()
    try:
        cfg = load_config(argv)
    except ValueError as exc:
        print(f"chattrio bot: {exc}", file=sys.stderr)
        return 2
    cfg.command_line = shlex.join(["python", "-m", "chattrio", "bot", *argv])
    live = _progress_printer if sys.stderr.isatty() else None
    try:
        outcome = trio.run(run, cfg, live)
    except RuntimeError as exc:
        print(f"\nchattrio bot: {exc}", file=sys.stderr)
        return 2
    if live is not None:
        sys.stderr.write("\n")
    summary = summarize(outcome)
    print(text_summary(summary))
    json_path, html_path = write_reports(summary, cfg.output_dir)
    print(f"reports    {json_path}  {html_path}")
    if cfg.bench_log:
        append_bench_row(summary, cfg.bench_log)
        print(f"bench log  row appended to {cfg.bench_log}")
    return 0 if summary["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
