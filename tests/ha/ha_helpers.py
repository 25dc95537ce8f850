"""Helpers and the ha stack fixture for the tests of tests/ha/, which run with CHATTRIO_HA_TESTS=1
(import `ha_env` into a test module to use it).

A running ha stack is used as it is; otherwise the session starts it, and stops it at the end.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient
from conftest import REPO

HA = REPO / "scripts" / "ha.sh"
HA_UP_TIMEOUT = 600
MEMBER_START_TIMEOUT = 300
METADATA_TIMEOUT = 30
HA_OUTPUT_LINES = 40  # of a failed scripts/ha.sh run, shown in the error

requires_ha = pytest.mark.skipif(
    os.environ.get("CHATTRIO_HA_TESTS") != "1", reason="the ha topology tests run with CHATTRIO_HA_TESTS=1"
)


def ha(*args: str, timeout: float = 60) -> str:
    """Run scripts/ha.sh; its standard output. When it fails, the error carries what it wrote last."""
    try:
        return subprocess.run(
            [str(HA), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
            env=dict(os.environ, CHATTRIO_PYTHON=os.environ.get("CHATTRIO_PYTHON", sys.executable)),
        ).stdout.strip()
    except subprocess.CalledProcessError as exc:
        written = "\n".join((exc.stdout + exc.stderr).splitlines()[-HA_OUTPUT_LINES:])
        raise AssertionError(f"scripts/ha.sh {' '.join(args)} exited with {exc.returncode}:\n{written}") from None


def topic_partitions(bootstrap: str, topic: str) -> dict:
    """The topic's partitions' metadata, once the brokers have it (a topic created a moment ago
    may not have reached every broker yet) and every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + METADATA_TIMEOUT
    while True:
        partitions = admin.list_topics(topic, timeout=METADATA_TIMEOUT).topics[topic].partitions
        if partitions and all(p.leader >= 0 for p in partitions.values()):
            return partitions
        assert time.monotonic() < deadline, f"{topic}: no partitions with leaders in the metadata"
        time.sleep(0.2)


def kafka_leader(bootstrap: str, topic: str, partition: int) -> str:
    """The ha member (kafka-N) leading a partition now."""
    return f"kafka-{topic_partitions(bootstrap, topic)[partition].leader}"


def _env() -> dict[str, str]:
    values = {}
    for line in ha("env").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values


@pytest.fixture(scope="session")
def ha_env():
    started = subprocess.run([str(HA), "running"]).returncode != 0
    if started:
        try:
            ha("up", timeout=HA_UP_TIMEOUT)
        except BaseException:
            subprocess.run([str(HA), "down"], timeout=HA_UP_TIMEOUT)  # no half-started member outlives the run
            raise
    yield _env()
    if started:
        ha("down", timeout=HA_UP_TIMEOUT)
