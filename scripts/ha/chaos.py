"""Chaos runs with a verdict on the ha topology (scripts/chaos.sh run|matrix, docs/reliability.md).

One run: the load bot chats on the running cluster (scripts/cluster.sh, CHATTRIO_STACK=ha) while
new users sign up and new rooms are created; a few seconds into the chat one fault hits one
target; the bot's records and a PostgreSQL query then decide the verdict:

- every ACKed message delivered exactly once, in order, to every member (the bot's ledger);
- every ACKed message stored exactly once in PostgreSQL;
- no SEND left more than MAX_ANSWER_WAIT without an answer (ACK or ERROR) on its connection;
- every sign-up and room creation answered 200/201 or 503, and every 201 row present after;
- every room created announced (ROOM_CREATED) to the users, and to none of them twice;
- after a fault of the Redis primary, presence ("joined" messages) and the outbox lock (new rooms
  announced) work again within BACK_AFTER_FAILOVER of Sentinel's failover.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
PYTHON = os.environ.get("CHATTRIO_PYTHON", str(REPO / ".venv" / "bin" / "python"))

TARGETS = ("node", "kafka", "kafka-leader", "kafka-controller", "redis-primary", "pg-primary")
FAULTS = ("kill", "stop")
MAX_ANSWER_WAIT = 10.0  # seconds a SEND may wait for its ACK or ERROR
STORE_TIMEOUT = 90.0  # after the run, for the persistence group to store what it still holds
HEALTHY_TIMEOUT = 240.0  # for the stack to be whole again (restarted member back, replicas in sync)
KAFKA_TIMEOUT = 10.0
# The load: a few users per room on every node, so each fault hits senders and receivers.
USERS, ROOMS, RATE = 30, 3, 1.0
RAMP_UP = 3.0
FAULT_AT = 5.0  # seconds into the chat
TAIL = 20.0  # chat after the fault ends (a kill's pause, a stop's duration); --tail
LOSS_GRACE = 15.0  # after the chat, for late answers and deliveries; --loss-grace
SIGNUPS_PER_SECOND, ROOMS_PER_SECOND = 1.0, 0.5
KEEPALIVE = 3.0  # the bot's silence before a PING, and as long again before resuming elsewhere
PRESENCE_PROBES_PER_SECOND = 1.0  # users entering the presence probe's room (chattrio/bot/presenceprobe.py)
# A "joined" message or a new room's announcement that comes later than this after the entry or the
# creation's answer did not work at once: presence or the outbox was not working then.
PROMPT = 5.0
BACK_AFTER_FAILOVER = 15.0  # seconds after Sentinel's failover for presence and the outbox lock
FAILOVER_WATCH = 60.0  # how long after the fault Sentinel is watched for a new primary


def log(text: str) -> None:
    print(f"[chaos] {text}", file=sys.stderr, flush=True)


def sh(*args: str, timeout: float = 60, check: bool = True) -> str:
    env = dict(os.environ, CHATTRIO_STACK="ha", CHATTRIO_PYTHON=PYTHON)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout.strip()


def ha(*args: str, timeout: float = 60, check: bool = True) -> str:
    return sh(str(SCRIPTS / "ha.sh"), *args, timeout=timeout, check=check)


def cluster(*args: str, timeout: float = 120) -> str:
    return sh(str(SCRIPTS / "cluster.sh"), *args, timeout=timeout)


def ha_env() -> dict[str, str]:
    values = {}
    for line in ha("env").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values


def psql(dsn: str, sql: str) -> list[list[str]]:
    out = sh("psql", dsn, "-qtA", "-F", "\t", "-c", sql, timeout=30)
    return [line.split("\t") for line in out.splitlines() if line]


def sql_list(values) -> str:
    return ",".join("'" + str(v).replace("'", "''") + "'" for v in values) or "NULL"


# ---------------------------------------------------------------- targets


class Target:
    """What a fault hits: a node of the cluster or a member of the ha stack."""

    def __init__(self, kind: str, name: str, node_index: int | None = None, pid: int | None = None) -> None:
        self.kind, self.name, self.node_index, self.pid = kind, name, node_index, pid

    def kill(self) -> None:
        if self.node_index is not None:
            cluster("kill", str(self.node_index))
        else:
            ha("kill", self.name)

    def restart(self) -> None:
        if self.node_index is not None:
            cluster("start", str(self.node_index), timeout=180)
        else:
            ha("start", self.name, timeout=HEALTHY_TIMEOUT)

    def signal(self, sig: str) -> None:
        if self.node_index is not None:
            # the node runs in its own session: its whole process group
            assert self.pid is not None
            os.killpg(self.pid, getattr(signal, f"SIG{sig}"))
        else:
            ha("signal", self.name, sig)


def running_nodes() -> list[tuple[int, int, int]]:
    """(index, port, pid) of the cluster's running nodes."""
    return [tuple(int(x) for x in line.split()) for line in cluster("nodes").splitlines() if line.strip()]


def busiest_partition_leader(bootstrap: str, topic: str) -> str:
    """The broker leading the partition of `topic` that grew most over one second."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-probe", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT).topics[topic].partitions

        def ends() -> dict[int, int]:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=KAFKA_TIMEOUT)[1]
                for p in partitions
            }

        before = ends()
        time.sleep(1.0)
        after = ends()
        busiest = max(partitions, key=lambda p: after[p] - before[p])
        leader = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT).topics[topic].partitions[busiest].leader
        log(f"busiest partition {topic}[{busiest}] (+{after[busiest] - before[busiest]} in 1 s), leader {leader}")
        return f"kafka-{leader}"
    finally:
        consumer.close()


def active_controller() -> str:
    """The KRaft quorum's leader (the active controller), from the quorum state of the newest epoch
    that the members have recorded."""
    best = None
    for i in (1, 2, 3):
        path = REPO / ".stack" / "ha" / f"kafka-{i}" / "data" / "__cluster_metadata-0" / "quorum-state"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("leaderId", -1) >= 0 and (best is None or state["leaderEpoch"] > best["leaderEpoch"]):
            best = state
    if best is None:
        raise RuntimeError("no Kafka member records a quorum leader")
    return f"kafka-{best['leaderId']}"


def pick_target(kind: str, env: dict[str, str], topic: str) -> Target:
    if kind == "node":
        index, _port, pid = random.choice(running_nodes())
        return Target(kind, f"node-{index}", node_index=index, pid=pid)
    if kind == "kafka":
        return Target(kind, f"kafka-{random.randint(1, 3)}")
    if kind == "kafka-leader":
        return Target(kind, busiest_partition_leader(env["CHATTRIO_KAFKA_BOOTSTRAP"], topic))
    if kind == "kafka-controller":
        return Target(kind, active_controller())
    if kind == "redis-primary":
        return Target(kind, ha("primary", "redis"))
    if kind == "pg-primary":
        return Target(kind, ha("primary", "pg"))
    raise ValueError(kind)


# ---------------------------------------------------------------- health


def stack_healthy(env: dict[str, str], topic: str) -> str | None:
    """None when the stack is whole again, else what is still missing."""
    if subprocess.run([str(SCRIPTS / "ha.sh"), "status"], capture_output=True, env=dict(os.environ)).returncode:
        return "a member is down or not answering (scripts/ha.sh status)"
    roles = {m: ha("role", m, check=False) for m in ("pg-1", "pg-2", "redis-1", "redis-2")}
    if "sync standby" not in roles.values():
        return f"no PostgreSQL synchronous standby yet ({roles['pg-1']}, {roles['pg-2']})"
    if not any("link up" in r for r in roles.values()):
        return "the Redis replica is not linked"
    consumer = Consumer({"bootstrap.servers": env["CHATTRIO_KAFKA_BOOTSTRAP"], "group.id": "chaos-probe"})
    try:
        metadata = consumer.list_topics(timeout=KAFKA_TIMEOUT)
        short = [
            f"{name}[{p}]"
            for name, t in metadata.topics.items()
            for p, part in t.partitions.items()
            if len(part.isrs) < len(part.replicas)
        ]
    finally:
        consumer.close()
    if short:
        return f"{len(short)} Kafka partition(s) under-replicated, e.g. {short[0]}"
    if len(running_nodes()) < 3:
        return "a chattrio node is down"
    return None


def wait_healthy(env: dict[str, str], topic: str) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while (missing := stack_healthy(env, topic)) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stack did not recover within {HEALTHY_TIMEOUT:.0f} s: {missing}")
        time.sleep(2)


# ---------------------------------------------------------------- one run


def inject(target_kind: str, fault: str, seconds: float, env: dict[str, str], topic: str, out: dict) -> None:
    """Pick the target now and apply the fault; `out` gets the victim, the fault's instant and when
    the victim was whole again (restarted, or continued)."""
    target = pick_target(target_kind, env, topic)
    out["victim"] = target.name
    if target_kind == "redis-primary":
        threading.Thread(target=watch_failover, args=(env, out), daemon=True).start()
    if target.node_index is not None:
        out["victimUrl"] = f"http://127.0.0.1:{running_port(target.node_index)}"
    if fault == "kill":
        out["faultAt"] = time.time()
        log(f"SIGKILL {target.name}; restart after {seconds:g} s")
        target.kill()
        time.sleep(seconds)
        out["restartAt"] = time.time()
        target.restart()
    else:
        out["faultAt"] = time.time()
        log(f"SIGSTOP {target.name} for {seconds:g} s")
        target.signal("STOP")
        time.sleep(seconds)
        target.signal("CONT")
        out["restartAt"] = time.time()
    out["backAt"] = time.time()


def sentinel_primary(env: dict[str, str]) -> str | None:
    """The primary's address as the first Sentinel that answers names it."""
    # redis+sentinel://host:port,host:port,.../service/db
    hosts, service = env["CHATTRIO_REDIS_URL"].split("://", 1)[1].split("/")[:2]
    for host in hosts.split(","):
        address, _, port = host.rpartition(":")
        try:
            out = subprocess.run(
                ["redis-cli", "-h", address, "-p", port, "SENTINEL", "get-master-addr-by-name", service],
                capture_output=True, text=True, timeout=1.0,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0 and len(lines := out.stdout.split()) == 2:
            return ":".join(lines)
    return None


def watch_failover(env: dict[str, str], out: dict) -> None:
    """`out["failoverAt"]`: when the Sentinels first named another primary after the fault."""
    before = sentinel_primary(env)
    deadline = time.time() + FAILOVER_WATCH
    while time.time() < deadline:
        now = sentinel_primary(env)
        if before and now and now != before:
            out["failoverAt"] = time.time()
            return
        time.sleep(0.25)


def running_port(index: int) -> int:
    return next(port for i, port, _pid in running_nodes() if i == index)


def run_one(
    target_kind: str, fault: str, seconds: float, out_dir: Path, tail: float = TAIL, loss_grace: float = LOSS_GRACE
) -> dict:
    env = ha_env()
    nodes = running_nodes()
    if len(nodes) < 3:
        raise RuntimeError("needs a cluster of 3 nodes on the ha stack (scripts/cluster.sh up 3)")
    topic = f"{os.environ.get('CHATTRIO_TOPIC_PREFIX', 'chattrio')}.messages"
    wait_healthy(env, topic)
    urls = [f"http://127.0.0.1:{port}" for _i, port, _pid in nodes]
    records_file = out_dir / f"chaos-{target_kind}-{fault}-{int(time.time())}.records.json"
    duration = FAULT_AT + seconds + tail
    bot = [
        PYTHON, "-m", "chattrio", "bot", "--scenario", f"chaos-{target_kind}-{fault}",
        "--node", ",".join(urls), "--users", str(USERS), "--rooms", str(ROOMS), "--rate", str(RATE),
        "--ramp-up", str(RAMP_UP), "--duration", str(duration), "--loss-grace", str(loss_grace),
        "--keepalive", str(KEEPALIVE), "--signups", str(SIGNUPS_PER_SECOND),
        "--room-creations", str(ROOMS_PER_SECOND), "--presence-probes", str(PRESENCE_PROBES_PER_SECOND),
        "--user-id-prefix", "chaos",
        "--records", str(records_file), "--out", str(out_dir),
    ]  # fmt: skip
    log(f"{target_kind} {fault}: bot on {len(urls)} nodes, {duration:g} s of chat")
    started = time.time()
    proc = subprocess.Popen(bot, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fault_info: dict = {}
    # The bot sets its rooms up in about a second, then ramps up: the fault comes FAULT_AT into the chat.
    time.sleep(max(0.0, started + 1.0 + RAMP_UP + FAULT_AT - time.time()))
    injector = threading.Thread(target=inject, args=(target_kind, fault, seconds, env, topic, fault_info))
    injector.start()
    bot_output, _ = proc.communicate(timeout=duration + loss_grace + 300)
    injector.join(timeout=HEALTHY_TIMEOUT)
    if proc.returncode not in (0, 1) or not records_file.exists():
        raise RuntimeError(f"the bot failed (exit {proc.returncode}):\n{bot_output[-3000:]}")
    if "faultAt" not in fault_info:
        raise RuntimeError(f"the fault was not injected ({target_kind} {fault})")
    records = json.loads(records_file.read_text())
    row = verdict(records, fault_info, env, target_kind, fault, seconds)
    row["botOutput"] = bot_output.splitlines()[-14:]
    try:
        wait_healthy(env, topic)
    except RuntimeError as exc:  # the next run needs a whole stack: this one says why it has none
        row["failures"].append(str(exc))
        row["passed"] = False
    return row


def stored_counts(env: dict[str, str], rooms: list[int], run_id: str) -> dict[str, int]:
    rows = psql(
        env["CHATTRIO_PG_DSN"],
        "SELECT client_msg_id, count(*) FROM messages"
        f" WHERE room_id IN ({','.join(map(str, rooms))}) AND client_msg_id LIKE '{run_id}.%' GROUP BY 1",
    )
    return {cmid: int(n) for cmid, n in rows}


def wait_stored(env: dict[str, str], rooms: list[int], run_id: str, acked: set[str]) -> dict[str, int]:
    deadline = time.monotonic() + STORE_TIMEOUT
    while True:
        try:
            counts = stored_counts(env, rooms, run_id)
        except RuntimeError as exc:  # the primary may still be moving
            log(f"query failed, retrying: {exc}")
            counts = {}
        if acked <= counts.keys() or time.monotonic() > deadline:
            return counts
        time.sleep(2)


def verdict(records: dict, fault: dict, env: dict[str, str], target_kind: str, fault_kind: str, seconds: float) -> dict:
    s = records["summary"]
    run_id, rooms = s["runId"], s["rooms"]
    acked = {cmid: (room, seq, at) for cmid, room, seq, at in records["acked"]}
    failures = []
    d = s["deliveries"]
    if d["lost"] or d["duplicates"] or d["outOfOrder"]:
        failures.append(f"deliveries: lost {d['lost']}, duplicated {d['duplicates']}, out of order {d['outOfOrder']}")
    if s["users"]["notResumed"]:
        failures.append(f"{s['users']['notResumed']} user(s) lost their connection and never resumed")
    if s["users"]["failed"]:
        failures.append(f"{s['users']['failed']} user(s) could not join")
    stored = wait_stored(env, rooms, run_id, set(acked))
    not_stored = [c for c in acked if c not in stored]
    stored_twice = [c for c, n in stored.items() if n > 1]
    if not_stored or stored_twice:
        failures.append(f"PostgreSQL: {len(not_stored)} ACKed message(s) not stored, {len(stored_twice)} stored twice")
    wait_ms = s["latencyMs"]["answerWait"]["max"]
    if wait_ms > MAX_ANSWER_WAIT * 1000:
        failures.append(f"a SEND waited {wait_ms / 1000:.1f} s for an answer (> {MAX_ANSWER_WAIT:g} s)")
    writes = check_writes(records["writes"], fault.get("victimUrl"), env, failures)
    announced = s["announcements"]
    unannounced = [r for r in writes["roomIds"] if announced["rooms"].get(str(r), announced["rooms"].get(r, 0)) < 1]
    if unannounced or announced["duplicates"]:
        failures.append(
            f"announcements: {len(unannounced)} new room(s) never announced, {announced['duplicates']} announced twice"
        )
    fault_at = fault["faultAt"]
    back = presence_and_outbox_back(records["presence"], records["writes"], fault_at)
    never_joined = joins_never_announced(records["presence"], fault_at)
    if target_kind == "redis-primary":
        if never_joined:
            failures.append(f"{never_joined} probe user(s) entered after the fault and were never announced")
        since = fault.get("failoverAt", fault_at)
        for what, at in back.items():
            if at is None:
                failures.append(f"{what} did not work again before the chat ended")
            elif at - since > BACK_AFTER_FAILOVER:
                failures.append(f"{what} worked again {at - since:.1f} s after Sentinel's failover")
    # The first ACK of a SEND written after the fault: when chat was served again.
    after = [at for cmid, (_r, _s, at) in acked.items() if int(cmid.rsplit(".", 1)[1]) / 1e6 >= fault_at]
    errors = sum(s["messages"]["errors"].values())
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": target_kind,
        "fault": "SIGKILL" if fault_kind == "kill" else "SIGSTOP",
        "seconds": seconds,
        "victim": fault["victim"],
        "serviceBackSeconds": round(min(after) - fault_at, 1) if after else None,
        "acked": len(acked),
        "errors": errors,
        "lost": d["lost"] + len(not_stored),
        "duplicated": d["duplicates"] + len(stored_twice) + announced["duplicates"],
        "maxAnswerWaitSeconds": round(wait_ms / 1000, 1),
        "ackP99Ms": s["latencyMs"]["ack"]["p99"],
        "reconnects": s["reconnects"]["reconnects"],
        "failoverSeconds": round(fault["failoverAt"] - fault_at, 1) if "failoverAt" in fault else None,
        **{f"{what}BackSeconds": None if at is None else round(at - fault_at, 1) for what, at in back.items()},
        "joinsNeverAnnounced": never_joined,
        **{k: v for k, v in writes.items() if k != "roomIds"},
        "runId": run_id,
        "loadAverage": round(os.getloadavg()[0], 1),
        "passed": not failures,
        "failures": failures,
    }


def presence_and_outbox_back(presence: dict, writes: list[dict], fault_at: float) -> dict[str, float | None]:
    """When presence and the outbox lock worked again after the fault: the first prompt "joined"
    message (or announcement) after the last late or missing one. The fault instant when none
    was late; None when the last one was."""
    joins = presence["joins"]
    entries = [
        (e["at"], e["user"] in joins and joins[e["user"]] - e["at"] <= PROMPT)
        for e in presence["entries"] if e["at"] >= fault_at and "error" not in e
    ]  # fmt: skip
    announced = {int(k): v for k, v in presence["announced"].items()}
    rooms = []
    for w in writes:
        if w["kind"] == "room" and w["status"] == 201 and w["startedAt"] >= fault_at:
            answered = w["attempts"][-1]["at"] + w["attempts"][-1]["seconds"]
            rooms.append((answered, w["roomId"] in announced and announced[w["roomId"]] - answered <= PROMPT))
    return {"presence": _back_at(entries, fault_at), "announcements": _back_at(rooms, fault_at)}


def joins_never_announced(presence: dict, fault_at: float) -> int:
    """Probe users who entered after the fault (and were let in) but whose "joined" never came."""
    joins = presence["joins"]
    return sum(1 for e in presence["entries"] if e["at"] >= fault_at and "error" not in e and e["user"] not in joins)


def _back_at(outcomes: list[tuple[float, bool]], fault_at: float) -> float | None:
    outcomes.sort()
    late = [i for i, (_at, prompt) in enumerate(outcomes) if not prompt]
    if not late:
        return fault_at
    return outcomes[late[-1] + 1][0] if late[-1] + 1 < len(outcomes) else None


def check_writes(writes: list[dict], victim_url: str | None, env: dict[str, str], failures: list[str]) -> dict:
    """Every write answered 200/201/503; an attempt that got no answer only from the faulted node;
    every 201 row present now. Also the longest stretch of sign-ups answered 503."""
    bad = [w for w in writes if w["status"] not in (200, 201, 503)]
    silent = [a for w in writes for a in w["attempts"] if "error" in a and a["node"] != victim_url]
    if bad:
        failures.append(f"{len(bad)} write(s) not answered 200/201/503, e.g. {bad[0]['key']}: {bad[0]['status']}")
    if silent:
        failures.append(f"{len(silent)} write attempt(s) at a healthy node got no answer, e.g. {silent[0]}")
    users = [w["key"] for w in writes if w["kind"] == "signup" and w["status"] == 201]
    room_ids = [w["roomId"] for w in writes if w["kind"] == "room" and w["status"] == 201]
    found_users = {r[0] for r in psql(env["CHATTRIO_PG_DSN"], f"SELECT id FROM users WHERE id IN ({sql_list(users)})")}
    found_rooms = {
        int(r[0]) for r in psql(env["CHATTRIO_PG_DSN"], f"SELECT id FROM rooms WHERE id IN ({sql_list(room_ids)})")
    }
    missing = len(set(users) - found_users) + len(set(room_ids) - found_rooms)
    if missing:
        failures.append(f"{missing} row(s) answered 201 are not in PostgreSQL")
    signups = sorted((w for w in writes if w["kind"] == "signup"), key=lambda w: w["startedAt"])
    longest = 0.0
    first_503 = None
    for w in signups:
        if w["status"] == 503:
            first_503 = first_503 if first_503 is not None else w["startedAt"]
            longest = max(longest, w["startedAt"] - first_503)
        else:
            first_503 = None
    count = lambda kind, status: sum(1 for w in writes if w["kind"] == kind and w["status"] == status)  # noqa: E731
    return {
        "signups201": count("signup", 201),
        "signups503": count("signup", 503),
        "rooms201": count("room", 201),
        "rooms503": count("room", 503),
        "signup503Seconds": round(longest, 1),
        "rowsMissing": missing,
        "roomIds": room_ids,
    }


# ---------------------------------------------------------------- output

HEADER = (
    "| target | fault | victim | service back (s) | ACKed | ERROR | lost | duplicated | longest SEND wait (s) "
    "| ACK p99 (ms) | sign-ups 201 / 503 (longest 503 run, s) | rooms 201 / 503 "
    "| presence / announcements back (s) | load | verdict |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def table_row(r: dict) -> str:
    fault = r["fault"] + (f" {r['seconds']:g} s" if r["fault"] == "SIGSTOP" else f", restart after {r['seconds']:g} s")
    back = "-" if r["serviceBackSeconds"] is None else f"{r['serviceBackSeconds']:.1f}"
    verdict_text = "pass" if r["passed"] else "FAIL: " + "; ".join(r["failures"])
    cells = [
        r["target"], fault, r["victim"], back, str(r["acked"]), str(r["errors"]), str(r["lost"]),
        str(r["duplicated"]), f"{r['maxAnswerWaitSeconds']:.1f}", f"{r['ackP99Ms']:.0f}",
        f"{r['signups201']} / {r['signups503']} ({r['signup503Seconds']:.1f})", f"{r['rooms201']} / {r['rooms503']}",
        f"{_seconds(r['presenceBackSeconds'])} / {_seconds(r['announcementsBackSeconds'])}"
        + (f" (failover {r['failoverSeconds']:.1f})" if r["failoverSeconds"] is not None else ""),
        f"{r['loadAverage']}", verdict_text,
    ]  # fmt: skip
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |\n"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def write_doc(rows: list[dict], command: str, started: float, doc: Path) -> None:
    """Replace the results section of docs/reliability.md (between its markers)."""
    begin, end = "<!-- chaos-results:begin -->", "<!-- chaos-results:end -->"
    text = doc.read_text()
    if begin not in text or end not in text:
        raise RuntimeError(f"{doc} lacks the markers {begin} ... {end}")
    minutes = (time.time() - started) / 60
    body = (
        f"{begin}\n`{command}` on {dt.date.today().isoformat()}, {len(rows)} runs in {minutes:.1f} min"
        f" (load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):\n\n"
        + HEADER
        + "".join(table_row(r) for r in rows)
        + f"\n{end}"
    )
    head, rest = text.split(begin, 1)
    doc.write_text(head + body + rest.split(end, 1)[1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos.sh")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one fault under load, with a verdict")
    one.add_argument("target", choices=TARGETS)
    one.add_argument("fault", choices=FAULTS)
    one.add_argument("--seconds", type=float, help="a kill's pause before the restart / a stop's duration")
    matrix = sub.add_parser("matrix", help="every target x every fault")
    matrix.add_argument("--doc", type=Path, help="write the table into this file (docs/reliability.md)")
    for p in (one, matrix):
        p.add_argument("--kill-pause", type=float, default=5.0)
        p.add_argument("--stop-seconds", type=float, default=20.0)
        p.add_argument("--tail", type=float, default=TAIL, help="seconds of chat after the fault ends")
        p.add_argument("--loss-grace", type=float, default=LOSS_GRACE, help="seconds for late answers after the chat")
        p.add_argument("--out", type=Path, default=REPO / "bench-results" / "chaos")
        p.add_argument("--command-line", default="")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cells = (
        [(args.target, args.fault)]
        if args.command == "run"
        else [(t, f) for t in TARGETS for f in FAULTS]
    )
    rows = []
    for target_kind, fault in cells:
        seconds = getattr(args, "seconds", None) or (args.kill_pause if fault == "kill" else args.stop_seconds)
        try:
            row = run_one(target_kind, fault, seconds, args.out, args.tail, args.loss_grace)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            log(f"{target_kind} {fault}: the run failed: {exc}")
            row = {"target": target_kind, "fault": "SIGKILL" if fault == "kill" else "SIGSTOP", "seconds": seconds,
                   "victim": "-", "serviceBackSeconds": None, "acked": 0, "errors": 0, "lost": 0, "duplicated": 0,
                   "maxAnswerWaitSeconds": 0.0, "ackP99Ms": 0.0, "signups201": 0, "signups503": 0,
                   "signup503Seconds": 0.0, "rooms201": 0, "rooms503": 0, "failoverSeconds": None,
                   "presenceBackSeconds": None, "announcementsBackSeconds": None, "joinsNeverAnnounced": 0,
                   "loadAverage": round(os.getloadavg()[0], 1),
                   "passed": False, "failures": [f"the run failed: {str(exc)[:300]}"]}  # fmt: skip
        rows.append(row)
        with open(args.out / "chaos.jsonl", "a") as results:
            results.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "botOutput"}), flush=True)
    print(HEADER + "".join(table_row(r) for r in rows), file=sys.stderr)
    if args.command == "matrix" and args.doc:
        write_doc(rows, args.command_line or "scripts/chaos.sh matrix", started, args.doc)
        log(f"table written to {args.doc}")
    failed = [r for r in rows if not r["passed"]]
    log(f"{len(rows) - len(failed)} of {len(rows)} run(s) passed ({(time.time() - started) / 60:.1f} min)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
