"""The ha topology's `prometheus` member without the ha stack: its config (compose's, with the
nodes from the targets file scripts/cluster.sh writes), and a Prometheus on it scraping a node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml
from conftest import INTERNAL_PORT_OFFSET, REPO, SESSION_CLUSTER_BASE_PORT

PROMETHEUS_PORT = SESSION_CLUSTER_BASE_PORT + 860
SCRAPED_WITHIN = 120.0  # seconds; compose's scrape interval is 15 s
PROMETHEUS = shutil.which("prometheus")


def _render_config(out: Path, targets: Path) -> dict:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ha" / "prometheus_config.py"), str(out), str(targets)],
        check=True,
        timeout=30,
    )
    return yaml.safe_load(out.read_text())


def _write_targets(path: Path, nodes: int, base_port: int) -> list[dict]:
    subprocess.run(
        [str(REPO / "scripts" / "cluster.sh"), "scrape-targets", str(nodes), str(base_port), str(path)],
        check=True,
        timeout=30,
    )
    return json.loads(path.read_text())


def test_cluster_sh_writes_every_nodes_internal_port_as_a_target(tmp_path):
    groups = _write_targets(tmp_path / "targets.json", 3, 8080)
    assert [group["targets"] for group in groups] == [["127.0.0.1:18081"], ["127.0.0.1:18082"], ["127.0.0.1:18083"]]
    assert [group["labels"]["node"] for group in groups] == ["node-1", "node-2", "node-3"]


def test_the_config_is_composes_with_the_targets_file(tmp_path):
    targets = tmp_path / "targets.json"
    config = _render_config(tmp_path / "prometheus.yml", targets)
    compose = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "chattrio"]
    assert job["file_sd_configs"][0]["files"] == [str(targets)]
    assert "static_configs" not in job
    assert config["global"] == compose["global"]
    assert [Path(rules).name for rules in config["rule_files"]] == compose["rule_files"]
    assert all(Path(rules).is_file() for rules in config["rule_files"])
    _write_targets(targets, 3, 8080)
    checked = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_ha_sh_has_a_prometheus_member():
    members = subprocess.run(
        [str(REPO / "scripts" / "ha.sh"), "members"], capture_output=True, text=True, check=True, timeout=30
    )
    assert "prometheus" in members.stdout.split()


def _targets_up(api: str, scrape_url: str) -> bool:
    try:
        active = httpx.get(f"{api}/api/v1/targets", params={"state": "active"}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return any(t["scrapeUrl"] == scrape_url and t["health"] == "up" for t in active["data"]["activeTargets"])


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (scripts/install.sh)")
async def test_prometheus_on_the_generated_config_scrapes_a_node(make_cluster, tmp_path):
    cluster = await make_cluster(1)
    node = cluster.nodes[0]
    targets = tmp_path / "targets.json"
    # A test node's internal port is its port + conftest's offset, not the node's default + 10000.
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{node.port + INTERNAL_PORT_OFFSET}"]}]))
    _render_config(tmp_path / "prometheus.yml", targets)
    api = f"http://127.0.0.1:{PROMETHEUS_PORT}"
    log = open(tmp_path / "prometheus.log", "wb")
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        scrape_url = f"{node.internal_url}/metrics"
        with trio.move_on_after(SCRAPED_WITHIN):  # a hang guard, not a speed check
            while not await trio.to_thread.run_sync(_targets_up, api, scrape_url):
                assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
                await trio.sleep(0.5)
        assert await trio.to_thread.run_sync(_targets_up, api, scrape_url), (tmp_path / "prometheus.log").read_text()[
            -3000:
        ]
        query = httpx.get(f"{api}/api/v1/query", params={"query": 'up{job="chattrio"}'}, timeout=5).json()
        assert [sample["value"][1] for sample in query["data"]["result"]] == ["1"]
    finally:
        prometheus.terminate()
        prometheus.wait(30)
