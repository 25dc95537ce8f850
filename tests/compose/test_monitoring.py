"""The monitoring that ships in compose/: Prometheus's config and alerts, Grafana's dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
METRIC = re.compile(r"\bchattrio_[a-z_]+\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _named_in_dashboard() -> set[str]:
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "chattrio.json").read_text())
    return {
        name for panel in dashboard["panels"] for target in panel["targets"] for name in METRIC.findall(target["expr"])
    }


def _named_in_alerts() -> set[str]:
    return set(METRIC.findall((COMPOSE / "prometheus" / "alerts.yml").read_text()))


def _base_name(series: str, exported: set[str]) -> str:
    for suffix in HISTOGRAM_SERIES:
        if series.endswith(suffix) and series[: -len(suffix)] in exported:
            return series[: -len(suffix)]
    return series


def test_the_dashboard_and_the_alerts_name_metrics():
    assert len(_named_in_dashboard()) >= 10
    assert len(_named_in_alerts()) >= 6


async def test_every_metric_the_dashboard_and_alerts_name_is_exported_by_a_node(cluster):
    node = cluster.nodes[0]
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.internal_url}/metrics")).text
    exported = set(re.findall(r"^# TYPE (chattrio_[a-z_]+) ", text, re.M))
    named = {_base_name(name, exported) for name in _named_in_dashboard() | _named_in_alerts()}
    assert named - exported == set()


def test_prometheus_config_and_rules_pass_promtool():
    result = subprocess.run(
        ["promtool", "check", "config", str(COMPOSE / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
