"""Fixtures: the real test stack (PostgreSQL, Redis, Kafka from scripts/stack.sh) and real nodes.

`make test` starts the stack with CHATTRIO_STACK=test before pytest. Every pytest run uses its
own topic prefix (topics, consumer group, Redis keys), so runs do not see each other's messages.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio

REPO = Path(__file__).resolve().parent.parent
NODE_READY_TIMEOUT = 60.0
# Lets two pytest runs on one machine (with different stacks) use different node ports.
SESSION_CLUSTER_BASE_PORT = int(os.environ.get("CHATTRIO_TEST_PORT_BASE", "18090"))
ISOLATED_BASE_PORT = SESSION_CLUSTER_BASE_PORT + 110
# The nodes refuse the public default secret and any shorter than 32 bytes (chattrio/tokens.py).
TEST_SECRET = "test-secret-of-the-pytest-nodes-0123456789"
# A test node's internal port (/metrics, /readyz) is its port + this, inside the run's port range.
INTERNAL_PORT_OFFSET = 500


def _stack_env() -> dict[str, str]:
    env = dict(os.environ, CHATTRIO_STACK=os.environ.get("CHATTRIO_STACK", "test"))
    out = subprocess.run(
        [str(REPO / "scripts" / "stack.sh"), "env"], env=env, capture_output=True, text=True, check=True
    ).stdout
    values = {}
    for line in out.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


class Node:
    def __init__(self, index: int, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.index, self.port, self.env = index, port, env
        self.node_id = f"node-{index}"
        self.url = f"http://127.0.0.1:{port}"
        self.internal_url = f"http://127.0.0.1:{port + INTERNAL_PORT_OFFSET}"
        self.log_path = log_dir / f"{env['CHATTRIO_TOPIC_PREFIX']}-{self.node_id}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chattrio",
                "serve",
                "--port",
                str(self.port),
                "--node-id",
                self.node_id,
                "--internal-port",
                str(self.port + INTERNAL_PORT_OFFSET),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()

    def wait_ready(self, timeout: float = NODE_READY_TIMEOUT) -> None:
        assert self.proc is not None, "start first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.internal_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.node_id} not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None, "start first"
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Cluster:
    """Nodes sharing the test stack under one topic prefix."""

    def __init__(self, stack_env: dict[str, str], count: int, base_port: int, prefix: str, **settings) -> None:
        log_dir = REPO / ".stack" / stack_env.get("CHATTRIO_STACK", "test") / "pytest-nodes"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **stack_env, CHATTRIO_TOPIC_PREFIX=prefix, CHATTRIO_SECRET=TEST_SECRET)
        # Every test comes from 127.0.0.1: exempt from the per-IP limits, and trusted as a proxy so
        # that a test can be another client address through X-Forwarded-For (test_limits.py).
        env.update(CHATTRIO_LIMIT_EXEMPT="127.0.0.1", CHATTRIO_TRUSTED_PROXIES="127.0.0.1")
        # Tests send hundreds of frames as fast as they are answered, beyond the default frame
        # limits; test_limits.py sets the limits it tests.
        env.update(
            {
                f"CHATTRIO_{kind}_LIMIT_PER_{scope}": "1000:1000"
                for kind in ("SEND", "SUBSCRIBE", "PING", "OTHER")
                for scope in ("CONNECTION", "USER")
            }
        )
        env.update({f"CHATTRIO_{k.upper()}": str(v) for k, v in settings.items()})
        self.prefix = prefix
        self.nodes = [Node(i, base_port + i, env, log_dir) for i in range(1, count + 1)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> Cluster:
        """Start every node and wait until each is ready; a node that is not stops them all, so
        no later test meets a leftover node on its ports."""
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                try:
                    node.terminate()
                except subprocess.TimeoutExpired:
                    node.kill()


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    return _stack_env()


@pytest.fixture(scope="session")
def run_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def shared_cluster(stack_env, run_prefix):
    nodes = Cluster(stack_env, 3, SESSION_CLUSTER_BASE_PORT, run_prefix).start()
    yield nodes
    nodes.stop()


@pytest.fixture
def cluster(shared_cluster):
    """Three nodes shared by the tests that do not stop or kill anything, each ready when a test
    begins: a test that stops a service of the stack (Kafka in test_presence.py) leaves the
    shared nodes' children restarting after their backoff, and a message sent meanwhile would
    reach the other nodes' sessions only once their fan-out is back."""
    for node in shared_cluster.nodes:
        node.wait_ready()
    return shared_cluster


@pytest.fixture
def make_cluster(stack_env, run_prefix):
    """Isolated clusters (own prefix and ports) for tests that kill nodes or stop services:
    `cluster = await make_cluster(count, **settings)`."""
    started: list[Cluster] = []
    counter = iter(range(1000))

    async def make(count: int, **settings) -> Cluster:
        n = next(counter)
        prefix = f"{run_prefix}x{uuid.uuid4().hex[:6]}"
        base_port = ISOLATED_BASE_PORT + n * 20  # 20 ports per cluster of a test
        cluster = Cluster(stack_env, count, base_port, prefix, **settings)
        started.append(cluster)  # stopped at the end even if a cancelled start left it running
        # Starting waits for /readyz with blocking calls: on a thread, so the Trio loop runs on.
        return await trio.to_thread.run_sync(cluster.start)

    yield make
    for c in started:
        c.stop()


class Stack:
    """Stops and starts the test stack's services, for outage tests (async: the Trio loop runs on)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(os.environ, **env)

    async def _run(self, *args: str) -> None:
        # Shielded: a test that fails or times out meanwhile must still get its service back.
        with trio.CancelScope(shield=True), trio.fail_after(180):
            await trio.run_process([str(REPO / "scripts" / "stack.sh"), *args], env=self.env, stdout=subprocess.DEVNULL)

    async def stop(self, service: str) -> None:
        await self._run("stop", service)

    async def start(self, service: str) -> None:
        await self._run("start", service)

    async def redis_cli(self, *args: str) -> str:
        port = self.env["CHATTRIO_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
        with trio.fail_after(10):
            done = await trio.run_process(["redis-cli", "-p", port, *args], capture_stdout=True)
        return done.stdout.decode().strip()


@pytest.fixture(scope="session")
def stack(stack_env) -> Stack:
    return Stack(stack_env)


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the test stack, so `make test-unit` can leave them out."""
    for item in items:
        if "stack_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.services)
