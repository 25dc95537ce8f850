"""Chaos on the ha topology with the zero-loss verdict (scripts/chaos.sh run, docs/reliability.md).

Each case runs the load bot on three nodes, hits one target with one fault a few seconds into the
chat and asserts the verdict scripts/ha/chaos.py decides from the bot's records and PostgreSQL:
every ACKed message delivered once and in order to every member and stored once, no SEND left
more than 10 s without an answer, every sign-up and room creation answered 200/201 or 503 and
every 201 row present, every new room announced once, and after a fault of the Redis primary
presence and the outbox lock working again within 15 s of Sentinel's failover. The runs are shorter than `make chaos`'s
(a 3 s pause before a restart, 12 s of SIGSTOP, CHAT_TAIL s of chat after the fault ends and
LOSS_GRACE for late answers); the verdict is the same.

Runs only with CHATTRIO_HA_TESTS=1, which scripts/test.sh (`make test`) sets for tests/ha unless
CHAOS_TESTS=0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SESSION_CLUSTER_BASE_PORT
from ha_helpers import HA_UP_TIMEOUT, ha_env, requires_ha  # noqa: F401 - ha_env is a fixture

pytestmark = requires_ha

CHAOS = REPO / "scripts" / "chaos.sh"
CLUSTER = REPO / "scripts" / "cluster.sh"
NODE_PORT_BASE = SESSION_CLUSTER_BASE_PORT + 600
KILL_PAUSE = 3
STOP_SECONDS = 12
# Chat after the fault ends: longer than the 10 s a SEND may wait, so a SEND written as the
# victim comes back is answered (or found unanswered) within the run.
CHAT_TAIL = 12
LOSS_GRACE = 10
RUN_TIMEOUT = 900  # a run waits for the stack to be whole before and after its fault


def _env() -> dict[str, str]:
    python = os.environ.get("CHATTRIO_PYTHON", sys.executable)
    return dict(
        os.environ,
        CHATTRIO_STACK="ha",
        CHATTRIO_PYTHON=python,
        CHATTRIO_SERVER_CMD=f"{python} -m chattrio serve",
        CHATTRIO_TOPIC_PREFIX="chaostest",
        CHATTRIO_LIMIT_EXEMPT="127.0.0.1,::1",
    )


@pytest.fixture(scope="module")
def chaos_cluster(ha_env):
    """Three nodes on the ha stack (scripts/cluster.sh), shared by the cases of this module."""
    up = [str(CLUSTER), "up", "3", "--base-port", str(NODE_PORT_BASE), "--no-lb"]
    subprocess.run(up, env=_env(), check=True, timeout=HA_UP_TIMEOUT)
    yield
    subprocess.run([str(CLUSTER), "down"], env=_env(), check=False, timeout=120)


def _chaos(target: str, fault: str, seconds: int) -> dict:
    proc = subprocess.run(
        [
            str(CHAOS),
            "run",
            target,
            fault,
            "--seconds",
            str(seconds),
            "--tail",
            str(CHAT_TAIL),
            "--loss-grace",
            str(LOSS_GRACE),
        ],  # fmt: skip
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows, f"scripts/chaos.sh gave no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return rows[0]


@pytest.mark.parametrize(
    "target, fault, seconds",
    [
        ("node", "kill", KILL_PAUSE),
        ("kafka-leader", "kill", KILL_PAUSE),
        ("kafka-controller", "kill", KILL_PAUSE),
        ("redis-primary", "kill", KILL_PAUSE),
        ("pg-primary", "kill", KILL_PAUSE),
        ("kafka-leader", "stop", STOP_SECONDS),
        ("pg-primary", "stop", STOP_SECONDS),
    ],
)
def test_a_fault_under_load_loses_nothing(chaos_cluster, target, fault, seconds):
    row = _chaos(target, fault, seconds)
    assert row["acked"] > 0 and row["victim"] != "-", row
    assert row["passed"], f"{target} {fault} ({row['victim']}): {row['failures']}"
