"""The comparison of chattrio with Centrifugo (scripts/peers.sh) from run records built by hand."""

import json

from chattrio.bot import compare


def _run(system, scenario, users, passed=True, p50=1.0, p99=10.0, cpu=None, chat_seconds=20, **extra):
    return {
        "date": "2026-12-02 17:00",
        "system": system,
        "scenario": scenario,
        "machine": {"loadAverageBefore": 3.5},
        "parameters": {"users": users, "chatSeconds": chat_seconds, **extra.pop("parameters", {})},
        "endToEndMs": {"p50": p50, "p99": p99},
        "lost": 0,
        "passed": passed,
        "connectPerSecond": extra.pop("connect", None),
        "serverCpu": cpu,
        **extra,
    }


def _cpu(node_us, with_us, node_ms=None, with_ms=None, nodes_chat=None, services_chat=None, **hold):
    return {
        "perDeliveryUs": {"nodes": node_us, "withServices": with_us},
        "perConnectionMs": {"nodes": node_ms, "withServices": with_ms},
        "nodes": {"chatSeconds": nodes_chat, "holdSeconds": hold.get("nodes_hold")},
        "services": {"chatSeconds": services_chat, "holdSeconds": hold.get("services_hold")},
    }


def _records():
    records = []
    for ramp in range(2):  # two ramps per system, the steps alternating between the systems
        for n in (100, 200, 300):
            records.append(
                _run(
                    "chattrio",
                    "peers-seed",
                    n,
                    passed=n <= 200 + 100 * ramp,
                    p99=50.0 * n / 100,
                    cpu=_cpu(300.0, 600.0),
                )
            )
            records.append(_run("centrifugo", "peers-seed", n, p99=10.0 * n / 100, cpu=_cpu(100.0, 150.0)))
    records.append(
        _run(
            "chattrio",
            "peers-idle",
            3000,
            usersConnected=2990,
            connect=600.0,
            cpu=_cpu(None, None, 2.0, 2.5, 0.2, 0.4),
            parameters={"memoryPerConnectionKiB": 7.0, "nodes": 2},
        )
    )
    records.append(
        _run(
            "centrifugo",
            "peers-idle",
            3000,
            usersConnected=3000,
            connect=1500.0,
            cpu=_cpu(None, None, 0.5, 0.5, 0.1, 0.02, nodes_hold=0.3, services_hold=0.01),
            parameters={"memoryPerConnectionKiB": 56.0, "holdWindowSeconds": 10, "nodes": 3},
        )
    )
    records.append(
        {
            "system": "chattrio",
            "scenario": "peers-quiet",
            "date": "x",
            "machine": {"loadAverageBefore": 9.0},
            "nodes": 2,
            "nodesCores": 0.05,
            "servicesCores": 0.06,
        }
    )
    return records


def _figure(figures, label_start):
    return next(f for f in figures if f.label.startswith(label_start))


def test_each_figure_per_run_and_the_ratio_of_medians():
    figures = compare.figures(_records(), 300)
    largest = _figure(figures, "seed: largest passing N")
    assert largest.values == {"chattrio": [200, 300], "centrifugo": [300, 300]}
    assert largest.ratio() == round(250 / 300, 2)
    p99 = _figure(figures, "seed N=300: end-to-end p99")
    assert p99.values == {"chattrio": [150.0, 150.0], "centrifugo": [30.0, 30.0]} and p99.ratio() == 5.0
    assert _figure(figures, "seed N=100: nodes + backing services").ratio() == 4.0
    assert _figure(figures, "connecting 3,000 users: per second").ratio() == 0.4
    assert _figure(figures, "connecting 3,000 users: connected").values == {"chattrio": [2990], "centrifugo": [3000]}
    assert _figure(figures, "idle, 3,000 sessions: backing services").values == {
        "chattrio": [0.02],
        "centrifugo": [0.001],
    }
    assert _figure(figures, "idle: node memory per connection").ratio() == 0.12
    # over the hold window when the run had one (Centrifugo's here), else over the whole chat
    assert _figure(figures, "idle, 3,000 sessions: nodes").values == {"chattrio": [0.01], "centrifugo": [0.03]}
    per_node = _figure(figures, "idle, 3,000 sessions: cores per node")
    assert per_node.values == {"chattrio": [0.005], "centrifugo": [0.01]}
    assert _figure(figures, "idle, no client: cores per node").values == {"chattrio": [0.025], "centrifugo": []}
    # what ran for one system only has no ratio
    quiet = _figure(figures, "idle, no client: nodes")
    assert quiet.values == {"chattrio": [0.05], "centrifugo": []} and quiet.ratio() is None


def test_the_table_and_the_record_say_how_they_were_made():
    records = _records()
    text = compare.table(records, 300, "scripts/bench.sh peers")
    assert "Command: `scripts/bench.sh peers`" in text and "3.5-9.0" in text
    assert "| seed N=300: end-to-end p99, ms | 150.0; 150.0 | 30.0; 30.0 | 5.0 |" in text
    assert "| idle, no client: nodes, cores | 0.050 | – | – |" in text
    record = compare.record(records, 300, "scripts/bench.sh peers")
    assert record["scenario"] == "peers (result)" and record["runs"] == len(records)
    assert json.loads(json.dumps(record)) == record


def test_the_table_leaves_out_the_scenarios_that_did_not_run():
    seed_only = [r for r in _records() if r["scenario"] == "peers-seed"]
    text = compare.table(seed_only, 300, 'PEERS_PARTS="seed" scripts/bench.sh peers')
    assert "| seed N=300: end-to-end p99, ms | 150.0; 150.0 | 30.0; 30.0 | 5.0 |" in text
    assert "rooms" not in text and "idle" not in text


def test_seed_ramps_start_again_when_n_does_not_grow():
    runs = [_run("chattrio", "peers-seed", n) for n in (100, 200, 100, 200, 300, 300)]
    assert [[r["parameters"]["users"] for r in ramp] for ramp in compare.seed_ramps(runs)] == [
        [100, 200],
        [100, 200, 300],
        [300],
    ]
