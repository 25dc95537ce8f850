"""Running a load test: the parent sets up rooms and samples the servers, workers run users.

Time is shared as wall-clock seconds (`t0`) because workers are separate processes on the same
machine; inside a worker it is converted to trio's clock once.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import secrets
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio

from chattrio.bot.centrifugo import CentrifugoUser
from chattrio.bot.config import BotConfig, Node
from chattrio.bot.flooder import flood
from chattrio.bot.frames import ChatMessage
from chattrio.bot.hostcpu import HostCpu
from chattrio.bot.http import HttpError, HttpPool, setup_request
from chattrio.bot.metrics import read_rss, scrape
from chattrio.bot.presenceprobe import PresenceProbe
from chattrio.bot.proccpu import cpu_seconds
from chattrio.bot.receiver import Receiver
from chattrio.bot.sendclock import SendClock
from chattrio.bot.settle import SettleState, settled, state_of
from chattrio.bot.stats import Histogram, Ledger, RoomMessageSeen, SeenMessage, Timeline
from chattrio.bot.user import SimUser, signed_token
from chattrio.bot.writes import WriteProbe

PROGRESS_INTERVAL = 1.0
CONNECTED_POLL_SECONDS = 0.2
# During the ramp-up, what exists is frozen this often (see freeze_while_ramping).
FREEZE_INTERVAL = 2.0
LAG_PROBE_SECONDS = 0.1
# How often a worker reports its settle state after the chat (--until-settled): the grace
# ends at most this long after the run settles.
SETTLE_POLL_SECONDS = 0.1
# A worker process says it is ready once its imports are done; a busy machine may take seconds.
WORKER_START_TIMEOUT = 120.0
ROOM_LIST_PAGE = 200  # the largest page GET /api/room serves
MAX_NOTES = 30
# Counters the hot path increments without a lookup miss.
# Distinct ROOM_MESSAGE frames a worker keeps decoded: far more than arrive while a message
# reaches all of its room's members.
ROOM_MESSAGES_REMEMBERED = 8192
_HOT_COUNTERS = ("duplicates", "outOfOrder", "delivered")


class WorkerPlan(msgspec.Struct):
    config: BotConfig
    run_id: str
    t0: float
    room_ids: list[int]
    user_indices: list[int]


class Schedule(msgspec.Struct, frozen=True):
    """Wall-clock instants of a run; users join during [t0, chat_start)."""

    t0: float
    ramp: float
    chat_start: float
    chat_end: float
    leave_at: float

    @classmethod
    def of(cls, cfg: BotConfig, t0: float) -> Schedule:
        chat_start = t0 + cfg.ramp_up_time_seconds
        chat_end = chat_start + cfg.chat_duration_seconds
        return cls(t0, cfg.ramp_up_time_seconds, chat_start, chat_end, chat_end + cfg.loss_grace_seconds)

    def user_start(self, index: int, user_count: int) -> float:
        return self.t0 + self.ramp * index / user_count


class Progress(msgspec.Struct, kw_only=True):
    """A worker's running totals for the live progress line, and the end-to-end latencies of
    the last whole second (a histogram's wire form, so that workers' seconds merge exactly)."""

    connected: int = 0
    failed: int = 0
    live: int = 0
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    reconnects: int = 0
    last_second_latency: dict | None = None

    @classmethod
    def combine(cls, snapshots: list[Progress]) -> tuple[Progress, Histogram]:
        """The totals of all workers, and their last second's latencies merged."""
        counts = [name for name in cls.__struct_fields__ if name != "last_second_latency"]
        total = cls(**{name: sum(getattr(p, name) for p in snapshots) for name in counts})
        latency = Histogram()
        for p in snapshots:
            if p.last_second_latency is not None:
                latency.merge(Histogram.from_wire(p.last_second_latency))
        return total, latency


def message_text(length: int) -> str:
    base = "the quick brown fox jumps over the lazy dog "
    return (base * (length // len(base) + 1))[:length].rstrip() or "x" * length


class WorkerContext:
    """State shared by the users of one worker process."""

    def __init__(self, plan: WorkerPlan) -> None:
        cfg = plan.config
        self.config = cfg
        self.run_prefix = f"{plan.run_id}."
        self.text = message_text(cfg.message_length)
        schedule = Schedule.of(cfg, plan.t0)
        offset = trio.current_time() - time.time()
        self.schedule = schedule
        self.chat_start = schedule.chat_start + offset
        self.chat_end = schedule.chat_end + offset
        self.leave_at = schedule.leave_at + offset
        self.clock_offset = offset
        self.ledger = Ledger(timeline=Timeline(plan.t0))
        # A ROOM_MESSAGE's bytes -> its record; a MESSAGES frame's -> the records of its messages.
        self.room_messages: dict[bytes, RoomMessageSeen | tuple[RoomMessageSeen, ...]] = {}
        for name in _HOT_COUNTERS:
            self.ledger.counters[name] = 0
        self.stop_opening = False
        self.notes: list[str] = []
        self.live = 0
        self.users: list[SimUser] = []  # this worker's, for the settle reports
        self.acked_highest: dict[int, int] = {}  # room -> highest seq acknowledged to our users
        self._pools: dict[Node, HttpPool] = {}
        # The steady-state hot paths of all users: run by run_worker, one task each.
        self.receiver = Receiver()
        self.send_clock = SendClock(cfg.messages_per_second, self.chat_start, self.chat_end)

    def remember_room_message(self, payload: bytes, message: ChatMessage) -> RoomMessageSeen:
        """The receive path's record of a ROOM_MESSAGE, kept for the other users who get the
        same bytes. The send time rides at the end of the bot's clientMsgIds."""
        entry = self._seen_entry(message)
        self._remember(payload, entry)
        return entry

    def remember_messages(self, payload: bytes, messages: list[ChatMessage]) -> tuple[RoomMessageSeen, ...]:
        """The same for a MESSAGES frame: one record per message, in order."""
        entries = tuple(self._seen_entry(message) for message in messages)
        self._remember(payload, entries)
        return entries

    def _seen_entry(self, message: ChatMessage) -> RoomMessageSeen:
        cmid = message.clientMsgId
        seen = sent_us = None
        if cmid is not None and cmid.startswith(self.run_prefix):
            seen = self.ledger.seen.get(cmid)
            if seen is None:
                seen = self.ledger.seen[cmid] = SeenMessage(message.seq)
            sent_us = int(cmid[cmid.rindex(".") + 1 :])
        return RoomMessageSeen(message.roomId, message.seq, message.kind, seen, sent_us)

    def _remember(self, payload: bytes, entry: RoomMessageSeen | tuple[RoomMessageSeen, ...]) -> None:
        if len(self.room_messages) >= ROOM_MESSAGES_REMEMBERED:
            self.room_messages.clear()  # the members of a room get a message within moments
        self.room_messages[payload] = entry

    def http_pool(self, node: Node) -> HttpPool:
        pool = self._pools.get(node)
        if pool is None:
            pool = self._pools[node] = HttpPool(node)
        return pool

    def user_connected(self, node: Node) -> None:
        self.ledger.connected_at.record(int((time.time() - self.schedule.t0) * 1e6))
        self.ledger.inc("usersConnected")
        self.ledger.inc(f"connectedAt:{node.base_url}")
        self.live += 1

    def user_failed(self, exc: BaseException) -> None:
        self.ledger.inc("usersFailed")
        self.ledger.inc(f"failure:{type(exc).__name__}")
        self.note("user failed", exc)
        # A refusal is an answer (an HTTP error, a refused or closed connection); a timeout only
        # says the server is slow right now, so it does not end a capacity run.
        if self.config.stop_on_refusal and not isinstance(exc, trio.TooSlowError):
            self.stop_opening = True

    def note(self, what: str, exc: BaseException) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{what}: {type(exc).__name__}: {exc}")

    def protocol_violation(self, text: str) -> None:
        self.ledger.inc("protocolViolations")
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"protocol: {text}")

    def progress(self) -> Progress:
        ledger = self.ledger
        c = ledger.counters
        return Progress(
            connected=c.get("usersConnected", 0),
            failed=c.get("usersFailed", 0),
            live=self.live,
            sent=len(ledger.sent),
            acked=ledger.ack.count,
            delivered=c.get("delivered", 0),
            reconnects=c.get("reconnects", 0),
            last_second_latency=ledger.timeline.last_complete_second(time.time()).to_wire(),
        )

    def settle_state(self) -> SettleState:
        return state_of(self.users, self.acked_highest)

    def leave_now(self) -> None:
        self.leave_at = trio.current_time()
        for user in self.users:
            user.leave_now()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self.receiver.close()


def raise_fd_limit() -> None:
    """Thousands of sockets need more descriptors than the usual soft limit (as root we may
    also raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 20, hard):
        if soft != resource.RLIM_INFINITY and want > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
                return
            except (ValueError, OSError):
                continue


async def freeze_while_ramping(ramp_end: float) -> None:
    """Move every object to the permanent generation (`gc.freeze`) every FREEZE_INTERVAL until
    `ramp_end` (trio clock), and give them back to the collector when cancelled.

    Users set up in the ramp live until the end of the run. A full collection walks every tracked
    object: with 15,000 users a worker stalled for seconds, long enough for its own 10 s connect
    timeouts to fail users the servers had nothing to do with. Frozen objects are skipped, so a
    full collection only walks what is new. Cyclic garbage frozen with them waits for the end of
    the run; only the ramp freezes, so that is bounded."""
    try:
        while trio.current_time() < ramp_end:
            await trio.sleep(FREEZE_INTERVAL)
            gc.freeze()
        await trio.sleep_forever()
    finally:
        gc.unfreeze()


async def run_worker(
    plan: WorkerPlan,
    on_progress: Callable[[Progress], None],
    on_settle: Callable[[SettleState], None] | None = None,
    leave: trio.Event | None = None,
) -> tuple[Ledger, list[str]]:
    """Run the plan's users. With `untilSettled`, report the settle state to `on_settle` from
    the end of the chat on, and let the users leave once `leave` is set."""
    raise_fd_limit()
    ctx = WorkerContext(plan)
    cfg = plan.config
    nodes = cfg.connect_endpoints()
    async with trio.open_nursery() as outer:

        async def report_progress() -> None:
            while True:
                on_progress(ctx.progress())
                await trio.sleep(PROGRESS_INTERVAL)

        async def watch_loop_lag() -> None:
            while True:
                before = trio.current_time()
                await trio.sleep(LAG_PROBE_SECONDS)
                lag_us = int((trio.current_time() - before - LAG_PROBE_SECONDS) * 1e6)
                ctx.ledger.loop_lag.record(lag_us)
                ctx.ledger.timeline.note_loop_lag(time.time(), lag_us)

        async def measure_chat_cpu() -> None:
            # The CPU the bot takes from the nodes while the figures are measured, without the
            # logins and connections of the ramp-up.
            await trio.sleep_until(ctx.chat_start)
            started = time.process_time()
            await trio.sleep_until(ctx.chat_end)
            ctx.ledger.inc("chatCpuMs", int((time.process_time() - started) * 1000))

        outer.start_soon(report_progress)
        outer.start_soon(watch_loop_lag)
        outer.start_soon(measure_chat_cpu)
        outer.start_soon(ctx.receiver.run)
        outer.start_soon(ctx.send_clock.run)
        outer.start_soon(freeze_while_ramping, ctx.chat_start)
        if cfg.until_settled:
            assert on_settle is not None and leave is not None

            async def report_settling() -> None:
                await trio.sleep_until(ctx.chat_end)
                while True:
                    on_settle(ctx.settle_state())
                    await trio.sleep(SETTLE_POLL_SECONDS)

            async def leave_when_settled() -> None:
                await leave.wait()
                ctx.leave_now()

            outer.start_soon(report_settling)
            outer.start_soon(leave_when_settled)
        user_class = CentrifugoUser if cfg.system == "centrifugo" else SimUser
        async with trio.open_nursery() as users:
            for i in plan.user_indices:
                home = i % len(nodes)
                user = user_class(ctx, i, plan.room_ids[i % len(plan.room_ids)], nodes[home:] + nodes[:home])
                if cfg.until_settled:
                    ctx.users.append(user)
                users.start_soon(user.run, ctx.schedule.user_start(i, cfg.user_count) + ctx.clock_offset)
        outer.cancel_scope.cancel()
    on_progress(ctx.progress())
    await ctx.aclose()
    ctx.ledger.inc("cpuMs", int(time.process_time() * 1000))
    return ctx.ledger, ctx.notes


# -- the parent ---------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    run_id: str
    config: BotConfig
    schedule: Schedule
    ledger: Ledger
    notes: list[str]
    rooms: list[int]
    metrics: dict[str, list[dict[str, float] | None]]
    rss: dict[str, list[int | None]]
    exec_result: dict | None
    started_at: float
    finished_at: float
    load_before: float  # 1-minute load average at the start: was the machine busy with other work?
    host_cpu: HostCpu  # the machine's busy and stolen cores, second by second
    flood: dict[str, int] | None = None  # what the flooders did (sent, acked, rateLimited, ...)
    writes: list[dict] | None = None  # the sign-ups and room creations of the chat (WriteProbe)
    presence: dict | None = None  # the presence probe's entries, joins and announcements
    # CPU seconds so far of each node's and each backing service's processes, at the run's start
    # (t0), once every user has connected or failed, at the chat's start and at its end:
    # "nodes"/"services" -> instant -> one value per pid file
    process_cpu: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    # --until-settled: how long after the chat's end the run settled and the users left; None
    # when the grace was waited out.
    settled_after_chat: float | None = None


async def create_rooms(cfg: BotConfig, pool: HttpPool, run_id: str) -> list[int]:
    owner = f"{cfg.user_id_prefix}owner"
    token = signed_token(owner, cfg.token_secret) if cfg.token_secret else await _owner_sign_in(pool, owner)
    room_ids: list[int] = []
    for k in range(cfg.rooms):
        name = f"{cfg.scenario}-{run_id}-{k}"
        response = await setup_request(pool, "POST", "/api/room", {"name": name}, token=token)
        if response.status != 201:
            raise RuntimeError(f"cannot create room {name}: HTTP {response.status} {response.body[:200]!r}")
        room_ids.append(int(response.json()["data"]["id"]))  # type: ignore[index]
    listed = await listed_room_ids(pool, f"{cfg.scenario}-{run_id}-")
    if sorted(listed) != sorted(room_ids):
        raise RuntimeError(f"the room list (GET /api/room?q=) shows {len(listed)} of the {len(room_ids)} rooms created")
    return room_ids


async def _owner_sign_in(pool: HttpPool, owner: str) -> str:
    response = await setup_request(pool, "POST", f"/api/user/enter/{owner}")
    if response.status not in (200, 201):
        raise RuntimeError(f"cannot log in {owner}: HTTP {response.status} {response.body[:200]!r}")
    token: str = response.json()["data"]["token"]  # type: ignore[index]
    return token


async def listed_room_ids(pool: HttpPool, search: str) -> list[int]:
    """The ids of every room whose name contains `search`, page by page through the room list's cursor."""
    ids: list[int] = []
    cursor = None
    while True:
        query = {"q": search, "limit": ROOM_LIST_PAGE, **({"cursor": cursor} if cursor else {})}
        response = await setup_request(pool, "GET", f"/api/room?{urllib.parse.urlencode(query)}")
        if response.status != 200:
            raise RuntimeError(f"cannot list rooms: HTTP {response.status} {response.body[:200]!r}")
        page = response.json()["data"]  # type: ignore[index]
        ids += [int(room["id"]) for room in page["rooms"]]
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            return ids


async def _run_exec(command: str, at: float, chat_start: float) -> dict:
    await trio.sleep_until(at - time.time() + trio.current_time())
    into_chat = round(time.time() - chat_start, 3)
    with trio.move_on_after(60):
        proc = await trio.run_process(command, shell=True, capture_stdout=True, capture_stderr=True, check=False)
        return {
            "command": command,
            "secondsIntoChat": into_chat,
            "returncode": proc.returncode,
            "output": (proc.stdout + proc.stderr).decode("utf-8", "replace")[-2000:],
        }
    return {"command": command, "secondsIntoChat": into_chat, "returncode": None, "output": "timed out"}


class WorkerLine(msgspec.Struct):
    """One line a worker process writes (chattrio/bot/worker.py): exactly one field is set."""

    ready: bool = False
    progress: Progress | None = None
    settle: SettleState | None = None
    result: dict | None = None  # {"ledger": Ledger.to_wire(), "notes": [...]}


class WorkerProcess:
    """A worker in a process of its own (`--workers N`, chattrio/bot/worker.py). It says it is
    ready once its imports are done, then gets its plan, so that a slow start (a busy machine)
    delays the run's t0 rather than the users' joining; JSON lines both ways."""

    def __init__(self) -> None:
        self._proc: trio.Process | None = None
        self._buf = b""

    async def start(self) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chattrio.bot.worker"], stdin=-1, stdout=-1, env=env
        )
        with trio.fail_after(WORKER_START_TIMEOUT):
            line = await self._next_line()
        if line is None or not line.ready:
            raise RuntimeError(f"worker process started with {line!r} instead of ready")

    async def _next_line(self) -> WorkerLine | None:
        """The worker's next line, None at the end of its output."""
        assert self._proc is not None and self._proc.stdout is not None
        while b"\n" not in self._buf:
            chunk = await self._proc.stdout.receive_some(1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return msgspec.json.decode(line, type=WorkerLine)

    async def run(
        self,
        plan: WorkerPlan,
        on_progress: Callable[[Progress], None],
        on_settle: Callable[[SettleState], None],
        leave: trio.Event,
    ) -> tuple[Ledger, list[str]]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        stdin = proc.stdin
        await stdin.send_all(msgspec.json.encode(plan) + b"\n")
        result: dict | None = None
        async with trio.open_nursery() as nursery:

            async def tell_to_leave() -> None:
                await leave.wait()
                try:
                    await stdin.send_all(b"leave\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # it has exited: nothing left to tell

            nursery.start_soon(tell_to_leave)
            while (line := await self._next_line()) is not None:
                if line.progress is not None:
                    on_progress(line.progress)
                elif line.settle is not None:
                    on_settle(line.settle)
                elif line.result is not None:
                    result = line.result
            nursery.cancel_scope.cancel()
        await proc.wait()
        if result is None:
            raise RuntimeError(f"worker exited with {proc.returncode} and no result")
        return Ledger.from_wire(result["ledger"]), result["notes"]

    async def stop(self) -> None:
        """Kill it if it still runs (the run failed or was cancelled)."""
        proc = self._proc
        if proc is None:
            return
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()


async def run(cfg: BotConfig, progress_line: Callable[[float, Progress, Histogram], None] | None) -> RunOutcome:
    processes = [WorkerProcess() for _ in range(cfg.workers if cfg.workers > 1 else 0)]
    try:
        return await _run(cfg, progress_line, processes)
    finally:
        for process in processes:
            await process.stop()


async def _run(
    cfg: BotConfig,
    progress_line: Callable[[float, Progress, Histogram], None] | None,
    processes: list[WorkerProcess],
) -> RunOutcome:
    raise_fd_limit()
    run_id = secrets.token_hex(3)
    nodes = cfg.node_endpoints()
    pools = [HttpPool(node, size=4) for node in nodes]
    metrics_pools = [HttpPool(node, size=1) for node in cfg.metrics_endpoints()]
    started_at = time.time()
    load_before = os.getloadavg()[0]
    metrics: dict[str, list[dict[str, float] | None]] = {"start": await scrape(metrics_pools)}
    rss = {"start": read_rss(cfg.node_pid_files)}
    try:
        # Centrifugo has no rooms to create: a room is a channel named after the run (centrifugo.py).
        room_ids = list(range(cfg.rooms)) if cfg.system == "centrifugo" else await create_rooms(cfg, pools[0], run_id)
    except (HttpError, OSError, trio.TooSlowError, KeyError, TypeError, ValueError) as exc:
        raise RuntimeError(f"setting up rooms on {nodes[0].base_url} failed: {exc!r}") from exc
    presence = PresenceProbe(nodes, run_id, cfg.user_id_prefix) if cfg.presence_probes_per_second else None
    if presence is not None:
        await presence.set_up(math.ceil(cfg.chat_duration_seconds * cfg.presence_probes_per_second) + 1)
    async with trio.open_nursery() as starting:
        for process in processes:
            starting.start_soon(process.start)
    # Leave the workers time to read their plans before the first user.
    t0 = time.time() + 0.2
    schedule = Schedule.of(cfg, t0)
    host_cpu = HostCpu(t0)
    process_cpu: dict[str, dict[str, list[float | None]]] = {"nodes": {}, "services": {}}

    def sample_process_cpu(instant: str) -> None:
        process_cpu["nodes"][instant] = cpu_seconds(cfg.node_pid_files)
        process_cpu["services"][instant] = cpu_seconds(cfg.service_pid_files)

    async def sample_process_cpu_at(instant: str, at: float) -> None:
        await trio.sleep_until(at - time.time() + trio.current_time())
        sample_process_cpu(instant)

    async def sample_process_cpu_when_all_connected() -> None:
        # The cost of connecting: when users take longer than the ramp-up, the chat's first
        # seconds still carry connections (progress comes once a second from each worker).
        while sum(p.connected + p.failed for p in progress) < cfg.user_count:
            await trio.sleep(CONNECTED_POLL_SECONDS)
        sample_process_cpu("connected")

    plans = [
        WorkerPlan(cfg, run_id, t0, room_ids, list(range(w, cfg.user_count, cfg.workers))) for w in range(cfg.workers)
    ]
    progress = [Progress() for _ in plans]
    ledgers: list[Ledger | None] = [None] * len(plans)
    notes: list[str] = []
    exec_result: dict | None = None
    # --until-settled: the workers' latest settle reports; `leave` tells them the run settled.
    settle_states: list[SettleState | None] = [None] * len(plans)
    leave = trio.Event()
    peak_sampled = False
    writing = bool(cfg.signups_per_second or cfg.room_creations_per_second)
    settled_at: float | None = None

    async def one_worker(w: int) -> None:
        def on_progress(snapshot: Progress) -> None:
            progress[w] = snapshot

        def on_settle(state: SettleState) -> None:
            nonlocal settled_at
            settle_states[w] = state
            # Not before the peak's sample (taken as the chat ends, with every user in), nor before
            # every write is answered: the users would miss the last rooms' announcements.
            if peak_sampled and not writing and not leave.is_set() and settled(settle_states):
                settled_at = time.time()
                leave.set()

        if processes:
            ledgers[w], worker_notes = await processes[w].run(plans[w], on_progress, on_settle, leave)
        else:
            ledgers[w], worker_notes = await run_worker(plans[w], on_progress, on_settle, leave)
        notes.extend(worker_notes)

    async def write() -> None:
        nonlocal writing
        await probe.run(
            cfg.signups_per_second,
            cfg.room_creations_per_second,
            schedule.chat_start + to_trio,
            schedule.chat_end + to_trio,
        )
        writing = False

    async def sample_peak() -> None:
        nonlocal peak_sampled
        # Just before users leave: the moment the most connections are open.
        await trio.sleep_until(schedule.chat_end - time.time() + trio.current_time())
        metrics["peak"] = await scrape(metrics_pools)
        rss["peak"] = read_rss(cfg.node_pid_files)
        peak_sampled = True

    async def run_exec() -> None:
        nonlocal exec_result
        assert cfg.exec_command is not None
        exec_result = await _run_exec(cfg.exec_command, schedule.chat_start + cfg.exec_at_seconds, schedule.chat_start)

    async def show_progress() -> None:
        while progress_line is not None:
            await trio.sleep(PROGRESS_INTERVAL)
            progress_line(time.time() - t0, *Progress.combine(progress))

    flood_tally: Counter = Counter()
    probe = WriteProbe(nodes, run_id, cfg.user_id_prefix)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(show_progress)
        nursery.start_soon(sample_peak)
        nursery.start_soon(sample_process_cpu_at, "start", t0)
        nursery.start_soon(sample_process_cpu_at, "chatStart", schedule.chat_start)
        nursery.start_soon(sample_process_cpu_at, "chatEnd", schedule.chat_end)
        if cfg.hold_window_seconds:
            nursery.start_soon(sample_process_cpu_at, "holdStart", schedule.chat_end - cfg.hold_window_seconds)
        nursery.start_soon(sample_process_cpu_when_all_connected)
        nursery.start_soon(host_cpu.run)
        to_trio = trio.current_time() - time.time()
        for k in range(cfg.flooders):
            nursery.start_soon(
                flood,
                f"{cfg.user_id_prefix}flooder{k}",
                nodes,
                room_ids[0],
                schedule.chat_start + to_trio,
                schedule.chat_end + to_trio,
                flood_tally,
            )
        if cfg.exec_command:
            nursery.start_soon(run_exec)
        async with trio.open_nursery() as workers:
            for w in range(len(plans)):
                workers.start_soon(one_worker, w)
            if writing:
                # awaited like the workers: every write's answer is in before the run ends
                workers.start_soon(write)
            if presence is not None:
                await workers.start(
                    presence.run,
                    1 / cfg.presence_probes_per_second,
                    schedule.chat_start + to_trio,
                    schedule.chat_end + to_trio,
                )
        nursery.cancel_scope.cancel()
    await probe.aclose()
    metrics["end"] = await scrape(metrics_pools)
    rss["end"] = read_rss(cfg.node_pid_files)
    for pool in pools + metrics_pools:
        await pool.aclose()
    merged = Ledger(timeline=Timeline(t0))
    for ledger in ledgers:
        assert ledger is not None
        merged.merge(ledger)
    return RunOutcome(
        run_id,
        cfg,
        schedule,
        merged,
        notes,
        room_ids,
        metrics,
        rss,
        exec_result,
        started_at,
        time.time(),
        load_before,
        host_cpu,
        dict(flood_tally) if cfg.flooders else None,
        probe.records if cfg.signups_per_second or cfg.room_creations_per_second else None,
        None if presence is None else presence.records(),
        process_cpu,
        None if settled_at is None else settled_at - schedule.chat_end,
    )
