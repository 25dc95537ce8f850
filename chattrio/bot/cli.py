"""`python -m chattrio bot ...`: run a load test and report. Exit status: 0 passed, 1 the
thresholds (loss, duplicates, reordering, users not resumed, p99) were exceeded, 2 bad
configuration or the run could not start."""

from __future__ import annotations

import shlex
import sys

import trio

from chattrio.bot.config import load_config
from chattrio.bot.report import append_bench_record, summarize, text_summary, write_records, write_reports
from chattrio.bot.runner import Progress, run
from chattrio.bot.stats import Histogram


def progress_text(t: float, p: Progress, last_second: Histogram) -> str:
    p99 = f"{last_second.percentile(99) / 1000:.1f} ms" if last_second.count else "-"
    return (
        f"[{t:6.1f}s] users {p.connected} ok {p.failed} failed {p.live} live"
        f" | sent {p.sent} acked {p.acked} | delivered {p.delivered} (p99 {p99} in the last second)"
        f" | reconnects {p.reconnects}"
    )


def _progress_printer(t: float, p: Progress, last_second: Histogram) -> None:
    sys.stderr.write(f"\r{progress_text(t, p, last_second)}   ")
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
    if cfg.records_file:
        write_records(outcome, summary, cfg.records_file)
        print(f"records    {cfg.records_file}")
    if cfg.bench_log:
        append_bench_record(summary, cfg.bench_log)
        print(f"bench log  record appended to {cfg.bench_log}")
    return 0 if summary["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
