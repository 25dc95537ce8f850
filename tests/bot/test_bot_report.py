"""The bot's reports and CLI as pure logic: the verdict, the results record, /metrics parsing, the
report files and main()'s exit status, from runs built by hand (no network, no fake nodes)."""

import json
import shlex

import pytest

from chattrio.bot import cli, report, results
from chattrio.bot.config import load_config
from chattrio.bot.hostcpu import CpuTimes, HostCpu
from chattrio.bot.metrics import metric_deltas, parse_prometheus
from chattrio.bot.report import append_bench_record, bench_record, summarize, verdict, write_reports
from chattrio.bot.runner import RunOutcome, Schedule
from chattrio.bot.stats import Ledger, SeenMessage, SentMessage, Timeline

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
ROOM = 7
NODES = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
# Two users in one room, each sending once a second during a 3 s chat after a 1 s ramp-up.
RUN_ARGV = [
    "--node",
    NODES[0],
    "--node",
    NODES[1],
    "--users",
    "2",
    "--rooms",
    "1",
    "--rate",
    "1",
    "--ramp-up",
    "1",
    "--duration",
    "3",
    "--scenario",
    "unit",
]
# One per delivery, in order. 2015 µs is the top of its histogram bucket, so the reported
# midpoint is clamped to the exact minimum; 4000 µs reads as its bucket's midpoint, 4.015 ms.
LATENCIES_US = [2015] * 6 + [4000] * 5 + [9000]
E2E_MS = {"p50": 2.015, "p90": 4.015, "p99": 9.0, "p99.9": 9.0, "max": 9.0}
MIB = 1 << 20


def _config(*extra):
    cfg = load_config([*RUN_ARGV, *extra])
    cfg.command_line = "python -m chattrio bot --scenario unit"
    return cfg


def _outcome(cfg, *, lost=0, chat=True, counters=None, reconnect_us=(), rss=None, exec_result=None) -> RunOutcome:
    """A finished run of two users in one room; the last message misses `lost` of its receivers."""
    schedule = Schedule.of(cfg, T0)
    ledger = Ledger(members={ROOM: [-1, -1]}, timeline=Timeline(T0), counters={"usersConnected": 2, **(counters or {})})
    latencies = iter(LATENCIES_US)
    messages = [(second, user) for second in (1, 2, 3) for user in (0, 1)] if chat else []
    for seq, (second, user) in enumerate(messages, start=1):
        cmid = f"abc123.{user}.{second}"
        receivers = 2 - lost if seq == len(messages) else 2
        sent_at = T0 + second + 0.1
        ledger.sent[cmid] = SentMessage(ROOM, sent_at, True, seq)
        ledger.seen[cmid] = SeenMessage(seq, receivers)
        ledger.timeline.add("sent", sent_at)
        ledger.timeline.add("acked", sent_at + 0.001)
        ledger.ack.record(1000)
        ledger.timeline.record_deliveries(sent_at + 0.1, [next(latencies) for _ in range(receivers)])
    for us in reconnect_us:
        ledger.reconnect.record(us)
    # Seconds 1-3 (the chat): 1.2, 1.4 and 1.6 cores busy, 0, 0.1 and 0.2 stolen.
    host_cpu = HostCpu(T0)
    for k, (busy, steal) in enumerate([(100.0, 5.0), (101.2, 5.0), (102.6, 5.1), (104.2, 5.3)], start=1):
        host_cpu.note(T0 + k, CpuTimes(busy, steal))
    # The second node never answered /metrics, as a killed node would not.
    metrics = {
        "start": [{"chattrio_messages_total": 10.0, "chattrio_connections": 0.0}, None],
        "peak": [{"chattrio_connections": 2.0}, None],
        "end": [{"chattrio_messages_total": 16.0}, None],
    }
    return RunOutcome(
        run_id="abc123",
        config=cfg,
        schedule=schedule,
        ledger=ledger,
        notes=[],
        rooms=[ROOM],
        metrics=metrics,
        rss=rss or {"start": [], "peak": [], "end": []},
        exec_result=exec_result,
        started_at=T0 - 0.2,
        finished_at=T0 + 9.3,
        load_before=0.7,
        host_cpu=host_cpu,
    )


@pytest.fixture
def fixed_host(monkeypatch):
    """The commit and the machine are read from the environment; fix them so cells are known."""
    monkeypatch.setattr(report, "git_commit", lambda: "abc1234")
    monkeypatch.setattr(
        report,
        "machine_info",
        lambda load: {
            "cores": 2,
            "cpu": "Test CPU",
            "python": "3.12.0",
            "system": "Linux 6.1",
            "loadAverageBefore": round(load, 1),
        },
    )


# -- verdict ------------------------------------------------------------------------------------


def _verdict_input(lost=0, duplicates=0, out_of_order=0, not_resumed=0, p99=0.0) -> dict:
    """Only the parts of a summary that verdict() reads."""
    return {
        "deliveries": {"lost": lost, "duplicates": duplicates, "outOfOrder": out_of_order},
        "users": {"notResumed": not_resumed},
        "latencyMs": {"endToEnd": {"p99": p99}},
    }


def _thresholds(*flags):
    return load_config(["--node", NODES[0], *flags])


def test_verdict_passes_at_zero():
    assert verdict(_verdict_input(), _thresholds()) == {"passed": True, "failures": []}


@pytest.mark.parametrize(
    ("figures", "flags", "failure"),
    [
        ({"lost": 1}, [], "lost 1 > 0"),
        ({"duplicates": 2}, [], "duplicates 2 > 0"),
        ({"out_of_order": 1}, [], "out of order 1 > 0"),
        ({"not_resumed": 1}, [], "users not resumed 1 > 0"),
        ({"p99": 120.5}, ["--max-p99-ms", "100"], "end-to-end p99 120.5 ms > 100.0 ms"),
    ],
)
def test_each_threshold_fails_with_its_own_message(figures, flags, failure):
    assert verdict(_verdict_input(**figures), _thresholds(*flags)) == {"passed": False, "failures": [failure]}


@pytest.mark.parametrize(
    ("figure", "flag", "label"),
    [
        ("lost", "--max-loss", "lost"),
        ("duplicates", "--max-duplicates", "duplicates"),
        ("out_of_order", "--max-out-of-order", "out of order"),
        ("not_resumed", "--max-not-resumed", "users not resumed"),
    ],
)
def test_a_tolerance_is_the_largest_value_that_passes(figure, flag, label):
    cfg = _thresholds(flag, "3")
    assert verdict(_verdict_input(**{figure: 3}), cfg)["passed"]
    assert verdict(_verdict_input(**{figure: 4}), cfg) == {"passed": False, "failures": [f"{label} 4 > 3"]}


def test_p99_at_the_limit_passes_and_above_fails():
    cfg = _thresholds("--max-p99-ms", "50")
    assert verdict(_verdict_input(p99=50.0), cfg)["passed"]
    assert verdict(_verdict_input(p99=50.001), cfg)["failures"] == ["end-to-end p99 50.001 ms > 50.0 ms"]


def test_without_max_p99_latency_is_not_checked():
    cfg = _thresholds()
    assert cfg.max_p99_ms is None
    assert verdict(_verdict_input(p99=1e6), cfg) == {"passed": True, "failures": []}


def test_every_exceeded_threshold_is_listed_in_order():
    cfg = _thresholds("--max-p99-ms", "10")
    v = verdict(_verdict_input(lost=1, duplicates=1, out_of_order=1, not_resumed=1, p99=11.0), cfg)
    assert v == {
        "passed": False,
        "failures": [
            "lost 1 > 0",
            "duplicates 1 > 0",
            "out of order 1 > 0",
            "users not resumed 1 > 0",
            "end-to-end p99 11.0 ms > 10.0 ms",
        ],
    }


def test_max_not_resumed_defaults_to_zero_and_comes_from_the_file_or_a_flag(tmp_path):
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"nodes": [NODES[0]], "maxNotResumed": 2}))
    assert _thresholds().max_not_resumed == 0
    assert load_config(["--config", str(path)]).max_not_resumed == 2
    assert load_config(["--config", str(path), "--max-not-resumed", "5"]).max_not_resumed == 5


def test_summarize_feeds_the_verdict_the_settled_loss(fixed_host):
    # The loss is not a counter: it comes from settling the ledger (expected - delivered).
    s = summarize(_outcome(_config(), lost=1))
    assert (s["deliveries"]["expected"], s["deliveries"]["delivered"], s["deliveries"]["lost"]) == (12, 11, 1)
    assert s["verdict"] == {"passed": False, "failures": ["lost 1 > 0"]}


# -- the results record ---------------------------------------------------------------------------


def test_bench_record_fields(fixed_host):
    assert bench_record(summarize(_outcome(_config()))) == {
        "date": "2023-11-14 22:13",
        "commit": "abc1234",
        "machine": {
            "cores": 2,
            "cpu": "Test CPU",
            "loadAverageBefore": 0.7,
            "chatBusyCores": 1.4,
            "chatStealCores": 0.1,
        },
        "system": "chattrio",
        "scenario": "unit",
        "parameters": {
            "users": 2,
            "rooms": 1,
            "messagesPerSecondPerUser": 1.0,
            "chatSeconds": 3.0,
            "rampUpSeconds": 1.0,
            "nodes": 2,
            "workers": 1,
        },
        "exec": None,
        "deliveriesPerSecond": 4.0,  # 12 deliveries over the 3 chat seconds
        "endToEndMs": E2E_MS,
        "ackP99Ms": 1.0,
        "lost": 0,
        "duplicates": 0,
        "outOfOrder": 0,
        "usersConnected": 2,
        "usersFailed": 0,
        "connectPerSecond": None,
        "reconnects": 0,
        "reconnectMs": None,
        "passed": True,
        "command": "python -m chattrio bot --scenario unit",
    }


def test_bench_record_shows_the_exec_the_reconnects_and_the_failure(fixed_host):
    cfg = _config("--scenario", "a|b")
    cfg.command_line = "python -m chattrio bot --exec 'kill 1 | true'"
    exec_result = {"command": "kill 1 | true", "secondsIntoChat": 1.5, "returncode": 0, "output": ""}
    s = summarize(
        _outcome(
            cfg,
            lost=1,
            counters={"duplicates": 2, "outOfOrder": 3, "reconnects": 2},
            reconnect_us=(150_000, 400_000),
            exec_result=exec_result,
        )
    )
    record = bench_record(s)
    assert record["scenario"] == "a|b"
    assert record["exec"] == {"command": "kill 1 | true", "secondsIntoChat": 1.5}
    assert record["deliveriesPerSecond"] == 3.7  # 11 deliveries over 3 s
    assert (record["lost"], record["duplicates"], record["outOfOrder"]) == (1, 2, 3)
    assert record["reconnects"] == 2
    assert record["reconnectMs"] == {"p50": 150.527, "max": 400.0}  # 150 ms reads as its bucket's midpoint
    assert record["passed"] is False
    assert record["command"] == "python -m chattrio bot --exec 'kill 1 | true'"


def test_bench_record_of_an_idle_run_has_memory_and_no_rates(fixed_host):
    rss = {"start": [50 * MIB, 60 * MIB], "peak": [51 * MIB, 61 * MIB], "end": [50 * MIB, 60 * MIB]}
    record = bench_record(summarize(_outcome(_config("--rate", "0"), chat=False, rss=rss)))
    assert record["machine"] == {"cores": 2, "cpu": "Test CPU", "loadAverageBefore": 0.7}  # no chat, no CPU in it
    assert record["parameters"]["memoryPerConnectionKiB"] == 1024.0  # 2 MiB grown for 2 connections
    assert (record["deliveriesPerSecond"], record["endToEndMs"], record["ackP99Ms"]) == (None, None, None)


def test_appending_creates_the_file_and_its_directory_then_adds_one_line_per_run(fixed_host, tmp_path):
    s = summarize(_outcome(_config()))
    path = tmp_path / "results" / "runs.jsonl"
    append_bench_record(s, str(path))
    append_bench_record(s, str(path))
    assert [json.loads(line) for line in path.read_text().splitlines()] == [bench_record(s)] * 2


def test_the_results_tool_tables_the_latest_runs_of_each_scenario(fixed_host, tmp_path, capsys):
    run = bench_record(summarize(_outcome(_config())))
    failover = bench_record(
        summarize(
            _outcome(
                _config("--scenario", "failover"), lost=1, counters={"reconnects": 2}, reconnect_us=(150_000, 400_000)
            )
        )
    )
    note = {
        "date": "2023-11-14 22:20",
        "commit": "abc1234",
        "machine": {"cores": 2, "cpu": "Test CPU"},
        "scenario": "seed (result)",
        "result": "largest N: 500",
        "command": "scripts/bench.sh seed",
    }
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [run] * 8 + [failover, note]))
    assert results.main([str(path)]) == 0
    out = capsys.readouterr().out
    sections = out.split("### ")[1:]
    assert [section.splitlines()[0] for section in sections] == ["unit", "failover", "seed (result)"]
    unit_rows = [line for line in sections[0].splitlines() if line.startswith("| 2023")]
    assert len(unit_rows) == results.LATEST
    assert unit_rows[0] == (
        "| 2023-11-14 22:13 | abc1234 | 1.4 | 4 | 2.0 / 9.0 / 9.0 | 1.0 | 0 / 0 / 0 | 2 / 0 | 0 | pass |"
    )
    assert "| 1 / 0 / 0 |" in sections[1] and "2 (p50 150.5 / max 400.0 ms) | fail |" in sections[1]
    assert "| 2023-11-14 22:20 | abc1234 | largest N: 500 |" in sections[2]
    assert results.main([str(path), "failover"]) == 0
    assert capsys.readouterr().out.startswith("### failover\n")


def test_the_results_tool_reports_an_unreadable_file_or_another_format(tmp_path, capsys):
    assert results.main([str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    old_format = tmp_path / "history.jsonl"
    old_format.write_text(json.dumps({"date": "2023-11-14 22:13", "scenario": "seed", "command": "x"}) + "\n")
    assert results.main([str(old_format)]) == 2
    assert "not in the bot's record format" in capsys.readouterr().err


# -- /metrics -------------------------------------------------------------------------------------

SCRAPE_START = """\
# HELP chattrio_connections Open WebSocket connections.
# TYPE chattrio_connections gauge
chattrio_connections 3
# HELP chattrio_messages_total Messages stored.
# TYPE chattrio_messages_total counter
chattrio_messages_total{room="7",node="node-1"} 10
chattrio_messages_total{room="8",node="node-1"} 2.5e1
chattrio_http_requests_total{path="/a b}",code="200"} 4
# TYPE chattrio_fanout_seconds histogram
chattrio_fanout_seconds_bucket{le="0.005"} 4
chattrio_fanout_seconds_bucket{le="+Inf"} 6
chattrio_fanout_seconds_sum 0.042
chattrio_fanout_seconds_count 6
   process_start_time_seconds 1.7e9 1700000000000

lonely_name
broken_value abc
"""

STARTED = {
    "chattrio_connections": 3.0,
    'chattrio_messages_total{room="7",node="node-1"}': 10.0,
    'chattrio_messages_total{room="8",node="node-1"}': 25.0,
    'chattrio_http_requests_total{path="/a b}",code="200"}': 4.0,
    'chattrio_fanout_seconds_bucket{le="0.005"}': 4.0,
    'chattrio_fanout_seconds_bucket{le="+Inf"}': 6.0,
    "chattrio_fanout_seconds_sum": 0.042,
    "chattrio_fanout_seconds_count": 6.0,
    "process_start_time_seconds": 1.7e9,  # the trailing timestamp is not the value
}


def test_parse_prometheus_keeps_every_sample_under_its_labels():
    assert parse_prometheus(SCRAPE_START) == STARTED


def test_metric_deltas_between_two_scrapes():
    end = parse_prometheus(
        SCRAPE_START.replace("chattrio_connections 3", "chattrio_connections 1")
        .replace('node="node-1"} 10', 'node="node-1"} 17')
        .replace('"+Inf"} 6', '"+Inf"} 9')
        .replace("_count 6", "_count 9")
        + 'chattrio_resumes_total{node="node-1"} 2\n'
    )
    deltas = metric_deltas(STARTED, end)
    assert deltas['chattrio_messages_total{room="7",node="node-1"}'] == 7.0
    assert deltas['chattrio_fanout_seconds_bucket{le="+Inf"}'] == 3.0
    assert deltas["chattrio_fanout_seconds_count"] == 3.0
    assert deltas["chattrio_connections"] == -2.0  # a gauge can go down
    assert deltas['chattrio_resumes_total{node="node-1"}'] == 2.0  # new at the end: counted from 0
    assert deltas['chattrio_messages_total{room="8",node="node-1"}'] == 0.0
    assert set(deltas) == set(STARTED) | {'chattrio_resumes_total{node="node-1"}'}


def test_metric_deltas_of_missing_scrapes():
    assert metric_deltas({"a_total": 5.0}, None) == {}  # the node did not answer at the end
    assert metric_deltas(None, {"a_total": 5.0}) == {"a_total": 5.0}  # nor at the start
    assert metric_deltas({"gone_total": 3.0}, {"a_total": 1.0}) == {"a_total": 1.0}  # only what the end has


def test_the_server_lines_tell_a_restarted_node_and_a_quiet_one_from_a_silent_one(fixed_host):
    outcome = _outcome(_config())
    outcome.metrics = {
        "start": [{"chattrio_messages_total": 10.0}, {"chattrio_messages_total": 4.0}, None],
        "peak": [None, None, None],
        "end": [{"chattrio_messages_total": 3.0}, {"chattrio_messages_total": 4.0}, None],
    }
    outcome.config.nodes = [*NODES, "http://127.0.0.1:3"]
    lines = report.text_summary(summarize(outcome)).splitlines()
    assert f"server     {NODES[0]}: messages -7" in lines  # the node restarted: its counters began again
    assert f"server     {NODES[1]}: no counter moved" in lines
    assert "server     http://127.0.0.1:3: no /metrics at the end" in lines


# -- the report files -----------------------------------------------------------------------------


def test_write_reports_round_trips_the_summary_and_draws_the_charts(fixed_host, tmp_path):
    s = summarize(_outcome(_config("--scenario", "r&d")))
    out = tmp_path / "not" / "yet"
    json_path, html_path = write_reports(s, str(out))
    stem = "r_d-2023-11-14T221319-abc123"  # the file name keeps only portable characters
    assert (json_path, html_path) == (out / f"{stem}.json", out / f"{stem}.html")
    assert json.loads(json_path.read_text()) == s
    page = html_path.read_text()
    assert page.count("<svg") == 6  # five line charts and the percentile bars
    assert "<title>chattrio bot: r&amp;d abc123</title>" in page and "<h1>chattrio bot: r&amp;d</h1>" in page
    assert "<title>end-to-end p99: 9.0 ms</title>" in page and "<title>ack p99: 1.0 ms</title>" in page
    # The text summary is in the page, with each node's counters moved during the run.
    assert f"server     {NODES[0]}: messages +6" in page
    assert f"server     {NODES[1]}: no /metrics at the end" in page
    assert "verdict    PASS" in page


# -- the CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        ([], "give nodes (or restApiBaseUrl)"),
        (["--node", NODES[0], "--users", "0"], "userCount must be >= 1"),
        (["--node", "https://h:1"], "node URL must be http://host:port, got 'https://h:1'"),
    ],
)
def test_a_bad_configuration_exits_2_with_the_reason(argv, reason, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"chattrio bot: {reason}\n")


def test_a_bad_flag_exits_2_through_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--node", NODES[0], "--users", "many"])
    assert exc.value.code == 2
    assert "--users: invalid int value: 'many'" in capsys.readouterr().err


def test_a_run_that_cannot_start_exits_2(monkeypatch, capsys):
    async def unable(*_):
        raise RuntimeError("setting up rooms on http://127.0.0.1:1 failed: OSError()")

    monkeypatch.setattr(cli, "run", unable)
    assert cli.main(RUN_ARGV) == 2
    assert capsys.readouterr().err == "\nchattrio bot: setting up rooms on http://127.0.0.1:1 failed: OSError()\n"


@pytest.mark.parametrize(
    ("extra", "lost", "status", "verdict_line"),
    [
        ([], 0, 0, "verdict    PASS"),
        ([], 1, 1, "verdict    FAIL: lost 1 > 0"),
        (["--max-loss", "1"], 1, 0, "verdict    PASS"),
    ],
)
def test_the_exit_status_follows_the_verdict(
    extra, lost, status, verdict_line, monkeypatch, capsys, tmp_path, fixed_host
):
    # Only the network part is replaced: summarize, the verdict and the reports run for real.
    async def finished_run(cfg, *_):
        return _outcome(cfg, lost=lost)

    monkeypatch.setattr(cli, "run", finished_run)
    bench = tmp_path / "runs.jsonl"
    argv = [*RUN_ARGV, "--out", str(tmp_path / "out"), "--bench-log", str(bench), *extra]
    assert cli.main(argv) == status
    out = capsys.readouterr().out
    assert verdict_line in out.splitlines()
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".html", ".json"]
    records = [json.loads(line) for line in bench.read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["command"] == shlex.join(["python", "-m", "chattrio", "bot", *argv])
    assert records[0]["passed"] is (status == 0)


def test_server_cpu_is_reported_per_connection_and_per_delivery(fixed_host, tmp_path):
    cfg = _config("--pid-file", "/run/node.pid", "--service-pid-file", "/run/kafka.pid")
    outcome = _outcome(cfg)
    outcome.process_cpu = {
        "nodes": {"start": [10.0], "connected": [10.4], "chatStart": [10.5], "chatEnd": [10.8]},
        "services": {"start": [2.0], "connected": [2.1], "chatStart": [2.1], "chatEnd": [2.16]},
    }
    # the two users' sessions were ready 0.4 s and 0.8 s after the run's start
    outcome.ledger.connected_at.record(400_000)
    outcome.ledger.connected_at.record(800_000)
    s = summarize(outcome)
    cpu = s["server"]["cpu"]
    assert cpu["nodes"] == {"rampSeconds": 0.5, "connectingSeconds": 0.4, "chatSeconds": 0.3, "holdSeconds": None}
    assert cpu["services"] == {"rampSeconds": 0.1, "connectingSeconds": 0.1, "chatSeconds": 0.06, "holdSeconds": None}
    assert cpu["perConnectionMs"] == {"nodes": 200.0, "withServices": 250.0}  # until both were connected
    assert cpu["perDeliveryUs"] == {"nodes": 25000.0, "withServices": 30000.0}  # over 12 deliveries
    assert s["users"]["connectPerSecond"] == 2.5
    path = tmp_path / "runs.jsonl"
    append_bench_record(s, str(path))
    record = json.loads(path.read_text())
    assert (record["system"], record["connectPerSecond"], record["serverCpu"]) == ("chattrio", 2.5, cpu)


def test_an_idle_run_s_hold_window_is_measured_apart_and_recorded(fixed_host):
    cfg = _config("--pid-file", "/run/node.pid", "--service-pid-file", "/run/kafka.pid", "--hold-window", "2")
    outcome = _outcome(cfg, chat=False)
    outcome.process_cpu = {
        "nodes": {"start": [10.0], "chatStart": [10.5], "holdStart": [10.9], "chatEnd": [11.0]},
        "services": {"start": [2.0], "chatStart": [2.1], "holdStart": [2.3], "chatEnd": [2.32]},
    }
    s = summarize(outcome)
    assert (s["server"]["cpu"]["nodes"]["holdSeconds"], s["server"]["cpu"]["services"]["holdSeconds"]) == (0.1, 0.02)
    assert "over the chat's last 2 s: nodes 0.1 s, services 0.02 s" in report.text_summary(s)
    assert bench_record(s)["parameters"]["holdWindowSeconds"] == 2


def test_a_hold_window_longer_than_the_chat_is_refused():
    with pytest.raises(Exception, match="holdWindowSeconds"):
        load_config([*RUN_ARGV, "--hold-window", "4"])


def test_without_service_pid_files_only_the_nodes_cpu_is_reported(fixed_host):
    outcome = _outcome(_config("--pid-file", "/run/node.pid"))
    outcome.process_cpu = {
        "nodes": {"start": [10.0], "chatStart": [10.5], "chatEnd": [10.8]},
        "services": {"start": [], "chatStart": [], "chatEnd": []},
    }
    cpu = summarize(outcome)["server"]["cpu"]
    assert cpu["perDeliveryUs"] == {"nodes": 25000.0, "withServices": None}
    assert cpu["perConnectionMs"] == {"nodes": 250.0, "withServices": None}
