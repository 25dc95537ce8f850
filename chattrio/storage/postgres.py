"""PostgreSQL through asyncpg: users, rooms, the outbox and stored messages."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.resources
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio

from chattrio.models import DeadLetter, Message, ReadPositionMoved, Room, RoomCreated, UserCreated, json_encoder
from chattrio.storage.bridge import AsyncioCancelled, run_asyncio

log = logging.getLogger(__name__)

# Every call, connection included. A hung server (SIGSTOP, a frozen machine) answers nothing, and
# a call cancelled at this deadline may take run_asyncio's grace (bridge.CANCEL_GRACE, 5 s) more to
# unwind: the two together stay well within the 15 s a client gives a request.
QUERY_TIMEOUT = 5.0
# Migrations may wait for another node's (they take a lock) and run long statements.
MIGRATION_TIMEOUT = 120.0
# The pool's first connections, at the node's start: each host may take CONNECT_TIMEOUT_PER_HOST.
POOL_START_TIMEOUT = 30.0
MIGRATION_LOCK_ID = 0x63686174  # any constant shared by every node: serialises migrations
ROOM_QUOTA_LOCK_ID = 0x71756F74  # with the user's hash: one room creation per user at a time under a quota
POOL_SIZE = 8
# A new connection gives each host of a several-host DSN this long, the host that answered last
# first. asyncpg's own timeout covers all hosts together, so a hung first host (a frozen machine:
# its kernel accepts the connection, nothing answers) would use it all up and the promoted
# standby behind it would never be tried.
CONNECT_TIMEOUT_PER_HOST = 3.0
# A transaction that adds an outbox row announces it here on commit, with the row's topic as the
# payload, so the relay is woken instead of polling.
OUTBOX_CHANNEL = "chattrio_outbox"
# Sign-ins that arrive while one statement runs share the next: a burst costs a round trip and
# a commit per statement, not per user (docs/decisions/connect-path.md).
SIGN_INS_PER_STATEMENT = 200
SIGN_INS_QUEUED = 2_000
# A queued sign-in may wait for the statement before its own: both are bounded by QUERY_TIMEOUT
# (and the bridge's grace to unwind one).
SIGN_IN_WAIT = 2 * QUERY_TIMEOUT

T = TypeVar("T")
if TYPE_CHECKING:  # generic in asyncpg-stubs only
    # A pooled connection, as the transactions below hold one.
    Connection = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer; the caller should answer 503 or retry."""


class DataRefused(Exception):
    """PostgreSQL (or its driver) refused the values themselves, e.g. text with U+0000: unlike an
    outage, the same values fail again however often they are retried."""


class LookalikeTaken(Exception):
    """Another user id has the same skeleton (looks the same)."""

    def __init__(self, existing: str) -> None:
        super().__init__(f"looks like the existing user {existing!r}")
        self.existing = existing


class RoomQuotaExceeded(Exception):
    """The user has created as many rooms as the quota allows."""


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    key: str
    payload: bytes


_MESSAGE_COLUMNS = "id::text, room_id, seq, sender_id, kind, text, client_msg_id, sent_at"
_ROOM_COLUMNS = "id, name, created_by, created_at"


# A batch of messages ($1-$8, one array per column) and how far each partition of topic $9 is now
# stored ($10 partitions, $11 next offsets), in one statement and so one transaction: the new
# messages' ids come back (redeliveries and retries are not new), and a redelivered batch (after a
# rebalance) never moves a partition back.
_MESSAGE_COLUMN_TYPES = ("uuid", "bigint", "bigint", "text", "text", "text", "text", "bigint")
_STORE_MESSAGES = (
    "WITH stored AS (INSERT INTO messages (id, room_id, seq, sender_id, kind, text, client_msg_id, sent_at)"
    " SELECT * FROM unnest("
    + ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_MESSAGE_COLUMN_TYPES, 1))
    + ") ON CONFLICT DO NOTHING RETURNING id::text),"
    " moved AS (INSERT INTO stored_offsets (topic, partition, next_offset)"
    " SELECT $9, * FROM unnest($10::int[], $11::bigint[]) ON CONFLICT (topic, partition)"
    " DO UPDATE SET next_offset = GREATEST(stored_offsets.next_offset, EXCLUDED.next_offset))"
    " SELECT id FROM stored"
)
# An outbox row ($1 event id, $2 topic, $3 payload, $5 key) and the NOTIFY on channel $4 that wakes
# the relay when its transaction commits.
_OUTBOX_ROW = (
    "WITH queued AS (INSERT INTO outbox (event_id, topic, key, payload) VALUES ($1, $2, $5, $3) RETURNING topic)"
    " SELECT pg_notify($4, topic) FROM queued"
)
# Sign-ins, one row each in the arrays ($1 ids, $2 skeletons, $3 event ids, $4 payloads, $5
# times; the ids distinct): a user known with a skeleton gives (void, id, false); a new one is
# inserted with its outbox row (topic $6, NOTIFY on channel $7) and gives (void, id, true);
# neither (a user from before skeletons, a look-alike, also of another id in the arrays) gives
# no row.
_SIGN_IN = (
    "WITH entering AS (SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[], $5::timestamptz[])"
    " AS e (id, skeleton, event_id, payload, created_at)),"
    " known AS (SELECT id, users.skeleton IS NOT NULL AS complete FROM users JOIN entering USING (id)),"
    " created AS (INSERT INTO users (id, skeleton, created_at)"
    " SELECT id, skeleton, created_at FROM entering WHERE id NOT IN (SELECT id FROM known)"
    " ON CONFLICT DO NOTHING RETURNING id),"
    " queued AS (INSERT INTO outbox (event_id, topic, key, payload)"
    " SELECT event_id, $6, id, payload FROM created JOIN entering USING (id) RETURNING key, topic)"
    " SELECT pg_notify($7, topic), key, true FROM queued"
    " UNION ALL SELECT NULL, id, false FROM known WHERE complete"
)


@dataclasses.dataclass(eq=False)
class _SignIn:
    """One user's sign-in, queued for the next statement; `done` is set once it has an outcome."""

    user_id: str
    skeleton: str
    created: bool | None = None
    error: Exception | None = None
    done: trio.Event = dataclasses.field(default_factory=trio.Event)


def _like_escaped(text: str) -> str:
    """`text` matched literally inside a LIKE pattern (backslash is LIKE's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _room(row: asyncpg.Record) -> Room:
    return Room(row["id"], row["name"], row["created_by"], row["created_at"].isoformat())


def _message(row: asyncpg.Record) -> Message:
    return Message(*row)


def _hosts_of(dsn: str) -> list[str]:
    """The DSN's `host:port` entries (several with a failover pair), or [] when the hosts are not
    in its address part (a Unix socket or a `host=` parameter)."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    return [h for h in hosts.split(",") if h] if parts.scheme.startswith("postgres") else []


def _with_host(dsn: str, host: str) -> str:
    parts = urlsplit(dsn)
    user, at, _hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}{host}"))


class HostPicker:
    """Connects to the first host of the DSN that takes the connection (and, with
    target_session_attrs=read-write, is the primary), each on its own deadline, starting with the
    host that took the last one."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._hosts = _hosts_of(dsn)
        self._first = 0

    async def connect(self, dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
        """On the asyncio thread; also the pool's `connect` (which passes the DSN back)."""
        if len(self._hosts) < 2:
            return await asyncpg.connect(self.dsn, **{"timeout": QUERY_TIMEOUT, **kwargs})
        error: Exception | None = None
        for i in range(len(self._hosts)):
            index = (self._first + i) % len(self._hosts)
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    _with_host(self.dsn, self._hosts[index]), **{**kwargs, "timeout": CONNECT_TIMEOUT_PER_HOST}
                )
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as exc:
                error = exc  # down, hung, starting up or a standby: the next host
                continue
            self._first = index
            return conn
        assert error is not None
        raise error


class Database:
    def __init__(self, pool: asyncpg.Pool, outbox_topic: str, hosts: HostPicker) -> None:
        self._pool = pool
        self._outbox_topic = outbox_topic
        self._hosts = hosts
        self._sign_ins_in, self._sign_ins_out = trio.open_memory_channel[_SignIn](SIGN_INS_QUEUED)
        self.sign_in_statements = 0

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = QUERY_TIMEOUT) -> T:
        try:
            with trio.fail_after(timeout):
                return await run_asyncio(fn, *args)
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            # a pooled connection left mid-operation by a cancelled call (seen while the primary
            # was failing over): an outage of that connection, not a bug of the request
            asyncpg.InternalClientError,
            AsyncioCancelled,
            trio.TooSlowError,
        ) as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        except asyncpg.CannotConnectNowError as exc:
            raise DatabaseUnavailable(f"PostgreSQL starting up: {exc!r}") from exc
        except asyncpg.DataError as exc:  # also the driver's own, e.g. a lone surrogate in a str
            raise DataRefused(f"{type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        await self._run(self._pool.fetchval, "SELECT 1")

    async def migrate(self) -> list[str]:
        """Apply the SQL files of migrations/ not applied yet; safe when nodes start together."""
        scripts = sorted(
            (f.name, f.read_text())
            for f in importlib.resources.files("chattrio.storage.migrations").iterdir()
            if f.name.endswith(".sql")
        )

        async def apply() -> list[str]:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID, timeout=MIGRATION_TIMEOUT)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
                applied = []
                for name, sql in scripts:
                    if name not in done:
                        await conn.execute(sql, timeout=MIGRATION_TIMEOUT)
                        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                        applied.append(name)
                return applied

        return await self._run(apply, timeout=MIGRATION_TIMEOUT)

    # Users and rooms: the row and its outbox event commit together ---------------------------

    async def enter_user(self, user_id: str, skeleton: str) -> bool:
        """Create the user if unknown; True when it was created now. Raises LookalikeTaken when
        another id has the same skeleton. A user from before skeletons gets theirs now, unless a
        newer look-alike holds it."""
        created = await self._sign_in(user_id, skeleton)
        if created is not None:
            return created

        async def enter() -> bool:
            # Taken meanwhile, by this id or a look-alike, or a user from before skeletons.
            async with self._pool.acquire() as conn, conn.transaction():
                known = await conn.fetchrow("SELECT skeleton FROM users WHERE id = $1", user_id)
                if known is not None:
                    if known["skeleton"] is None:
                        await _adopt_skeleton(conn, user_id, skeleton)
                    return False
                created_at = await conn.fetchval(
                    "INSERT INTO users (id, skeleton) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING created_at",
                    user_id,
                    skeleton,
                )
                if created_at is None:  # the id or a look-alike exists (maybe committed just now)
                    holder = await conn.fetchval("SELECT id FROM users WHERE skeleton = $1", skeleton)
                    if holder is not None and holder != user_id:
                        raise LookalikeTaken(holder)
                    return False
                event = UserCreated(str(uuid.uuid4()), user_id, created_at.isoformat())
                await self._insert_outbox(conn, event.event_id, user_id, json_encoder.encode(event))
                return True

        return await self._run(enter)

    async def _sign_in(self, user_id: str, skeleton: str) -> bool | None:
        """The common sign-in, in the next statement serve_sign_ins runs: True when it created the
        user and its outbox row, False for a user known with a skeleton, None, with nothing
        written, otherwise."""
        sign_in = _SignIn(user_id, skeleton)
        with trio.move_on_after(SIGN_IN_WAIT):
            await self._sign_ins_in.send(sign_in)
            await sign_in.done.wait()
        if not sign_in.done.is_set():
            raise DatabaseUnavailable(f"PostgreSQL did not answer a sign-in within {SIGN_IN_WAIT:g} s")
        if sign_in.error is not None:
            raise sign_in.error
        return sign_in.created

    async def serve_sign_ins(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run queued sign-ins, all that wait (up to SIGN_INS_PER_STATEMENT) in one statement, its
        own transaction: a returning user and a new one each cost a share of one round trip,
        where a transaction per user takes five (a user row is never deleted, and its skeleton
        never unset)."""
        task_status.started()
        async for first in self._sign_ins_out:
            batch = [first]
            while len(batch) < SIGN_INS_PER_STATEMENT:
                try:
                    batch.append(self._sign_ins_out.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._settle_sign_ins(batch)

    async def _settle_sign_ins(self, batch: list[_SignIn]) -> None:
        """Give every sign-in of `batch` its outcome. A value PostgreSQL refuses fails the whole
        statement, so a refused batch is tried one by one, and only its culprit is refused."""
        # The same id twice in one statement would queue its event twice: its later sign-ins
        # wait for the next statement, and find the user then.
        first_of_id: dict[str, _SignIn] = {}
        later = [s for s in batch if first_of_id.setdefault(s.user_id, s) is not s]
        now = list(first_of_id.values())
        try:
            self.sign_in_statements += 1
            outcomes = await self._run(self._sign_in_many, now)
        except DataRefused as exc:
            if len(now) == 1:
                now[0].error = DataRefused(str(exc))
            else:
                for sign_in in now:
                    await self._settle_sign_ins([sign_in])
        except Exception as exc:  # an outage, or a bug: every sign-in of the batch fails alike
            if not isinstance(exc, DatabaseUnavailable):
                log.exception("sign-in statement failed")
            for sign_in in now:
                sign_in.error = DatabaseUnavailable(f"sign-in failed: {exc!r}")
        else:
            for sign_in in now:
                sign_in.created = outcomes.get(sign_in.user_id)
        for sign_in in now:
            sign_in.done.set()
        if later:
            await self._settle_sign_ins(later)

    async def _sign_in_many(self, sign_ins: list[_SignIn]) -> dict[str, bool]:
        """The statement for `sign_ins` (distinct ids), on the asyncio side. The event's time is
        the node's, so that its payload can be encoded before the statement."""
        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        for sign_in in sign_ins:
            created_at = datetime.datetime.now(datetime.UTC)
            event = UserCreated(str(uuid.uuid4()), sign_in.user_id, created_at.isoformat())
            for column, value in zip(
                columns, (sign_in.user_id, sign_in.skeleton, event.event_id, json_encoder.encode(event), created_at)
            ):
                column.append(value)
        rows = await self._pool.fetch(_SIGN_IN, *columns, self._outbox_topic, OUTBOX_CHANNEL)
        return {row[1]: row[2] for row in rows}

    async def create_room(self, name: str, created_by: str, quota: int | None = None) -> Room:
        """Raises RoomQuotaExceeded when `quota` is given and the user has created that many rooms."""

        async def create() -> Room:
            async with self._pool.acquire() as conn, conn.transaction():
                if quota is not None:
                    await self._check_room_quota(conn, created_by, quota)
                row = await conn.fetchrow(
                    f"INSERT INTO rooms (name, created_by) VALUES ($1, $2) RETURNING {_ROOM_COLUMNS}",
                    name,
                    created_by,
                )
                assert row is not None  # INSERT ... RETURNING returns the row it inserted
                room = _room(row)
                event = RoomCreated(str(uuid.uuid4()), room)
                await self._insert_outbox(conn, event.event_id, str(room.id), json_encoder.encode(event))
                return room

        return await self._run(create)

    @staticmethod
    async def _check_room_quota(conn: Connection, created_by: str, quota: int) -> None:
        # The lock makes count-then-insert exact when one user creates rooms on several nodes at once.
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", ROOM_QUOTA_LOCK_ID, created_by)
        created = await conn.fetchval("SELECT count(*) FROM rooms WHERE created_by = $1", created_by)
        if created >= quota:
            raise RoomQuotaExceeded(f"room quota reached: {created_by!r} has created {created} rooms (at most {quota})")

    async def list_rooms(self, limit: int, before_id: int | None = None, search: str = "") -> list[Room]:
        """Up to `limit` rooms, newest first, older than `before_id`, whose name contains `search`
        ignoring case (the trigram index of migration 0007 serves it)."""
        # Two statements rather than "$2 = '' OR ...": a prepared statement's generic plan could
        # then use neither the trigram index nor the primary key's order.
        older = "id < $2" if before_id is not None else "$2::bigint IS NULL"
        if search:
            sql = (
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE {older} AND lower(name) LIKE '%' || lower($3) || '%'"
                " ORDER BY id DESC LIMIT $1"
            )
            args: tuple[object, ...] = (limit, before_id, _like_escaped(search))
        else:
            sql = f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE {older} ORDER BY id DESC LIMIT $1"
            args = (limit, before_id)
        rows = await self._run(self._pool.fetch, sql, *args)
        return [_room(r) for r in rows]

    async def get_room(self, room_id: int) -> Room | None:
        row = await self._run(self._pool.fetchrow, f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = $1", room_id)
        return None if row is None else _room(row)

    # Outbox ------------------------------------------------------------------------------------

    async def _insert_outbox(self, conn: Connection, event_id: str, key: str, payload: bytes) -> None:
        await conn.execute(_OUTBOX_ROW, uuid.UUID(event_id), self._outbox_topic, payload, OUTBOX_CHANNEL, key)

    async def listen_outbox(self, on_row: Callable[[], None]) -> None:
        """Call `on_row` (in Trio) whenever a committed transaction added an outbox row of this
        node's topic, and once as soon as it listens, for the rows committed before. Runs until
        cancelled on a connection of its own; raises DatabaseUnavailable when that connection
        cannot be opened or is lost."""
        token = trio.lowlevel.current_trio_token()
        lost = trio.Event()
        topic = self._outbox_topic

        def notified(_conn: object, _pid: int, _channel: str, payload: object) -> None:  # on the asyncio thread
            if payload == topic:
                _run_in_trio(token, on_row)

        async def open_listener() -> asyncpg.Connection:
            conn = await self._hosts.connect(command_timeout=QUERY_TIMEOUT)
            conn.add_termination_listener(lambda _conn: _run_in_trio(token, lost.set))
            try:
                await conn.add_listener(OUTBOX_CHANNEL, notified)
            except BaseException:
                conn.terminate()
                raise
            return conn

        conn = await self._run(open_listener)
        try:
            on_row()
            await lost.wait()
            raise DatabaseUnavailable("PostgreSQL closed the connection listening for outbox rows")
        finally:
            with trio.CancelScope(shield=True):
                await run_asyncio(_terminate, conn)

    async def relay_outbox(self, limit: int, publish: Callable[[Sequence[OutboxRow]], Awaitable[None]]) -> int:
        """Claim up to `limit` unpublished rows in id order, publish them, mark them; one transaction.

        `publish` is an asyncio coroutine function (the Kafka adapter's). Rows are claimed with
        FOR UPDATE SKIP LOCKED, so two pollers never publish the same row at once even if the Redis
        lock is lost; a crash after publish and before commit republishes, and consumers dedupe by
        event id.
        """

        async def relay() -> int:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, event_id::text, key, payload FROM outbox WHERE published_at IS NULL"
                    " AND topic = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    self._outbox_topic,
                    limit,
                )
                if not rows:
                    return 0
                batch = [OutboxRow(r["id"], r["event_id"], r["key"], bytes(r["payload"])) for r in rows]
                await publish(batch)
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [row.id for row in batch],
                )
                return len(batch)

        return await self._run(relay)

    async def outbox_backlog(self) -> tuple[int, float]:
        """Unpublished rows and the age in seconds of the oldest one."""
        row = await self._run(
            self._pool.fetchrow,
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
            " FROM outbox WHERE published_at IS NULL AND topic = $1",
            self._outbox_topic,
        )
        assert row is not None  # an aggregate without GROUP BY returns one row
        return int(row["n"]), float(row["age"])

    # Messages ----------------------------------------------------------------------------------

    async def store_messages(
        self, messages: Sequence[Message], topic: str, next_offsets: dict[int, int]
    ) -> list[Message]:
        """Insert a batch, and in the same transaction how far each partition is now stored
        (`next_offsets`: partition -> the offset after the batch's last record). Returns the
        messages that were new (redeliveries and retries are not)."""
        if not messages and not next_offsets:
            return []
        columns = list(zip(*(_message_tuple(m) for m in messages))) or [()] * len(_MESSAGE_COLUMN_TYPES)
        rows = await self._run(
            self._pool.fetch, _STORE_MESSAGES, *columns, topic, list(next_offsets), list(next_offsets.values())
        )
        inserted = {row[0] for row in rows}
        return [m for m in messages if m.id in inserted]

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> int:
        """Keep records that cannot be stored, with the reason; returns how many were new."""
        if not letters:
            return 0
        result = await self._run(
            self._pool.execute,
            "INSERT INTO dead_letters (topic, partition, record_offset, record_time, value, reason)"
            " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bytea[], $6::text[])"
            " ON CONFLICT DO NOTHING",
            *zip(*((d.topic, d.partition, d.offset, d.timestamp, d.value, _storable(d.reason)) for d in letters)),
        )
        return int(result.rsplit(" ", 1)[1])

    async def stored_offset(self, topic: str, partition: int) -> int | None:
        """The offset before which the partition is stored; None when nothing of it was stored
        since stored_offsets exists."""
        return await self._run(
            self._pool.fetchval,
            "SELECT next_offset FROM stored_offsets WHERE topic = $1 AND partition = $2",
            topic,
            partition,
        )

    async def messages_after(self, room_id: int, since: int, limit: int, max_text_bytes: int) -> list[Message]:
        """Oldest first: at most `limit` messages, and no more than fit in `max_text_bytes` of
        text (the first one always comes)."""
        rows = await self._run(
            self._pool.fetch,
            f"SELECT {_MESSAGE_COLUMNS} FROM ("
            " SELECT *, sum(octet_length(text)) OVER w AS upto, row_number() OVER w AS n FROM ("
            "  SELECT * FROM messages WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) AS page"
            " WINDOW w AS (ORDER BY seq)"
            ") AS m WHERE upto <= $4 OR n = 1 ORDER BY seq",
            room_id,
            since,
            limit,
            max_text_bytes,
        )
        return [_message(r) for r in rows]

    async def count_messages_after(self, room_id: int, since: int, cap: int) -> int:
        """How many stored messages of the room follow `since`, counting no further than `cap`."""
        return await self._run(
            self._pool.fetchval,
            "SELECT count(*) FROM (SELECT 1 FROM messages WHERE room_id = $1 AND seq > $2 LIMIT $3) AS m",
            room_id,
            since,
            cap,
        )

    async def messages_before(self, room_id: int, before: int | None, limit: int) -> list[Message]:
        """Newest first."""
        rows = await self._run(
            self._pool.fetch,
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            room_id,
            (1 << 62) if before is None else before,
            limit,
        )
        return [_message(r) for r in rows]

    async def last_seq(self, room_id: int) -> int | None:
        return await self._run(self._pool.fetchval, "SELECT max(seq) FROM messages WHERE room_id = $1", room_id)

    # Read positions ----------------------------------------------------------------------------

    async def mark_read(self, user_id: str, room_id: int, seq: int) -> bool:
        """Move the user's read position in the room forward to `seq` (never back), with an
        outbox row announcing it in the same transaction; False when it was there already."""

        async def mark() -> bool:
            async with self._pool.acquire() as conn, conn.transaction():
                moved = await conn.fetchval(
                    "INSERT INTO read_positions (user_id, room_id, last_read_seq) VALUES ($1, $2, $3)"
                    " ON CONFLICT (user_id, room_id) DO UPDATE"
                    " SET last_read_seq = EXCLUDED.last_read_seq, updated_at = now()"
                    " WHERE read_positions.last_read_seq < EXCLUDED.last_read_seq"
                    " RETURNING last_read_seq",
                    user_id,
                    room_id,
                    seq,
                )
                if moved is None:
                    return False
                event = ReadPositionMoved(str(uuid.uuid4()), user_id, room_id, moved)
                await self._insert_outbox(conn, event.event_id, user_id, json_encoder.encode(event))
                return True

        return await self._run(mark)

    async def read_positions(self, user_id: str, room_ids: Sequence[int], cap: int) -> dict[int, tuple[int, int]]:
        """room id -> (last read seq, unread) for the rooms the user has a position in; unread
        counts the chat messages of others after the position, no further than `cap`: a range
        of the (room_id, seq) index from the position on, never the whole room."""
        rows = await self._run(
            self._pool.fetch,
            "SELECT p.room_id, p.last_read_seq, (SELECT count(*) FROM (SELECT 1 FROM messages m"
            "  WHERE m.room_id = p.room_id AND m.seq > p.last_read_seq AND m.kind = 'chat' AND m.sender_id <> $1"
            "  LIMIT $3) AS after) AS unread"
            " FROM read_positions p WHERE p.user_id = $1 AND p.room_id = ANY($2::bigint[])",
            user_id,
            list(room_ids),
            cap,
        )
        return {r["room_id"]: (r["last_read_seq"], r["unread"]) for r in rows}


async def _adopt_skeleton(conn: Connection, user_id: str, skeleton: str) -> None:
    try:
        async with conn.transaction():  # a savepoint: a look-alike committing meanwhile only skips this
            await conn.execute(
                "UPDATE users SET skeleton = $2 WHERE id = $1 AND skeleton IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM users WHERE skeleton = $2)",
                user_id,
                skeleton,
            )
    except asyncpg.UniqueViolationError:
        log.info("user %r keeps no skeleton: a look-alike took it", user_id)


def _storable(reason: str) -> str:
    """An error message may quote the very character PostgreSQL refused."""
    return reason.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def _run_in_trio(token: trio.lowlevel.TrioToken, fn: Callable[[], None]) -> None:
    """From the asyncio thread: run `fn` in Trio, unless the Trio run is over."""
    try:
        token.run_sync_soon(fn)
    except trio.RunFinishedError:
        pass


async def _keep_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, instead of asyncpg's default query (`SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), one more round trip for every
    query: pooled connections take no session-level locks, cursors outside a transaction, LISTENs
    or SETs (advisory locks are transaction-level; the outbox listener has a connection of its
    own). asyncpg still rolls back a transaction left open."""


async def _terminate(conn: asyncpg.Connection) -> None:
    conn.terminate()  # no goodbye to wait for: the listening connection holds nothing


def _message_tuple(m: Message) -> tuple[object, ...]:
    return (m.id, m.room_id, m.seq, m.sender_id, m.kind, m.text, m.client_msg_id, m.sent_at)


@asynccontextmanager
async def open_database(dsn: str, outbox_topic: str) -> AsyncIterator[Database]:
    """A connection pool for the node's lifetime; raises DatabaseUnavailable when unreachable."""
    hosts = HostPicker(dsn)
    try:
        with trio.fail_after(POOL_START_TIMEOUT):
            pool = await run_asyncio(
                asyncpg.create_pool,
                dsn,
                min_size=POOL_SIZE,
                max_size=POOL_SIZE,
                command_timeout=QUERY_TIMEOUT,
                connect=hosts.connect,
                reset=_keep_session_state,
            )
    except (OSError, asyncpg.PostgresError, asyncpg.InternalClientError, trio.TooSlowError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {dsn!r}: {exc!r}") from exc
    try:
        async with trio.open_nursery() as nursery:
            database = Database(pool, outbox_topic, hosts)
            await nursery.start(database.serve_sign_ins)
            yield database
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await run_asyncio(pool.close)
