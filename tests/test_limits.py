"""Rate limits, the connection cap, per-IP limits and the room quota (docs/security.md).

Limits that refill at 0.001 token/s do not refill during a test, so the counts below hold on a
busy machine. Test nodes come from 127.0.0.1, which conftest exempts from the per-IP limits and
trusts as a proxy: a test is another client address through X-Forwarded-For.
"""

from __future__ import annotations

import ipaddress
import random
import uuid

import httpx
import pytest
import trio
from client import connect, create_room, login
from conftest import SESSION_CLUSTER_BASE_PORT, Cluster
from trio_websocket import HandshakeError

from chattrio.config import Rate
from chattrio.limits import TokenBucket, client_address, parse_networks, take_all

NO_REFILL = 0.001  # tokens per second: none come back during a test
LIMITED = {
    "ping_limit_per_connection": f"{NO_REFILL}:3",
    "ping_limit_per_user": f"{NO_REFILL}:4",
    "send_limit_per_connection": f"{NO_REFILL}:2",
    "other_limit_per_connection": f"{NO_REFILL}:2",
    "refusals_before_close": 3,
    "max_connections_per_user": 2,
    "room_quota_per_user": 2,
    "max_rooms_per_session": 2,
    "signup_limit_per_ip": f"{NO_REFILL}:3",
    "room_create_limit_per_ip": f"{NO_REFILL}:3",
}
LIMITED_PORT = SESSION_CLUSTER_BASE_PORT + 50


def _user(prefix: str = "lim") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _address() -> str:
    """A client address of the documentation ranges, new for every call."""
    return str(ipaddress.ip_address("198.18.0.0") + random.randrange(1 << 17))


@pytest.fixture(scope="module")
def limited(stack_env, run_prefix):
    """One node with tiny limits, shared by this module's tests (each uses users of its own)."""
    node = Cluster(stack_env, 1, LIMITED_PORT, f"{run_prefix}lim", **LIMITED).start()
    yield node
    node.stop()


async def _answers_to_pings(client, count: int, prefix: str) -> list[dict]:
    """Send `count` PINGs and return their answers (PONG or ERROR) in order."""
    for n in range(count):
        await client.send(type="PING", ref=f"{prefix}{n}")
    refs = {f"{prefix}{n}" for n in range(count)}
    await client.wait_until(lambda: len([f for f in client.frames if f.get("ref") in refs]) == count)
    return [f for f in client.frames if f.get("ref") in refs]


async def _metric(node, sample: str) -> float:
    """A sample of the node's /metrics (0 when absent)."""
    async with httpx.AsyncClient(base_url=node.internal_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


# The bucket and the client address (pure logic) ------------------------------------------------


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    bucket = TokenBucket(Rate(2, 3), now=100.0)
    assert [take_all([bucket], 100.0) for _ in range(3)] == [0, 0, 0]
    assert take_all([bucket], 100.0) == pytest.approx(0.5)
    assert take_all([bucket], 100.5) == 0
    assert take_all([bucket], 100.5) == pytest.approx(0.5)
    assert [take_all([bucket], 1000.0) for _ in range(4)][:3] == [0, 0, 0]  # never more than the burst


def test_take_all_takes_from_every_bucket_or_from_none():
    roomy, empty = TokenBucket(Rate(1, 5), 0.0), TokenBucket(Rate(1, 1), 0.0)
    assert take_all([roomy, empty], 0.0) == 0
    assert take_all([roomy, empty], 0.0) == pytest.approx(1.0)
    assert [take_all([roomy], 0.0) for _ in range(4)] == [0, 0, 0, 0]  # the refusal took nothing


def test_client_address_believes_x_forwarded_for_only_from_trusted_proxies():
    trusted = parse_networks(["127.0.0.1", "10.0.0.0/8"], "trusted_proxies")
    assert client_address("203.0.113.9", "198.51.100.1", trusted) == "203.0.113.9"
    assert client_address("127.0.0.1", None, trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", "198.51.100.1", trusted) == "198.51.100.1"
    # a client's own X-Forwarded-For is left of what the proxies appended: not believed
    assert client_address("127.0.0.1", "6.6.6.6, 198.51.100.1", trusted) == "198.51.100.1"
    assert client_address("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3", trusted) == "198.51.100.1"
    assert client_address("::ffff:127.0.0.1", "198.51.100.1", trusted) == "198.51.100.1"


def test_a_bad_proxy_address_names_its_setting():
    with pytest.raises(ValueError, match="CHATTRIO_TRUSTED_PROXIES: 'nginx'"):
        parse_networks(["127.0.0.1", "nginx"], "trusted_proxies")


# WebSocket frames ------------------------------------------------------------------------------


async def test_frames_over_the_connection_limit_get_rate_limited_and_the_connection_lives(limited):
    node = limited.nodes[0]
    url = node.url
    async with connect(url, _user()) as client:
        answers = await _answers_to_pings(client, 4, "p")
        assert [f["type"] for f in answers] == ["PONG", "PONG", "PONG", "ERROR"]
        assert answers[3]["code"] == "RATE_LIMITED" and answers[3]["retryAfterMs"] > 0
        # other kinds have buckets of their own
        owner_token = await login(url, _user("owner"))
        room = await create_room(url, owner_token, "limits")
        assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        acks = [await client.send_chat(room["id"], f"m{n}", client_msg_id=f"c{n}") for n in range(3)]
        assert [a["type"] for a in acks] == ["ACK", "ACK", "ERROR"]
        assert acks[2]["code"] == "RATE_LIMITED" and acks[2]["ref"] == "c2"
    assert await _metric(node, 'chattrio_rate_limited_total{kind="ping"}') >= 1
    assert await _metric(node, 'chattrio_rate_limited_total{kind="send"}') >= 1


async def test_other_errors_carry_no_retry_after(limited):
    async with connect(limited.urls[0], _user()) as client:
        await client.send(type="NOPE", ref="x")
        error = await client.wait_for(lambda f: f.get("ref") == "x")
        assert error == {"type": "ERROR", "code": "UNKNOWN_TYPE", "message": "unknown frame type 'NOPE'", "ref": "x"}


async def test_bad_frames_draw_on_the_other_bucket(limited):
    async with connect(limited.urls[0], _user()) as client:
        for n in range(3):
            await client.send(type="NOPE", ref=f"b{n}")
        await client.wait_until(lambda: len(client.errors()) == 3)
        assert [e["code"] for e in client.errors()] == ["UNKNOWN_TYPE", "UNKNOWN_TYPE", "RATE_LIMITED"]


async def test_a_user_s_connections_share_the_user_buckets_and_reconnecting_does_not_refill_them(limited):
    node = limited.nodes[0]
    url = node.url
    user = _user()
    token = await login(url, user)
    async with connect(url, user, token) as first, connect(url, user, token) as second:
        assert [f["type"] for f in await _answers_to_pings(first, 3, "a")] == ["PONG"] * 3
        # the connection has tokens left, the user (4 in all) one
        assert [f["type"] for f in await _answers_to_pings(second, 2, "b")] == ["PONG", "ERROR"]
    # both gone: a new connection has full connection buckets, but the user's stay empty
    with trio.fail_after(15):
        while await _metric(node, "chattrio_websocket_sessions") != 0:
            await trio.sleep(0.1)
    async with connect(url, user, token) as again:
        answers = await _answers_to_pings(again, 1, "c")
        assert answers[0]["code"] == "RATE_LIMITED"


async def test_a_client_that_ignores_refusals_is_closed_with_1008(limited):
    node = limited.nodes[0]
    url = node.url
    before = await _metric(node, "chattrio_rate_limit_closes_total")
    async with connect(url, _user()) as client:
        with trio.fail_after(15):
            n = 0
            while client.closed is None:  # a refusal is forgiven per second: keep going until closed
                ref = f"f{n}"
                await client.send(type="PING", ref=ref)
                await client.wait_until(
                    lambda ref=ref: client.closed is not None or any(f.get("ref") == ref for f in client.frames)
                )
                n += 1
        assert client.closed.reason.code == 1008
        assert len([e for e in client.errors() if e["code"] == "RATE_LIMITED"]) >= 3
    assert await _metric(node, "chattrio_rate_limit_closes_total") == before + 1


# Connections per user --------------------------------------------------------------------------


async def test_connections_over_the_per_user_cap_are_refused_with_429(limited):
    node = limited.nodes[0]
    url = node.url
    user = _user()
    token = await login(url, user)
    async with connect(url, user, token), connect(url, user, token):
        with pytest.raises(HandshakeError) as refused:
            async with connect(url, user, token):
                pass
        assert refused.value.status_code == 429
        async with connect(url, _user()):  # another user is not affected
            pass
    assert await _metric(node, "chattrio_user_connection_cap_refusals_total") >= 1


# Per-IP limits and the room quota (REST) -------------------------------------------------------


async def _enter(http: httpx.AsyncClient, address: str, forwarded: str | None = None) -> httpx.Response:
    return await http.post(f"/api/user/enter/{_user('ip')}", headers={"X-Forwarded-For": forwarded or address})


async def test_sign_ups_over_the_per_ip_limit_get_429_with_retry_after(limited):
    burst, address = 3, _address()
    async with httpx.AsyncClient(base_url=limited.urls[0], timeout=10) as http:
        statuses = [(await _enter(http, address)).status_code for _ in range(burst)]
        assert set(statuses) == {201}
        refused = await _enter(http, address)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["data"]["retryAfterMs"] > 0
        # what the client itself writes into X-Forwarded-For does not make it someone else
        assert (await _enter(http, address, f"{_address()}, {address}")).status_code == 429
        assert (await _enter(http, _address())).status_code == 201
    assert await _metric(limited.nodes[0], 'chattrio_rate_limited_total{kind="signup"}') >= 2


async def test_room_creations_over_the_per_ip_limit_get_429(limited):
    """Each room by another user (the room quota is 2 here): the limit is the address's."""
    burst, url, address = 3, limited.urls[0], _address()

    async def create(name: str) -> httpx.Response:
        token = await login(url, _user("creator"))
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
            return await http.post("/api/room", json={"name": name}, headers=headers)

    assert [(await create(f"r{n}")).status_code for n in range(burst)] == [201] * burst
    refused = await create("one more")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(make_cluster):
    cluster = await make_cluster(1, trusted_proxies="", limit_exempt="", signup_limit_per_ip=f"{NO_REFILL}:2")
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        assert [(await _enter(http, _address())).status_code for _ in range(2)] == [201, 201]
        assert (await _enter(http, _address())).status_code == 429  # every one of them is 127.0.0.1


async def test_a_user_over_the_room_quota_gets_403(limited):
    node = limited.nodes[0]
    url = node.url
    address = _address()  # not exempt: the quota applies
    token = await login(url, _user("hoarder"))
    async with httpx.AsyncClient(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        for n in range(2):
            created = await http.post("/api/room", json={"name": f"q{n}"}, headers={"X-Forwarded-For": address})
            assert created.status_code == 201
        refused = await http.post("/api/room", json={"name": "q2"}, headers={"X-Forwarded-For": address})
        assert refused.status_code == 403 and "quota" in refused.json()["message"]
        # an exempt client (the load bot's address) is not held to the quota
        assert (await http.post("/api/room", json={"name": "q3"})).status_code == 201


async def test_a_session_in_as_many_rooms_as_it_may_hold_is_refused_one_more_until_it_leaves_one(limited):
    url = limited.nodes[0].url
    user = _user("roomy")
    token = await login(url, user)
    first, second, third = [(await create_room(url, token, f"cap{n}"))["id"] for n in range(3)]
    async with connect(url, user, token) as client:
        await client.send(type="SUBSCRIBE", destination="/topic/rooms", ref="list")
        await client.wait_for(lambda f: f.get("ref") == "list" and f["type"] == "SUBSCRIBED")
        assert (await client.subscribe(first, ref="a"))["type"] == "SUBSCRIBED"
        assert (await client.subscribe(second, ref="b"))["type"] == "SUBSCRIBED"
        refused = await client.subscribe(third, ref="c")
        assert refused["code"] == "TOO_MANY_ROOMS" and "2 rooms" in refused["message"]
        assert (await client.send_chat(third, "not in it", ref="s"))["code"] == "NOT_SUBSCRIBED"
        # a room the session holds may be subscribed again (a resume), and the connection lives on
        assert (await client.subscribe(second, since=0, ref="b2"))["type"] == "SUBSCRIBED"
        await client.send(type="UNSUBSCRIBE", destination=f"/topic/message/{first}", ref="u")
        await client.wait_for(lambda f: f.get("ref") == "u" and f["type"] == "UNSUBSCRIBED")
        assert (await client.subscribe(third, ref="c2"))["type"] == "SUBSCRIBED"
        assert (await client.send_chat(third, "in it now", ref="s2"))["type"] == "ACK"
    assert await _metric(limited.nodes[0], 'chattrio_frame_errors_total{code="TOO_MANY_ROOMS"}') >= 1


# Unknown room ids ------------------------------------------------------------------------------


class _CountingDatabase:
    """Stands in for PostgreSQL in the directory's caching logic: counts the lookups."""

    def __init__(self) -> None:
        self.rooms: dict[int, object] = {}
        self.lookups = 0

    async def get_room(self, room_id: int):
        self.lookups += 1
        return self.rooms.get(room_id)


async def test_unknown_room_ids_are_remembered_briefly(autojump_clock):
    from chattrio.metrics import Registry
    from chattrio.models import Room
    from chattrio.rooms import RoomDirectory

    db = _CountingDatabase()
    rooms = RoomDirectory(db, cache=None, metrics=Registry(), unknown_ttl=2.0)
    assert [await rooms.find(7) for _ in range(5)] == [None] * 5
    assert db.lookups == 1
    await trio.sleep(2.5)
    assert await rooms.find(7) is None and db.lookups == 2  # expired: asked again
    room = Room(7, "late", "someone", "2026-01-01T00:00:00+00:00")
    db.rooms[7] = room
    rooms.learn(room)  # its ROOM_CREATED event: known at once, whatever the cache said
    assert await rooms.find(7) is room


async def test_a_node_remembers_the_rooms_it_used_last_and_asks_again_for_a_forgotten_one(monkeypatch):
    from chattrio import rooms as rooms_module
    from chattrio.metrics import Registry
    from chattrio.models import Room

    monkeypatch.setattr(rooms_module, "KNOWN_ROOMS_REMEMBERED", 2)
    db = _CountingDatabase()
    directory = rooms_module.RoomDirectory(db, cache=None, metrics=Registry())
    for room_id in (1, 2, 3):
        db.rooms[room_id] = Room(room_id, f"r{room_id}", "someone", "2026-01-01T00:00:00+00:00")
    directory.learn(db.rooms[1])
    directory.learn(db.rooms[2])
    assert await directory.find(1) is db.rooms[1]  # used: 2 is now the least recent
    directory.learn(db.rooms[3])  # from a ROOM_CREATED event: 2 is forgotten
    assert db.lookups == 0
    assert [await directory.find(room_id) for room_id in (1, 3)] == [db.rooms[1], db.rooms[3]]
    assert db.lookups == 0
    assert await directory.find(2) is db.rooms[2]
    assert db.lookups == 1  # forgotten, so asked for once, and known again
    assert await directory.find(2) is db.rooms[2] and db.lookups == 1


async def test_subscribing_to_an_unknown_room_again_costs_no_query(cluster):
    node = cluster.nodes[2]
    url = node.url
    before = await _metric(node, "chattrio_unknown_room_cache_hits_total")
    room_id = 900_000_000_000 + random.randrange(1 << 30)
    async with connect(url, _user()) as client:
        for n in range(3):
            answer = await client.subscribe(room_id, ref=f"u{n}")
            assert answer["code"] == "NO_SUCH_ROOM"
    assert await _metric(node, "chattrio_unknown_room_cache_hits_total") >= before + 1


# Presence changes ------------------------------------------------------------------------------


def _change(entered: bool, room_id: int, session: str):
    from chattrio.presence import _Change

    return _Change(entered, room_id, f"user-of-{session}", session)


async def test_a_churning_session_holds_one_pending_presence_change_and_others_still_get_in():
    from chattrio.presence import PendingChanges

    pending = PendingChanges(limit=3)
    assert pending.put(_change(True, 1, "calm"))
    for n in range(10_001):  # SUBSCRIBE, UNSUBSCRIBE, ... : enter last
        assert pending.put(_change(n % 2 == 0, 2, "churner"))
    assert len(pending) == 2
    assert pending.put(_change(True, 3, "other"))
    assert not pending.put(_change(True, 4, "late"))  # the bound holds
    assert pending.put(_change(False, 2, "churner"))  # undoing a waiting change always goes in
    assert await pending.get_run(10) == [_change(True, 1, "calm"), _change(True, 3, "other")]
    assert len(pending) == 0


async def test_a_change_that_arrives_later_is_applied_after_the_waiting_ones():
    from chattrio.presence import PendingChanges

    pending = PendingChanges(limit=10)
    got = []

    async def consume() -> None:
        for _ in range(2):
            got.extend(await pending.get_run(1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.sleep(0)  # the consumer waits on an empty queue
        pending.put(_change(True, 1, "a"))
        pending.put(_change(True, 1, "b"))
    assert [c.session_id for c in got] == ["a", "b"]


# Settings and metrics --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["fast", "10", "0:10", "5:0", "-1:5", "a:b"])
def test_a_bad_rate_setting_stops_the_node_with_a_reason(raw):
    from chattrio.config import settings_from_env

    with pytest.raises(SystemExit, match="CHATTRIO_SEND_LIMIT_PER_USER"):
        settings_from_env({"CHATTRIO_SEND_LIMIT_PER_USER": raw})


def test_a_rate_setting_is_read_as_rate_and_burst():
    from chattrio.config import settings_from_env

    assert settings_from_env({"CHATTRIO_PING_LIMIT_PER_USER": "2.5:7"}).ping_limit_per_user == Rate(2.5, 7)


def test_components_counting_under_one_name_share_one_counter():
    from chattrio.metrics import Registry

    registry = Registry()
    frames = registry.counter("chattrio_rate_limited_total", "refusals", ["kind"])
    requests = registry.counter("chattrio_rate_limited_total", "refusals", ["kind"])
    frames.inc(1, "send")
    requests.inc(2, "signup")
    assert registry.render().count("# TYPE chattrio_rate_limited_total counter") == 1
    assert 'chattrio_rate_limited_total{kind="signup"} 2' in registry.render()


async def test_handshakes_of_one_user_at_the_same_instant_cannot_pass_the_cap_together(limited):
    """Raw handshakes written before any answer is read: exactly the cap (2) are accepted."""
    port = limited.nodes[0].port
    token = await login(limited.urls[0], _user("rush"))
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(8):
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        socks.append(sock)
    for sock in socks:
        await sock.send(request)
    statuses = []
    with trio.fail_after(15):
        for sock in socks:
            head = b""
            while b"\r\n" not in head:
                head += await sock.recv(4096)
            statuses.append(head.split(b" ")[1])
    for sock in socks:
        sock.close()
    assert sorted(statuses) == [b"101", b"101"] + [b"429"] * 6


async def test_a_run_of_presence_changes_is_of_one_kind_and_keeps_the_arrival_order():
    from chattrio.presence import PendingChanges

    pending = PendingChanges(limit=10)
    for change in [_change(True, 1, "a"), _change(True, 2, "b"), _change(False, 3, "c"), _change(True, 4, "d")]:
        pending.put(change)
    assert [c.session_id for c in await pending.get_run(10)] == ["a", "b"]
    assert [c.session_id for c in await pending.get_run(10)] == ["c"]
    assert [c.session_id for c in await pending.get_run(10)] == ["d"]
