"""Configuration merging: defaults < JSON file < flags."""

import json

import pytest

from chattrio.bot.config import load_config


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "bot.json"
    path.write_text(
        json.dumps(
            {"userCount": 50, "rooms": 5, "scenario": "file", "nodes": ["http://127.0.0.1:1"], "messagesPerSecond": 2}
        )
    )
    cfg = load_config(["--config", str(path), "--users", "7", "--node", "http://127.0.0.1:2,http://127.0.0.1:3"])
    assert cfg.user_count == 7 and cfg.rooms == 5 and cfg.scenario == "file" and cfg.messages_per_second == 2
    assert [n.port for n in cfg.node_endpoints()] == [2, 3]
    assert cfg.loss_grace_seconds == 5.0  # default kept


def test_single_node_urls():
    cfg = load_config(["--rest-url", "http://localhost:8080/", "--ws-url", "ws://localhost:9000/socket"])
    (node,) = cfg.node_endpoints()
    assert (node.host, node.port, node.ws_host, node.ws_port, node.ws_path) == (
        "localhost",
        8080,
        "localhost",
        9000,
        "/socket",
    )
    (derived,) = load_config(["--node", "http://h:81"]).node_endpoints()
    assert (derived.ws_host, derived.ws_port, derived.ws_path) == ("h", 81, "/ws")


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no node
        ["--node", "http://h:1", "--users", "0"],
        ["--node", "https://h:1"],
        ["--node", "http://h:1", "--message-length", "5000"],
        ["--node", "http://h:1", "--source-addresses", "0"],
        ["--node", "http://h:1", "--keepalive", "0"],
        ["--node", "http://h:1", "--via", "https://lb:1"],
        ["--node", "http://h:1", "--system", "centrifugo", "--centrifugo-secret", "s", "--token-secret", "s"],
        ["--node", "http://h:1", "--token-secret", "s", "--signups", "1"],
        ["--node", "http://h:1", "--token-secret", "s", "--flooders", "1"],
    ],
)
def test_bad_configurations(argv):
    with pytest.raises(ValueError):
        load_config(argv)


def test_unknown_file_keys_are_rejected(tmp_path):
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"nodes": ["http://h:1"], "userCuont": 3}))
    with pytest.raises(ValueError, match="userCuont"):
        load_config(["--config", str(path)])


def test_metrics_are_read_from_the_internal_port():
    derived = load_config(["--node", "http://127.0.0.1:8081,http://127.0.0.1:8082"]).metrics_endpoints()
    assert [(n.host, n.port) for n in derived] == [("127.0.0.1", 18081), ("127.0.0.1", 18082)]
    given = load_config(["--node", "http://h:1", "--metrics-url", "http://h:9100"]).metrics_endpoints()
    assert [(n.host, n.port) for n in given] == [("h", 9100)]
    with pytest.raises(ValueError, match="one metricsUrl per node"):
        load_config(["--node", "http://h:1,http://h:2", "--metrics-url", "http://h:9100"])


def test_through_a_load_balancer_users_connect_to_it_and_the_nodes_are_measured():
    cfg = load_config(
        ["--node", "http://127.0.0.1:8081,http://127.0.0.1:8082", "--via", "http://127.0.0.1:8080"]
        + ["--source-addresses", "3"]
    )
    assert [n.port for n in cfg.connect_endpoints()] == [8080]
    assert [n.port for n in cfg.metrics_endpoints()] == [18081, 18082]
    assert [cfg.source_address(i) for i in range(4)] == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
    direct = load_config(["--node", "http://127.0.0.1:8081"])
    assert [n.port for n in direct.connect_endpoints()] == [8081] and direct.source_address(5) is None


def test_the_keepalive_can_be_left_to_the_node_s_pings():
    assert load_config(["--node", "http://h:1"]).keepalive_seconds == 20.0
    assert load_config(["--node", "http://h:1", "--keepalive", "60"]).keepalive_seconds == 60.0
