"""A node given a topology it cannot use stops at start with exit status 1 and says why.

Each test gives a node the test stack with one thing wrong, runs `python -m chattrio serve` and
reads its last words.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest
from conftest import ISOLATED_BASE_PORT, REPO, TEST_SECRET

# The node gives up within its own timeouts (at most a few seconds each); this only stops a hang.
NODE_EXIT_TIMEOUT = 120
# Past the ports conftest's clusters use (ISOLATED_BASE_PORT + 10 per cluster).
NODE_PORT = ISOLATED_BASE_PORT + 700
SENTINEL_PORT = ISOLATED_BASE_PORT + 701
SENTINEL_READY_TIMEOUT = 30


@contextmanager
def _closed_ports(count: int):
    """Ports bound but never listening: a connection to them is refused at once."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        yield [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _serve(stack_env: dict[str, str], **settings: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, **stack_env, CHATTRIO_TOPIC_PREFIX=f"misconf{uuid.uuid4().hex[:8]}", CHATTRIO_SECRET=TEST_SECRET
    )
    env.update({f"CHATTRIO_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "chattrio", "serve", "--port", str(NODE_PORT)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=NODE_EXIT_TIMEOUT,
    )


def _last_words(result: subprocess.CompletedProcess) -> str:
    return next(line for line in reversed(result.stderr.splitlines()) if "node failed" in line)


def test_a_broker_list_where_no_broker_answers(stack_env):
    with _closed_ports(3) as ports:
        bootstrap = ",".join(f"127.0.0.1:{port}" for port in ports)
        result = _serve(stack_env, kafka_bootstrap=bootstrap)
    assert result.returncode == 1, result.stderr[-2000:]
    words = _last_words(result)
    assert "no Kafka broker of" in words and bootstrap in words and "CHATTRIO_KAFKA_BOOTSTRAP" in words


def test_a_replication_factor_the_brokers_cannot_reach(stack_env):
    """The test stack has one broker; topics with three replicas are refused, not left missing."""
    result = _serve(stack_env, topic_replication="3")
    assert result.returncode == 1, result.stderr[-2000:]
    words = _last_words(result)
    assert "KafkaMisconfigured" in words and "replication factor 3" in words, words


def test_a_sentinel_url_where_no_sentinel_answers(stack_env):
    with _closed_ports(2) as ports:
        url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/chattrio/0"
        result = _serve(stack_env, redis_url=url)
    assert result.returncode == 1, result.stderr[-2000:]
    words = _last_words(result)
    assert "RedisMisconfigured" in words and f"127.0.0.1:{ports[0]}" in words and "'chattrio'" in words, words


@pytest.fixture
def lonely_sentinel(tmp_path):
    """A real Sentinel that monitors nothing."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    config = tmp_path / "sentinel.conf"
    config.write_text(f"bind 127.0.0.1\nport {SENTINEL_PORT}\nprotected-mode no\ndir {tmp_path}\n")
    proc = subprocess.Popen([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_pong(SENTINEL_PORT)
        yield SENTINEL_PORT
    finally:
        proc.kill()
        proc.wait(10)


def _wait_pong(port: int) -> None:
    for _ in range(SENTINEL_READY_TIMEOUT * 5):
        answer = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if answer.stdout.strip() == "PONG":
            return
        time.sleep(0.2)
    raise RuntimeError(f"Sentinel on {port} did not answer PING")


def test_a_sentinel_that_knows_no_primary(stack_env, lonely_sentinel):
    result = _serve(stack_env, redis_url=f"redis+sentinel://127.0.0.1:{lonely_sentinel}/chattrio/0")
    assert result.returncode == 1, result.stderr[-2000:]
    words = _last_words(result)
    assert "no Sentinel of" in words and "primary for service 'chattrio'" in words, words
