"""The load balancer's configuration as scripts/cluster.sh writes it: sized for the nodes behind
it, no version in answers, no query strings (tokens) in its logs, logs readable by their owner
only, and the nodes' operational endpoints not reachable through it."""

from __future__ import annotations

import os
import re
import resource
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from client import connect, login
from conftest import REPO, SESSION_CLUSTER_BASE_PORT

NODE_MAX_CONNECTIONS = 20_000  # Settings.max_connections
LB_PORT = SESSION_CLUSTER_BASE_PORT + 800
START_ATTEMPTS = 150  # 0.1 s apart, plus each try's own wait: a hang guard for a starting nginx
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _render(nginx_dir: Path, nodes: int, base_port: int, descriptor_limit: int | None = None) -> Path:
    """cluster.sh's nginx.conf; with `descriptor_limit`, rendered under that hard limit."""
    command = [str(REPO / "scripts" / "cluster.sh"), "nginx-conf", str(nodes), str(base_port), str(LB_PORT)]
    if descriptor_limit is not None:
        command = ["bash", "-c", f'ulimit -n {descriptor_limit} && exec "$@"', "bash", *command]
    out = subprocess.run(
        command,
        env=dict(os.environ, CHATTRIO_NGINX_DIR=str(nginx_dir)),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def _directive(conf: str, name: str) -> str:
    found = re.search(rf"^\s*{name}\s+([^;]+);", conf, re.MULTILINE)
    assert found is not None, f"no {name} directive"
    return found.group(1)


@pytest.mark.parametrize("descriptor_limit", [None, 4096])
@pytest.mark.parametrize("nodes", [1, 3])
def test_nginx_is_sized_for_every_node_full_of_websockets(tmp_path, nodes, descriptor_limit):
    """Every node full of WebSockets passes through nginx, within the descriptor hard limit a
    worker can have (this machine's, and a lower one): where one worker per core cannot hold
    them all, there are more workers."""
    conf = _render(tmp_path, nodes, 18000, descriptor_limit).read_text()
    hard_limit = descriptor_limit or resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    connections = int(_directive(conf, "worker_connections"))
    nofile = int(_directive(conf, "worker_rlimit_nofile"))
    workers = _directive(conf, "worker_processes")
    assert connections < nofile <= hard_limit or hard_limit == resource.RLIM_INFINITY
    needed = 2 * NODE_MAX_CONNECTIONS * nodes  # client side + node side per WebSocket
    if workers == "auto":  # one per core, each able to hold them all
        assert connections >= needed
    else:
        assert int(workers) * connections >= needed * 1.1  # a tenth to spare for an uneven spread
        assert int(workers) >= os.cpu_count()


def test_nginx_hides_its_version_and_logs_no_query_strings(tmp_path):
    conf = _render(tmp_path, 3, 18000).read_text()
    assert _directive(conf, "server_tokens") == "off"
    log_format = conf[conf.index("log_format") : conf.index("access_log")]
    assert "$uri" in log_format
    assert not re.search(r"\$(request|request_uri|args|query_string)\b(?!_)", log_format)
    assert _directive(conf, "access_log").endswith(" chattrio")


def test_one_failure_does_not_take_a_node_out(tmp_path):
    conf = _render(tmp_path, 3, 18000).read_text()
    fails = [int(n) for n in re.findall(r"max_fails=(\d+)", conf)]
    assert len(fails) == 3 and min(fails) >= 2


def test_nginx_logs_are_readable_by_their_owner_only(tmp_path):
    _render(tmp_path, 1, 18000)
    for name in ("access.log", "error.log"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_through_nginx(cluster, tmp_path):
    conf = _render(tmp_path, len(cluster.nodes), SESSION_CLUSTER_BASE_PORT)
    subprocess.run(
        [NGINX, "-t", "-q", "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        check=True,
        capture_output=True,
    )
    lb = subprocess.Popen(
        [NGINX, "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{LB_PORT}"
        healthz = _first_answer(f"{url}/healthz", lb, tmp_path / "error.log")
        assert healthz.status_code == 200 and healthz.headers["server"] == "nginx"
        for path in ("/metrics", "/readyz"):
            assert httpx.get(f"{url}{path}", timeout=5).status_code == 404, path
        httpx.get(f"{url}/ws", params={"token": "secret-in-the-url"}, timeout=5)
        marker = f"/end-{time.monotonic_ns()}"
        httpx.get(f"{url}{marker}", timeout=5)
    finally:
        lb.terminate()
        lb.wait(10)
    log = (tmp_path / "access.log").read_text()
    assert marker in log  # every request above was logged before nginx stopped
    assert "/ws" in log and "secret-in-the-url" not in log and "token=" not in log


def _first_answer(url: str, lb: subprocess.Popen, error_log) -> httpx.Response:
    """The first answer of a freshly started nginx: asked again while it is still binding, as long
    as it runs, for up to START_ATTEMPTS tries (a hang guard)."""
    for _ in range(START_ATTEMPTS):
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert lb.poll() is None, error_log.read_text()
            time.sleep(0.1)
    raise AssertionError(f"nginx did not answer after {START_ATTEMPTS} tries:\n{error_log.read_text()}")


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
async def test_a_websocket_meant_for_a_full_node_goes_to_another(make_cluster, tmp_path):
    """A node at its session cap answers 503; nginx passes the handshake to the next node, so the
    cluster's whole capacity is reachable through it."""
    cluster = await make_cluster(2, max_connections=1)
    full, spare = cluster.nodes
    conf = await _render_async(tmp_path, 2, full.port - 1)
    async with _running_nginx(tmp_path, conf) as lb_url:
        holder = f"full{uuid.uuid4().hex[:8]}"
        async with connect(full.url, holder, await login(full.url, holder)):
            for attempt in range(10):  # nginx's workers each pick the first node by turns
                user = f"spill{attempt}{uuid.uuid4().hex[:6]}"
                async with connect(lb_url, user, await login(spare.url, user)) as client:
                    info = await client.wait_for(lambda f: f["type"] == "session-info")
                    assert info["nodeId"] == spare.node_id, info


async def _render_async(nginx_dir: Path, nodes: int, base_port: int) -> Path:
    command = [str(REPO / "scripts" / "cluster.sh"), "nginx-conf", str(nodes), str(base_port), str(LB_PORT)]
    done = await trio.run_process(command, env=dict(os.environ, CHATTRIO_NGINX_DIR=str(nginx_dir)), capture_stdout=True)
    return Path(done.stdout.decode().strip())


@asynccontextmanager
async def _running_nginx(prefix: Path, conf: Path) -> AsyncIterator[str]:
    args = [NGINX or "nginx", "-p", f"{prefix}/", "-e", str(prefix / "error.log"), "-c", str(conf)]
    lb = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{LB_PORT}"
        async with httpx.AsyncClient(timeout=2) as http:
            for _ in range(START_ATTEMPTS):
                try:
                    await http.get(f"{url}/lb-health")
                    break
                except httpx.TransportError:
                    assert lb.poll() is None, (prefix / "error.log").read_text()
                    await trio.sleep(0.1)
            else:
                raise AssertionError(f"nginx did not answer after {START_ATTEMPTS} tries")
        yield url
    finally:
        lb.terminate()
        with trio.move_on_after(10):
            await lb.wait()
