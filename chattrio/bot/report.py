"""Turning a run into figures: a summary dict (the JSON report), a text summary, an HTML page
with inline SVG charts, a JSON Lines record for the results file, and the pass/fail verdict."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import msgspec

from chattrio.bot.hostcpu import HostCpu
from chattrio.bot.metrics import metric_deltas
from chattrio.bot.proccpu import spent
from chattrio.bot.runner import RunOutcome
from chattrio.bot.stats import Histogram, settle


def machine_info(load_before: float) -> dict[str, object]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "loadAverageBefore": round(load_before, 1),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _chat_cpu(host_cpu: HostCpu, first: int, last: int) -> dict[str, float | None]:
    """The machine's mean busy and stolen cores during the chat: all processes, not only the bot."""
    mean = host_cpu.mean(first, last)
    return {"chatBusyCores": mean[0] if mean else None, "chatStealCores": mean[1] if mean else None}


def _chat_window_rate(series: list[int], first: int, last: int) -> float:
    window = series[first:last]
    return sum(window) / len(window) if window else 0.0


def server_cpu(outcome: RunOutcome, connected: int, chat_deliveries: int) -> dict:
    """CPU seconds of the nodes' and the backing services' processes during the ramp-up, from the
    start until every user had connected (or failed), and during the chat; and what that is per
    connection and per delivery."""
    out: dict = {}
    for group in ("nodes", "services"):
        samples = outcome.process_cpu.get(group, {})
        ramp = spent(samples.get("start", []), samples.get("chatStart", []))
        connecting = spent(samples.get("start", []), samples.get("connected", samples.get("chatStart", [])))
        chat = spent(samples.get("chatStart", []), samples.get("chatEnd", []))
        hold = spent(samples.get("holdStart", []), samples.get("chatEnd", []))
        out[group] = {"rampSeconds": ramp, "connectingSeconds": connecting, "chatSeconds": chat, "holdSeconds": hold}
    nodes, services = out["nodes"], out["services"]

    def per(unit: int, scale: float, *values: float | None) -> float | None:
        if not unit or None in values:
            return None
        return round(sum(values) * scale / unit, 3)  # type: ignore[arg-type]

    with_services = bool(outcome.config.service_pid_files)
    out["perConnectionMs"] = {
        "nodes": per(connected, 1e3, nodes.get("connectingSeconds")),
        "withServices": per(connected, 1e3, nodes.get("connectingSeconds"), services.get("connectingSeconds"))
        if with_services
        else None,
    }
    out["perDeliveryUs"] = {
        "nodes": per(chat_deliveries, 1e6, nodes.get("chatSeconds")),
        "withServices": per(chat_deliveries, 1e6, nodes.get("chatSeconds"), services.get("chatSeconds"))
        if with_services
        else None,
    }
    return out


def _when(second: int | None, timeline: dict) -> str:
    """Where in the run the worst lag was, against the chat window."""
    if second is None:
        return ""
    return f" (second {second}; the chat is seconds {timeline['chatStartSecond']}-{timeline['chatEndSecond']})"


def summarize(outcome: RunOutcome) -> dict:
    cfg = outcome.config
    ledger = outcome.ledger
    c = ledger.counters
    delivery = settle(ledger)
    e2e = ledger.timeline.end_to_end()
    sched = outcome.schedule
    timeline = ledger.timeline
    seconds = max((len(v) for v in timeline.counts.values()), default=0)
    series = {k: v + [0] * (seconds - len(v)) for k, v in timeline.counts.items()}
    latency_over_time: dict[str, list[float | None]] = {f"p{q:g}": [] for q in (50, 90, 99)}
    for s in range(seconds):
        h = timeline.latency[s] if s < len(timeline.latency) else Histogram()
        for q in (50, 90, 99):
            latency_over_time[f"p{q:g}"].append(round(h.percentile(q) / 1000, 3) if h.count else None)
    chat_first = int(sched.chat_start - sched.t0)
    chat_last = int(sched.chat_end - sched.t0)
    lag_max_ms = [round(us / 1000, 1) for us in timeline.loop_lag_max]
    worst_lag_second = max(range(len(lag_max_ms)), key=lag_max_ms.__getitem__) if lag_max_ms else None
    acked = ledger.ack.count
    sent = len(ledger.sent)
    connected = c.get("usersConnected", 0)
    start, peak, end = (outcome.metrics.get(k) for k in ("start", "peak", "end"))
    nodes = [n.base_url for n in cfg.node_endpoints()]
    rss_start, rss_peak = outcome.rss.get("start", []), outcome.rss.get("peak", [])
    rss_growth = [p - s for s, p in zip(rss_start, rss_peak) if s is not None and p is not None]
    connected_s = ledger.connected_at.max / 1e6
    summary = {
        "system": cfg.system,
        "scenario": cfg.scenario,
        "runId": outcome.run_id,
        "startedAt": dt.datetime.fromtimestamp(outcome.started_at, dt.UTC).isoformat(timespec="seconds"),
        "durationSeconds": round(outcome.finished_at - outcome.started_at, 1),
        "commit": git_commit(),
        "machine": {**machine_info(outcome.load_before), **_chat_cpu(outcome.host_cpu, chat_first, chat_last)},
        "command": cfg.command_line,
        "config": msgspec.to_builtins(cfg),
        "rooms": outcome.rooms,
        "users": {
            "planned": cfg.user_count,
            "connected": connected,
            "failed": c.get("usersFailed", 0),
            "skipped": c.get("usersSkipped", 0),
            "notResumed": c.get("usersNotResumed", 0),
            "loginRetries": c.get("loginRetries", 0),
            "subscribeRetries": c.get("subscribeRetries", 0),
            "restCatchUps": c.get("restCatchUps", 0),
            "connectedPerNode": {n: c.get(f"connectedAt:{n}", 0) for n in nodes},
            # users connected over the time from the first one's start to the last one's session
            "connectPerSecond": round(connected / connected_s, 1) if connected and connected_s else None,
            "failureKinds": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("failure:")},
        },
        "messages": {
            "sent": sent,
            "acked": acked,
            "unacked": sent - acked,
            "resent": c.get("resent", 0),
            "errors": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("error.")},
        },
        # TYPING frames the users sent and received (--typing-rate); their server cost is in
        # the nodes' metric deltas (chattrio_typing_*, process CPU).
        "typing": {"sent": c.get("typingSent", 0), "received": c.get("typingReceived", 0)},
        "deliveries": {
            "expected": delivery.expected,
            "delivered": delivery.delivered,
            "lost": delivery.lost,
            "duplicates": c.get("duplicates", 0),
            "outOfOrder": c.get("outOfOrder", 0),
            "unexpected": delivery.unexpected,
            "ackedMessagesWithLoss": delivery.acked_lost_messages,
            # --until-settled: seconds after the chat at which the run settled and the grace ended
            # (None: the grace was waited out)
            "settledAfterChatSeconds": (
                None if outcome.settled_after_chat is None else round(outcome.settled_after_chat, 3)
            ),
            "lostSamples": [
                {
                    "clientMsgId": cmid,
                    "roomId": room,
                    "seq": seq,
                    "expected": exp,
                    "got": got,
                    "sentSecond": round(ledger.sent[cmid].sent_at - sched.t0, 3),
                }
                for cmid, room, seq, exp, got in delivery.lost_samples
            ],
            "received": e2e.count,
            "perSecondChat": round(_chat_window_rate(series.get("delivered", []), chat_first, chat_last), 1),
            "perSecondPeak": max(series.get("delivered", []), default=0),
        },
        "reconnects": {
            "disconnects": c.get("disconnects", 0),
            "reconnects": c.get("reconnects", 0),
            "timeMs": ledger.reconnect.summary_ms(),
        },
        "latencyMs": {
            "endToEnd": e2e.summary_ms(),
            "ack": ledger.ack.summary_ms(),
            "answerWait": ledger.answer_wait.summary_ms(),
        },
        "announcements": {
            "rooms": {int(k.split(":", 1)[1]): n for k, n in c.items() if k.startswith("announced:")},
            "duplicates": c.get("announcementDuplicates", 0),
        },
        "protocolViolations": c.get("protocolViolations", 0),
        "bot": {
            "workers": cfg.workers,
            "cpuSeconds": round(c.get("cpuMs", 0) / 1000, 1),
            "chatCpuSeconds": round(c.get("chatCpuMs", 0) / 1000, 1),
            "loopLagMs": ledger.loop_lag.summary_ms(),
            "loopLagMaxSecond": worst_lag_second,
        },
        "timeline": {
            "chatStartSecond": chat_first,
            "chatEndSecond": chat_last,
            **series,
            "latencyMs": latency_over_time,
            "loopLagMaxMs": lag_max_ms,
            "hostBusyCores": outcome.host_cpu.busy_cores,
            "hostStealCores": outcome.host_cpu.steal_cores,
        },
        "server": {
            "nodes": nodes,
            "metrics": {"start": start, "peak": peak, "end": end},
            "metricDeltas": [metric_deltas(s, e) for s, e in zip(start or [], end or [])],
            "rssBytes": outcome.rss,
            "memoryPerConnectionBytes": round(sum(rss_growth) / connected) if rss_growth and connected else None,
            # The nodes' own count of open WebSocket connections just before users left.
            "connectionsAtPeak": [snap.get("chattrio_connections") if snap else None for snap in peak or []],
            "cpu": server_cpu(outcome, connected, sum(series.get("delivered", [])[chat_first:chat_last])),
        },
        "exec": outcome.exec_result,
        "flood": outcome.flood,
        "notes": outcome.notes,
    }
    summary["verdict"] = verdict(summary, cfg)
    return summary


def verdict(summary: dict, cfg) -> dict:
    d = summary["deliveries"]
    failures = []
    if d["lost"] > cfg.max_loss:
        failures.append(f"lost {d['lost']} > {cfg.max_loss}")
    if d["duplicates"] > cfg.max_duplicates:
        failures.append(f"duplicates {d['duplicates']} > {cfg.max_duplicates}")
    if d["outOfOrder"] > cfg.max_out_of_order:
        failures.append(f"out of order {d['outOfOrder']} > {cfg.max_out_of_order}")
    not_resumed = summary["users"]["notResumed"]
    if not_resumed > cfg.max_not_resumed:
        failures.append(f"users not resumed {not_resumed} > {cfg.max_not_resumed}")
    p99 = summary["latencyMs"]["endToEnd"]["p99"]
    if cfg.max_p99_ms is not None and p99 > cfg.max_p99_ms:
        failures.append(f"end-to-end p99 {p99} ms > {cfg.max_p99_ms} ms")
    return {"passed": not failures, "failures": failures}


def _lat(s: dict) -> str:
    return " ".join(f"{k}={s[k]}" for k in ("p50", "p90", "p99", "p99.9", "max")) + " ms"


def text_summary(s: dict) -> str:
    u, m, d, r = s["users"], s["messages"], s["deliveries"], s["reconnects"]
    lines = [
        f"scenario {s['scenario']}  run {s['runId']}  commit {s['commit']}  {s['durationSeconds']} s"
        f"  (load average before: {s['machine']['loadAverageBefore']} on {s['machine']['cores']} cores)",
        f"users      connected {u['connected']}/{u['planned']}  failed {u['failed']}  skipped {u['skipped']}"
        f"  not resumed {u['notResumed']}",
        f"messages   sent {m['sent']}  acked {m['acked']}  unacked {m['unacked']}  resent {m['resent']}"
        + (f"  errors {m['errors']}" if m["errors"] else ""),
        f"deliveries expected {d['expected']}  delivered {d['delivered']}  lost {d['lost']}"
        f"  duplicates {d['duplicates']}  out of order {d['outOfOrder']}  unexpected {d['unexpected']}",
        f"rate       {d['perSecondChat']} deliveries/s during the chat (peak {d['perSecondPeak']}/s)",
        f"latency    end-to-end {_lat(s['latencyMs']['endToEnd'])}",
        f"           ack        {_lat(s['latencyMs']['ack'])}",
        f"reconnects {r['reconnects']} (disconnects {r['disconnects']})"
        + (f"  time {_lat(r['timeMs'])}" if r["reconnects"] else ""),
    ]
    mc = s["machine"]
    if mc["chatBusyCores"] is not None:
        lines.append(
            f"machine    {mc['chatBusyCores']} of {mc['cores']} cores busy during the chat (all processes),"
            f" {mc['chatStealCores']} stolen by the hypervisor"
        )
    cpu = s["server"]["cpu"]
    if cpu["nodes"]["chatSeconds"] is not None:
        lines.append(
            f"server cpu nodes {cpu['nodes']['rampSeconds']} s ramp-up, {cpu['nodes']['chatSeconds']} s chat"
            + (
                f"; services {cpu['services']['rampSeconds']} s ramp-up, {cpu['services']['chatSeconds']} s chat"
                if cpu["services"]["chatSeconds"] is not None
                else ""
            )
            + (
                f"; over the chat's last {s['config']['holdWindowSeconds']:g} s: nodes {cpu['nodes']['holdSeconds']} s,"
                f" services {cpu['services']['holdSeconds']} s"
                if cpu["nodes"]["holdSeconds"] is not None
                else ""
            )
            + f"; per connection {cpu['perConnectionMs']} ms, per delivery {cpu['perDeliveryUs']} µs"
            + f"; {s['users']['connectPerSecond']} connections/s"
        )
    b = s["bot"]
    lines.append(
        f"bot        {b['workers']} worker(s), {b['cpuSeconds']} CPU s in {s['durationSeconds']} s"
        f" ({b['chatCpuSeconds']} during the {s['config']['chatDurationSeconds']:g} s chat);"
        f" event-loop lag p99 {b['loopLagMs']['p99']} ms, max {b['loopLagMs']['max']} ms"
        + _when(b["loopLagMaxSecond"], s["timeline"])
    )
    if s["server"]["memoryPerConnectionBytes"] is not None and not s["config"]["messagesPerSecond"]:
        lines.append(
            f"memory     {s['server']['memoryPerConnectionBytes'] / 1024:.1f} KiB RSS per connection"
            f" (nodes' connections at peak: {s['server']['connectionsAtPeak']})"
        )
    if s["exec"]:
        lines.append(
            f"exec       {s['exec']['secondsIntoChat']} s into the chat: {s['exec']['command']}"
            f" -> exit {s['exec']['returncode']}"
        )
    if s.get("flood"):
        lines.append(f"flood      {s['config']['flooders']} flooder(s): {s['flood']}")
    for url, deltas in zip(s["server"]["nodes"], s["server"]["metricDeltas"]):
        counters = {
            k.removeprefix("chattrio_").removesuffix("_total"): round(v)
            for k, v in deltas.items()
            if k.startswith("chattrio_") and "_total" in k and v
        }
        # A counter that went down means the node restarted during the run.
        moved = ", ".join(f"{k} {v:+d}" for k, v in counters.items())
        lines.append(f"server     {url}: " + (moved or ("no counter moved" if deltas else "no /metrics at the end")))
    if s["protocolViolations"]:
        lines.append(f"PROTOCOL   {s['protocolViolations']} violations (see notes in the JSON report)")
    v = s["verdict"]
    lines.append("verdict    " + ("PASS" if v["passed"] else "FAIL: " + "; ".join(v["failures"])))
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------------

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _tick(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def svg_line_chart(
    title: str, series: dict[str, list[float | None]], y_label: str, width: int = 760, height: int = 260
) -> str:
    """A self-contained SVG line chart (x = index in seconds); None values break the line."""
    left, right, top, bottom = 60, 150, 30, 35
    values = [v for vs in series.values() for v in vs if v is not None]
    n = max((len(vs) for vs in series.values()), default=0)
    y_max = max(values, default=1.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: float) -> float:
        return left + (plot_w * i / max(n - 1, 1))

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><text x="{left}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for k in range(5):
        tick = y_max * k / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
            f'<text x="{left - 5}" y="{y(tick) + 4:.1f}" text-anchor="end">{_tick(tick)}</text>'
        )
    for k in range(0, n, max(1, n // 10)):
        parts.append(f'<text x="{x(k):.1f}" y="{top + plot_h + 15}" text-anchor="middle">{k}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">seconds since start</text>'
        f'<text x="12" y="{top + plot_h / 2}" transform="rotate(-90 12 {top + plot_h / 2})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for idx, (name, vs) in enumerate(series.items()):
        colour = _COLOURS[idx % len(_COLOURS)]
        segments: list[list[str]] = []
        current: list[str] = []
        for i, v in enumerate(vs):
            if v is None:
                if current:
                    segments.append(current)
                current = []
            else:
                current.append(f"{x(i):.1f},{y(v):.1f}")
        if current:
            segments.append(current)
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(seg)}"/>')
        ly = top + 12 + 16 * idx
        parts.append(
            f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 30}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"/><text x="{left + plot_w + 35}" y="{ly + 4}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_bar_chart(title: str, groups: dict[str, dict[str, float]], width: int = 760, height: int = 260) -> str:
    """Grouped bars: one group per percentile, one bar per series (e.g. end-to-end and ACK)."""
    left, right, top, bottom = 60, 150, 30, 35
    labels = list(next(iter(groups.values())).keys()) if groups else []
    y_max = max((v for g in groups.values() for v in g.values()), default=1.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    group_w = plot_w / max(len(labels), 1)
    bar_w = group_w * 0.8 / max(len(groups), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><text x="{left}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for gi, label in enumerate(labels):
        parts.append(
            f'<text x="{left + group_w * (gi + 0.5):.1f}" y="{top + plot_h + 15}" '
            f'text-anchor="middle">{html.escape(label)}</text>'
        )
        for si, (name, values) in enumerate(groups.items()):
            v = values[label]
            h = plot_h * v / y_max
            bx = left + group_w * gi + group_w * 0.1 + bar_w * si
            parts.append(
                f'<rect x="{bx:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{_COLOURS[si % len(_COLOURS)]}"><title>{html.escape(name)} {label}: {v} ms'
                f'</title></rect><text x="{bx + bar_w / 2:.1f}" y="{top + plot_h - h - 3:.1f}" '
                f'text-anchor="middle" font-size="9">{v:.4g}</text>'
            )
    for si, name in enumerate(groups):
        ly = top + 12 + 16 * si
        parts.append(
            f'<rect x="{left + plot_w + 10}" y="{ly - 6}" width="12" height="12" '
            f'fill="{_COLOURS[si % len(_COLOURS)]}"/><text x="{left + plot_w + 28}" y="{ly + 4}">'
            f"{html.escape(name)} (ms)</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def html_report(s: dict) -> str:
    t = s["timeline"]
    pct = ("p50", "p90", "p99", "p99.9", "max")
    charts = [
        svg_line_chart("Deliveries per second", {"delivered/s": t.get("delivered", [])}, "per second"),
        svg_line_chart(
            "Sends and ACKs per second", {"sent/s": t.get("sent", []), "acked/s": t.get("acked", [])}, "per second"
        ),
        svg_line_chart("End-to-end latency over time (by second of receipt)", t["latencyMs"], "ms"),
        svg_line_chart(
            "The bot's event-loop lag, worst per second (a stall of the bot, not of the servers)",
            {"lag max": t.get("loopLagMaxMs", [])},
            "ms",
        ),
        svg_line_chart(
            "The machine's CPUs: cores busy (all processes) and stolen by the hypervisor",
            {"busy": t.get("hostBusyCores", []), "stolen": t.get("hostStealCores", [])},
            "cores",
        ),
        svg_bar_chart(
            "Latency percentiles",
            {
                "end-to-end": {p: s["latencyMs"]["endToEnd"][p] for p in pct},
                "ack": {p: s["latencyMs"]["ack"][p] for p in pct},
            },
        ),
    ]
    figures = json.dumps({k: v for k, v in s.items() if k not in ("timeline", "server", "config")}, indent=2)
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>chattrio bot: {html.escape(s['scenario'])} {html.escape(s['runId'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}pre{background:#f6f6f6;padding:1em;"
        "white-space:pre-wrap}</style></head><body>"
        f"<h1>chattrio bot: {html.escape(s['scenario'])}</h1>"
        f"<pre>{html.escape(text_summary(s))}</pre>"
        + "".join(f"<div>{c}</div>" for c in charts)
        + f"<h2>Command</h2><pre>{html.escape(s['command'])}</pre>"
        f"<h2>All figures</h2><pre>{html.escape(figures)}</pre></body></html>"
    )


def write_reports(s: dict, output_dir: str) -> tuple[Path, Path]:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The scenario is free text; in a file name only what every file system takes.
    scenario = re.sub(r"[^A-Za-z0-9._-]", "_", s["scenario"])
    stem = f"{scenario}-{s['startedAt'][:19].replace(':', '')}-{s['runId']}"
    json_path, html_path = out / f"{stem}.json", out / f"{stem}.html"
    json_path.write_text(json.dumps(s, indent=1))
    html_path.write_text(html_report(s))
    return json_path, html_path


def write_records(outcome: RunOutcome, s: dict, path: str) -> None:
    """The run's records for a chaos verdict (scripts/chaos.sh): the summary, every acknowledged
    message as [clientMsgId, roomId, seq, ACK time], the writes with their answers, and the
    presence probe's records."""
    acked = [
        [cmid, sent.room_id, sent.ack_seq, sent.acked_at] for cmid, sent in outcome.ledger.sent.items() if sent.acked
    ]
    records = {"summary": s, "acked": acked, "writes": outcome.writes or [], "presence": outcome.presence}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(records))


def bench_record(s: dict) -> dict:
    """One run as one line of a JSON Lines results file (scripts/bench.sh appends to
    bench-results/runs.jsonl); the full figures stay in the JSON report."""
    cfg, d, e2e = s["config"], s["deliveries"], s["latencyMs"]["endToEnd"]
    chatted = bool(s["messages"]["sent"])  # idle runs have no rates or latencies to show
    mc = s["machine"]
    # The load average and the cores busy and stolen tell whether the machine was shared with
    # other work, or saturated, during the run.
    machine = {"cores": mc["cores"], "cpu": mc["cpu"], "loadAverageBefore": mc["loadAverageBefore"]}
    if chatted and mc.get("chatBusyCores") is not None:
        machine.update(chatBusyCores=mc["chatBusyCores"], chatStealCores=mc["chatStealCores"])
    parameters = {
        "users": cfg["userCount"],
        "rooms": cfg["rooms"],
        "messagesPerSecondPerUser": cfg["messagesPerSecond"],
        "chatSeconds": cfg["chatDurationSeconds"],
        "rampUpSeconds": cfg["rampUpTimeSeconds"],
        "nodes": len(s["server"]["nodes"]),
        "workers": cfg["workers"],
    }
    if cfg["holdWindowSeconds"]:
        parameters["holdWindowSeconds"] = cfg["holdWindowSeconds"]
    if s["server"]["memoryPerConnectionBytes"] is not None and not cfg["messagesPerSecond"]:
        parameters["memoryPerConnectionKiB"] = round(s["server"]["memoryPerConnectionBytes"] / 1024, 1)
    r = s["reconnects"]
    return {
        "date": s["startedAt"][:16].replace("T", " "),
        "commit": s["commit"],
        "machine": machine,
        "system": s["system"],
        "scenario": s["scenario"],
        "parameters": parameters,
        "exec": {"command": s["exec"]["command"], "secondsIntoChat": s["exec"]["secondsIntoChat"]}
        if s["exec"]
        else None,
        "deliveriesPerSecond": d["perSecondChat"] if chatted else None,
        "endToEndMs": {p: e2e[p] for p in ("p50", "p90", "p99", "p99.9", "max")} if chatted else None,
        "ackP99Ms": s["latencyMs"]["ack"]["p99"] if chatted else None,
        "lost": d["lost"],
        "duplicates": d["duplicates"],
        "outOfOrder": d["outOfOrder"],
        "usersConnected": s["users"]["connected"],
        "usersFailed": s["users"]["failed"],
        "connectPerSecond": s["users"]["connectPerSecond"],
        "reconnects": r["reconnects"],
        "reconnectMs": {"p50": r["timeMs"]["p50"], "max": r["timeMs"]["max"]} if r["reconnects"] else None,
        "passed": s["verdict"]["passed"],
        "command": s["command"],
    }


def append_bench_record(s: dict, path: str) -> None:
    """One line per run, appended (the directory is created when missing)."""
    record = bench_record(s)
    if s["config"]["nodePidFiles"]:  # the server processes' CPU was measured
        record["serverCpu"] = s["server"]["cpu"]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a") as results:
        results.write(json.dumps(record) + "\n")
