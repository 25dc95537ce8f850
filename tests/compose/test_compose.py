"""compose/ against the code and the local ha topology (scripts/ha.sh): Docker cannot run here, so
these checks are what keeps the deployment files true. No service is needed."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from chattrio.config import PREFIX, Settings
from chattrio.storage.redis import parse_sentinel_url

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
HA_SH = REPO / "scripts" / "ha.sh"
# server.properties settings that name this machine's addresses, paths or the member itself
KAFKA_LOCAL_SETTINGS = {"node.id", "controller.quorum.voters", "listeners", "advertised.listeners", "log.dirs"}
# Redis and Sentinel directives that name addresses and paths
REDIS_LOCAL_DIRECTIVES = {"bind", "port", "dir", "sentinel monitor"}
# The apache/kafka image reads these KAFKA_* variables itself; the others become server.properties.
KAFKA_IMAGE_VARIABLES = {"KAFKA_HEAP_OPTS"}
# Where compose's nginx.conf lives in its container (scripts/nginx.conf.tmpl's @PREFIX@)
NGINX_PREFIX = "/var/cache/nginx"
# ${VAR}, ${VAR:-default}, ${VAR:?error}: compose's interpolation in the file's values
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")
REGENERATE = "run `python tests/compose/test_compose.py` to write it again"


# ---------------------------------------------------------------- reading compose/


def _compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def _environment(service: dict, interpolate: bool = True) -> dict[str, str]:
    """A service's variables; with `interpolate`, ${VAR...} references filled in as compose would
    with the values of .env.example."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    env = {name: "" if value is None else str(value) for name, value in env.items()}
    if interpolate:
        env = {name: INTERPOLATION.sub(lambda m: _env_example()[m.group(1)], value) for name, value in env.items()}
    return env


def _env_example() -> dict[str, str]:
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _services_named(prefix: str) -> dict[str, dict]:
    return {name: s for name, s in _compose()["services"].items() if re.fullmatch(rf"{prefix}-\d+", name)}


def _command(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(command)


def _redis_conf(text: str) -> dict[str, str]:
    """Directive -> value; `sentinel X` directives are keyed by both words."""
    directives = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        key_words = 2 if words[0] == "sentinel" else 1
        directives[" ".join(words[:key_words])] = " ".join(words[key_words:])
    return directives


# ---------------------------------------------------------------- reading scripts/ha.sh


def _ha_text() -> str:
    return HA_SH.read_text()


def _found(pattern: str, text: str, flags: int = 0) -> str:
    """The first group of `pattern` in `text`; a missing one fails the test with the pattern."""
    match = re.search(pattern, text, flags)
    assert match is not None, f"not found: {pattern}"
    return match.group(1)


def _ha_members() -> list[str]:
    return _found(r"^MEMBERS=\(([^)]*)\)", _ha_text(), re.M).split()


def _ha_count(prefix: str) -> int:
    return sum(1 for member in _ha_members() if re.fullmatch(rf"{prefix}-\d+", member))


def _redis_service() -> str:
    return _found(r"^REDIS_SERVICE=(\S+)", (REPO / "scripts" / "ha" / "ports.sh").read_text(), re.M)


def _ha_file(name: str) -> str:
    """The text ha.sh writes into a member's NAME, its shell substitutions replaced by `X`
    (they are this machine's ports and paths); the Redis service keeps its name."""
    body = _found(rf'cat > "[^\n]*/{re.escape(name)}" <<EOF\n(.*?)\nEOF\n', _ha_text(), re.S)
    body = body.replace("$REDIS_SERVICE", _redis_service())
    body = re.sub(r"\$\([^()]*\)", "X", body)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "X", body)


def _ha_kafka_properties() -> dict[str, str]:
    lines = [line for line in _ha_file("server.properties").splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _ha_env() -> dict[str, str]:
    out = subprocess.run([str(HA_SH), "env"], capture_output=True, text=True, check=True, timeout=30).stdout
    return {
        name: shlex.split(value)[0]
        for name, _, value in (line.removeprefix("export ").partition("=") for line in out.splitlines())
    }


def _kafka_property(variable: str) -> str:
    """The apache/kafka image's name mapping: KAFKA_ dropped, lower case, `___` is `-`, `__` is
    `_`, `_` is `.`."""
    name = variable.removeprefix("KAFKA_").lower()
    return name.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


# ---------------------------------------------------------------- (a) chattrio's variables


def _settings_variables() -> set[str]:
    return {PREFIX + field.name.upper() for field in dataclasses.fields(Settings)}


def _dockerfile_final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the chattrio image's last stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (COMPOSE_DIR / "chattrio" / "Dockerfile").read_text())
    instructions = [
        tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    last_from = max(i for i, (word, *_) in enumerate(instructions) if word == "FROM")
    return [(word, rest) for word, rest in instructions[last_from:]]


def _dockerfile(instruction: str) -> list[str]:
    return [rest for word, rest in _dockerfile_final_stage() if word == instruction]


def _image_environment() -> dict[str, str]:
    return dict(pair.split("=", 1) for line in _dockerfile("ENV") for pair in line.split())


def test_every_chattrio_variable_set_is_one_the_node_reads():
    known = _settings_variables()
    set_by = {
        (service, name)
        for service, spec in _compose()["services"].items()
        for name in _environment(spec)
        if name.startswith(PREFIX)
    } | {("Dockerfile", name) for name in _image_environment() if name.startswith(PREFIX)}
    assert {name for _, name in set_by} >= {"CHATTRIO_PG_DSN", "CHATTRIO_SECRET", "CHATTRIO_HOST"}
    assert sorted((service, name) for service, name in set_by if name not in known) == []


def test_the_secret_comes_from_the_environment_without_a_default():
    for name, service in _services_named("chattrio").items():
        secret = _environment(service, interpolate=False)["CHATTRIO_SECRET"]
        # ${VAR:?message}: compose refuses to start while VAR is unset or empty
        assert re.fullmatch(r"\$\{CHATTRIO_SECRET:\?[^}]+\}", secret), name
        assert "CHATTRIO_DEV_MODE" not in _environment(service), name


# ---------------------------------------------------------------- (b) replication as in the ha topology


def test_the_same_members_as_the_ha_topology():
    services = set(_compose()["services"])
    missing = {member for member in _ha_members() if member not in services}
    assert missing == set()


def test_kafka_brokers_have_the_ha_topology_settings():
    ha = _ha_kafka_properties()
    assert ha["default.replication.factor"] == "3" and ha["min.insync.replicas"] == "2"  # the parse found them
    brokers = _services_named("kafka")
    assert len(brokers) == _ha_count("kafka")
    node_ids = set()
    for name, broker in brokers.items():
        env = _environment(broker)
        properties = {
            _kafka_property(k): v for k, v in env.items() if k.startswith("KAFKA_") and k not in KAFKA_IMAGE_VARIABLES
        }
        shared = {k: v for k, v in properties.items() if k not in KAFKA_LOCAL_SETTINGS}
        assert shared == {k: v for k, v in ha.items() if k not in KAFKA_LOCAL_SETTINGS}, name
        voters = {int(voter.split("@")[0]) for voter in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")}
        assert len(voters) == _ha_count("kafka"), name  # every broker is a voter, as in ha.sh
        assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, name  # what storage format takes
        node_ids.add(int(env["KAFKA_NODE_ID"]))
        assert int(env["KAFKA_NODE_ID"]) in voters, name
    assert len(node_ids) == len(brokers)


def test_kafka_version_and_heap_are_the_ha_topology_ones():
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", (REPO / "kafka" / "pom.xml").read_text())
    ha_heap = re.search(r'^HA_KAFKA_HEAP="\$\{CHATTRIO_HA_KAFKA_HEAP:-([^}]*)\}"', _ha_text(), re.M).group(1)
    for name, broker in _services_named("kafka").items():
        assert broker["image"] == f"apache/kafka:{kafka_version.group(1)}", name
        assert _environment(broker)["KAFKA_HEAP_OPTS"] == ha_heap, name


def test_patroni_has_the_ha_topology_settings():
    ha = yaml.safe_load(_ha_file("patroni.yml"))
    compose = yaml.safe_load((COMPOSE_DIR / "patroni" / "patroni.yml").read_text())
    assert ha["bootstrap"]["dcs"]["synchronous_mode"] is True  # the parse found it
    assert compose["bootstrap"]["dcs"] == ha["bootstrap"]["dcs"]
    assert compose["bootstrap"]["initdb"] == ha["bootstrap"]["initdb"]
    assert ("etcd3" in compose) and ("etcd3" in ha)
    members = _services_named("pg")
    assert len(members) == _ha_count("pg")
    for name, member in members.items():
        assert any("patroni.yml" in volume for volume in member["volumes"]), name
        assert _environment(member)["PATRONI_NAME"] == name


def test_the_patroni_image_runs_the_version_of_the_ha_topology():
    version = re.search(r"^PATRONI_VERSION=(\S+)$", (REPO / "scripts" / "lib.sh").read_text(), re.M)
    assert version is not None, "scripts/lib.sh sets no PATRONI_VERSION"
    dockerfile = (COMPOSE_DIR / "patroni" / "Dockerfile").read_text()
    assert f'"patroni[etcd3,psycopg3]=={version.group(1)}"' in dockerfile


def test_etcd_has_as_many_members_as_in_the_ha_topology():
    members = _services_named("etcd")
    assert len(members) == _ha_count("etcd")
    for name, member in members.items():
        initial = _environment(member)["ETCD_INITIAL_CLUSTER"].split(",")
        assert sorted(entry.split("=")[0] for entry in initial) == sorted(members), name


def test_redis_and_sentinels_have_the_ha_topology_settings():
    redis = _redis_conf((COMPOSE_DIR / "redis" / "redis.conf").read_text())
    ha_redis = _redis_conf(_ha_file("redis.conf"))
    assert {k: v for k, v in ha_redis.items() if k not in REDIS_LOCAL_DIRECTIVES} == {
        k: v for k, v in redis.items() if k in ha_redis and k not in REDIS_LOCAL_DIRECTIVES
    }
    assert ha_redis.keys() <= redis.keys()

    sentinel = _redis_conf((COMPOSE_DIR / "redis" / "sentinel.conf").read_text())
    ha_sentinel = _redis_conf(_ha_file("sentinel.conf"))
    shared = {k: v for k, v in ha_sentinel.items() if k not in REDIS_LOCAL_DIRECTIVES}
    assert "sentinel down-after-milliseconds" in shared  # the parse found it
    assert {k: v for k, v in sentinel.items() if k in shared} == shared
    service, _, _, quorum = sentinel["sentinel monitor"].split()
    ha_service, _, _, ha_quorum = ha_sentinel["sentinel monitor"].split()
    assert (service, quorum) == (ha_service, ha_quorum)

    assert len(_services_named("sentinel")) == _ha_count("sentinel")
    members = _services_named("redis")
    assert len(members) == _ha_count("redis")
    primary = sentinel["sentinel monitor"].split()[1]
    replicas = [name for name, member in members.items() if f"replicaof {primary} " in _command(member)]
    assert sorted(replicas) == sorted(set(members) - {primary})


def test_nodes_reach_the_services_as_on_the_ha_topology():
    ha = _ha_env()
    for name, node in _services_named("chattrio").items():
        env = _environment(node)
        assert env["CHATTRIO_TOPIC_REPLICATION"] == ha["CHATTRIO_TOPIC_REPLICATION"], name
        dsn, ha_dsn = urlsplit(env["CHATTRIO_PG_DSN"]), urlsplit(ha["CHATTRIO_PG_DSN"])
        assert parse_qs(dsn.query) == parse_qs(ha_dsn.query), name
        assert (dsn.scheme, dsn.path) == (ha_dsn.scheme, ha_dsn.path), name
        assert sorted(host.split(":")[0] for host in dsn.netloc.split("@")[1].split(",")) == sorted(
            _services_named("pg")
        ), name
        redis, ha_redis = parse_sentinel_url(env["CHATTRIO_REDIS_URL"]), parse_sentinel_url(ha["CHATTRIO_REDIS_URL"])
        assert (redis.service, redis.db) == (ha_redis.service, ha_redis.db), name
        assert sorted(host for host, _ in redis.sentinels) == sorted(_services_named("sentinel")), name
        brokers = [address.split(":")[0] for address in env["CHATTRIO_KAFKA_BOOTSTRAP"].split(",")]
        assert sorted(brokers) == sorted(_services_named("kafka")), name
        assert len(brokers) == len(ha["CHATTRIO_KAFKA_BOOTSTRAP"].split(",")), name


# ---------------------------------------------------------------- (c) the image and the settings' defaults


def test_the_image_runs_a_node_on_the_default_ports_as_a_non_root_user():
    defaults = Settings()
    assert json.loads(_dockerfile("CMD")[-1]) == ["python", "-m", "chattrio", "serve"]
    exposed = {int(port) for line in _dockerfile("EXPOSE") for port in line.split()}
    assert exposed == {defaults.port, defaults.internal_port_number}
    env = _image_environment()
    assert "CHATTRIO_PORT" not in env and "CHATTRIO_INTERNAL_PORT" not in env  # the defaults stand
    (healthcheck,) = _dockerfile("HEALTHCHECK")
    assert f"http://127.0.0.1:{defaults.internal_port_number}/healthz" in healthcheck
    (user,) = _dockerfile("USER")
    assert user not in {"root", "0"}
    assert _dockerfile("FROM")[-1] == "python:3.11-slim"


def test_nginx_and_prometheus_reach_the_nodes_on_their_ports():
    defaults = Settings()
    nodes = sorted(_services_named("chattrio"))
    assert len(nodes) == 3
    upstreams = re.findall(r"^\s*server (\S+) ", (COMPOSE_DIR / "nginx" / "nginx.conf").read_text(), re.M)
    assert upstreams == [f"{node}:{defaults.port}" for node in nodes]
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "chattrio"]
    targets = [target for config in job["static_configs"] for target in config["targets"]]
    assert sorted(targets) == [f"{node}:{defaults.internal_port_number}" for node in nodes]


def _compose_nginx_conf() -> str:
    nginx = _compose()["services"]["nginx"]
    port = int(nginx["ports"][0].rsplit(":", 1)[1])
    return _render_nginx_template(sorted(_services_named("chattrio")), port)


def _render_nginx_template(nodes: list[str], port: int) -> str:
    """scripts/nginx.conf.tmpl filled in as scripts/cluster.sh does, for compose's nodes."""
    worker_connections = 2 * Settings().max_connections * len(nodes) + 1024
    values = {
        "@PREFIX@": NGINX_PREFIX,
        "@LB_PORT@": str(port),
        "@LB_HOST@": "0.0.0.0",
        "@USER_LINE@": "",
        "@WORKER_CONNECTIONS@": str(worker_connections),
        "@WORKER_RLIMIT_NOFILE@": str(worker_connections + 1024),
        # A container sets its own descriptor limit, so one worker per core holds them all.
        "@WORKER_PROCESSES@": "auto",
    }
    out = []
    for line in (REPO / "scripts" / "nginx.conf.tmpl").read_text().splitlines():
        if line == "@UPSTREAMS@":
            out += [f"        server {node}:{Settings().port} max_fails=3 fail_timeout=5s;" for node in nodes]
            continue
        for placeholder, value in values.items():
            line = line.replace(placeholder, value)
        out.append(line)
    rendered = "\n".join(out) + "\n"
    settings_lines = [line for line in out if not line.lstrip().startswith("#")]
    assert not re.search(r"@[A-Z_]+@", "\n".join(settings_lines)), "a placeholder of the template is not filled in"
    return rendered


def test_nginx_conf_is_the_template_rendered_for_the_compose_nodes():
    nginx = _compose()["services"]["nginx"]
    expected = _compose_nginx_conf()
    actual = (COMPOSE_DIR / "nginx" / "nginx.conf").read_text()
    assert actual == expected, "compose/nginx/nginx.conf is not scripts/nginx.conf.tmpl rendered: " + REGENERATE
    nofile = int(re.search(r"^worker_rlimit_nofile (\d+);", actual, re.M).group(1))
    assert nginx["ulimits"]["nofile"] >= nofile
    assert "./nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert f"{NGINX_PREFIX}/tmp" in nginx["tmpfs"]  # the temp paths' parent


# ---------------------------------------------------------------- (d) references


def test_every_dependency_is_a_service_and_waits_for_a_condition():
    services = _compose()["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        assert set(depends_on) <= set(services), name
        for dependency, spec in depends_on.items():
            condition = spec["condition"]
            assert condition in {"service_started", "service_healthy"}, (name, dependency)
            if condition == "service_healthy":
                assert _has_healthcheck(services[dependency]), f"{name} waits for {dependency}: no healthcheck"


def _dockerfile_of(service: dict) -> Path | None:
    build = service.get("build")
    if not build:
        return None
    if isinstance(build, str):
        return COMPOSE_DIR / build / "Dockerfile"
    return COMPOSE_DIR / build["context"] / build.get("dockerfile", "Dockerfile")


def _has_healthcheck(service: dict) -> bool:
    dockerfile = _dockerfile_of(service)
    in_image = dockerfile is not None and re.search(r"^HEALTHCHECK ", dockerfile.read_text(), re.M) is not None
    return "healthcheck" in service or in_image


def _bind_sources(service: dict) -> list[str]:
    sources = []
    for volume in service.get("volumes") or []:
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_every_mounted_file_and_build_context_exists():
    compose = _compose()
    named = set(compose.get("volumes") or {})
    checked = 0
    for name, service in compose["services"].items():
        for source in _bind_sources(service):
            assert (COMPOSE_DIR / source).exists(), f"{name} mounts {source}, which does not exist"
            checked += 1
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"
        dockerfile = _dockerfile_of(service)
        if dockerfile is not None:
            assert dockerfile.is_file(), f"{name} builds from {dockerfile}, which does not exist"
    assert checked >= 8


def test_the_redis_configs_are_copied_from_the_mounted_directory():
    for name, service in {**_services_named("redis"), **_services_named("sentinel")}.items():
        mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        (copied,) = re.findall(r"cp (/\S+)/(\S+\.conf)", _command(service))
        directory, file = copied
        assert (COMPOSE_DIR / mounted[directory] / file).is_file(), name
        assert f"redis-server /data/{file}" in _command(service), name


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed ({version.stderr.strip().splitlines()[0]})")
    env = dict(
        os.environ,
        CHATTRIO_SECRET="x" * 64,
        CHATTRIO_PG_PASSWORD="pg-password",
        PATRONI_REPLICATION_PASSWORD="replication-password",
        GRAFANA_ADMIN_PASSWORD="grafana-password",
    )
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_DIR / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr


if __name__ == "__main__":
    (COMPOSE_DIR / "nginx" / "nginx.conf").write_text(_compose_nginx_conf())
