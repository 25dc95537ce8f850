"""The whole bot (users, accounting, workers, reports) against in-process fake nodes."""

import json

import trio
from chatfake import FakeChat

from chattrio.bot.config import Node, load_config
from chattrio.bot.http import HttpPool
from chattrio.bot.report import append_bench_record, summarize, text_summary, write_records, write_reports
from chattrio.bot.runner import listed_room_ids, run

# The loss grace ends once the run settles (--until-settled), so it only bounds a run that never
# does: such a run fails `_settled`.
GRACE_LIMIT = "30"


def _config(urls, *extra, metrics_urls=None):
    metrics_urls = urls if metrics_urls is None else metrics_urls
    return load_config(
        [
            "--users",
            "6",
            "--rooms",
            "2",
            "--ramp-up",
            "0.3",
            "--duration",
            "1.5",
            "--rate",
            "4",
            "--loss-grace",
            GRACE_LIMIT,
            "--until-settled",
            "--scenario",
            "fake",
            *[a for u in urls for a in ("--node", u)],
            *[a for u in metrics_urls for a in ("--metrics-url", u)],
            *extra,
        ]
    )


async def _mid_chat(fake: FakeChat, users: int = 6, messages: int = 5) -> None:
    """Return once every user has entered its room and the chat is under way (that many
    messages stored), however slow the machine: a fault injected then meets every user."""
    while len({user for user, _ in fake.room_subscribes}) < users or len(fake.stored) < messages:
        await trio.sleep(0.01)


def _settled(outcome):
    """The run's summary, once it has ended settled rather than at the grace's limit."""
    summary = summarize(outcome)
    assert summary["deliveries"]["settledAfterChatSeconds"] is not None, text_summary(summary)
    return summary


async def test_clean_run_delivers_everything(nursery, tmp_path):
    fake = FakeChat()
    await fake.serve(nursery, 2)
    summary = _settled(await run(_config(fake.urls), None))
    d = summary["deliveries"]
    assert summary["users"]["connected"] == 6
    assert summary["messages"]["sent"] == summary["messages"]["acked"] > 0
    # 2 rooms of 3 users, every user also receives its own messages: each message is expected by
    # the members that had entered its room before it (all three, unless a busy machine let the
    # chat begin before the last joined), which are the clients the node wrote it to.
    assert set(fake.deliveries) == {m["seq"] for m in fake.stored.values()}
    assert d["expected"] == sum(fake.deliveries.values()) == d["delivered"]
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (0, 0, 0), (d["lostSamples"], summary["notes"])
    assert summary["latencyMs"]["endToEnd"]["count"] == d["delivered"]
    assert summary["server"]["metrics"]["start"][0] is not None
    assert summary["verdict"]["passed"]
    json_path, html_path = write_reports(summary, str(tmp_path))
    assert json.loads(json_path.read_text())["deliveries"]["delivered"] == d["delivered"]
    page = html_path.read_text()
    assert page.count("<svg") == 6 and "http" not in page.split("<body>")[0].replace("xmlns", "")
    lag = summary["timeline"]["loopLagMaxMs"]
    assert lag and summary["bot"]["loopLagMaxSecond"] == lag.index(max(lag))
    assert f"(second {lag.index(max(lag))}; the chat is seconds" in text_summary(summary)
    # The machine's CPUs during the chat: the bot itself was busy, so more than nothing.
    assert summary["machine"]["chatBusyCores"] > 0 and summary["machine"]["chatStealCores"] >= 0
    assert "cores busy during the chat" in text_summary(summary)
    bench = tmp_path / "runs.jsonl"
    bench.write_text('{"scenario": "earlier"}\n')
    append_bench_record(summary, str(bench))
    records = [json.loads(line) for line in bench.read_text().splitlines()]
    assert [r["scenario"] for r in records] == ["earlier", summary["scenario"]]


async def test_loss_and_duplicates_are_counted(nursery):
    fake = FakeChat()
    await fake.serve(nursery, 1)
    cfg = _config(fake.urls)

    async def sabotage():
        await _mid_chat(fake)
        fake.drop_next.add("bot0")
        fake.duplicate_next.add("bot1")

    nursery.start_soon(sabotage)
    summary = _settled(await run(cfg, None))
    d = summary["deliveries"]
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (1, 1, 0)
    assert d["delivered"] == d["expected"] - 1
    assert not summary["verdict"]["passed"]


async def test_killed_node_users_resume_elsewhere_without_loss(nursery):
    fake = FakeChat()
    await fake.serve(nursery, 2)
    cfg = _config(fake.urls, "--workers", "2")

    async def kill():
        await _mid_chat(fake)
        await fake.kill(0)

    nursery.start_soon(kill)
    summary = _settled(await run(cfg, None))
    d = summary["deliveries"]
    assert summary["reconnects"]["reconnects"] == 3  # users 0, 2, 4 lived on node 0
    assert summary["users"]["notResumed"] == 0
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (0, 0, 0), (d["lostSamples"], summary["notes"])
    assert d["expected"] == d["delivered"] > 0


async def test_a_resume_answered_unavailable_is_asked_again_on_the_same_connection(nursery):
    fake = FakeChat()
    await fake.serve(nursery, 2)
    cfg = _config(fake.urls)

    async def kill_and_refuse_the_first_resume():
        await _mid_chat(fake)
        fake.unavailable_next.update(("bot0", "bot2", "bot4"))  # the users of node 0
        await fake.kill(0)

    nursery.start_soon(kill_and_refuse_the_first_resume)
    summary = _settled(await run(cfg, None))
    d = summary["deliveries"]
    assert summary["users"]["subscribeRetries"] == 3
    assert summary["reconnects"]["reconnects"] == 3  # one each: the refusal did not drop the connection
    resumes = [(user, since) for user, since in fake.room_subscribes if since is not None]
    assert len(resumes) == 6 and {user for user, _ in resumes} == {"bot0", "bot2", "bot4"}
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (0, 0, 0), (d["lostSamples"], summary["notes"])
    assert d["expected"] == d["delivered"] > 0


async def test_a_resume_answered_replay_too_long_catches_up_over_rest_without_loss(nursery):
    fake = FakeChat()
    await fake.serve(nursery, 2)
    cfg = _config(fake.urls)

    async def kill_and_refuse_the_replay():
        await _mid_chat(fake)
        fake.too_long_next.update(("bot0", "bot2", "bot4"))  # the users of node 0
        await fake.kill(0)

    nursery.start_soon(kill_and_refuse_the_replay)
    summary = _settled(await run(cfg, None))
    d = summary["deliveries"]
    assert summary["users"]["restCatchUps"] == 3
    assert fake.history_requests >= 3
    assert summary["reconnects"]["reconnects"] == 3  # the refusal did not drop the connection
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (0, 0, 0), (d["lostSamples"], summary["notes"])
    assert d["expected"] == d["delivered"] > 0


async def test_the_run_s_rooms_are_found_page_by_page_in_the_room_list(nursery):
    fake = FakeChat()
    await fake.serve(nursery, 1)
    for k in range(1, 452):  # more than two pages of ROOM_LIST_PAGE
        fake.rooms[k] = []
        fake.room_names[k] = f"rooms-run7-{k}" if k % 10 else f"other-{k}"
    pool = HttpPool(Node.from_base_url(fake.urls[0]))
    listed = await listed_room_ids(pool, "rooms-run7-")
    assert listed == [k for k in range(451, 0, -1) if k % 10]


async def test_users_of_a_hung_node_notice_the_missed_pong_and_resume_elsewhere(nursery):
    fake = FakeChat()
    # The live nodes ping every 0.1 s: only the hung node's connections fall silent, for the
    # keepalive's 1 s (the bot PINGs) and then 2 s (the bot gives up). However long this process
    # stalls, a live node's ping is written before the bot could give its connection up, and the
    # bot keeps a connection whose bytes wait unread.
    await fake.serve(nursery, 2, ping_every=0.1)
    # Both metrics URLs are the node that stays up: a scrape of the hung one would wait out the
    # bot's 10 s HTTP timeout.
    live = fake.urls[1]
    cfg = _config(fake.urls, "--keepalive", "1", metrics_urls=[live, live])

    async def hang():
        await _mid_chat(fake)
        fake.hang(0)  # its connections stay open, nothing answers

    nursery.start_soon(hang)
    summary = _settled(await run(cfg, None))
    d = summary["deliveries"]
    assert summary["reconnects"]["reconnects"] == 3  # users 0, 2, 4 lived on node 0
    assert summary["users"]["notResumed"] == 0
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (0, 0, 0), (d["lostSamples"], summary["notes"])
    assert d["expected"] == d["delivered"] > 0
    # Every SEND written got an answer or saw its connection given up (then written again).
    assert summary["latencyMs"]["answerWait"]["count"] >= summary["messages"]["acked"]


async def test_writes_and_room_announcements_are_recorded(nursery, tmp_path):
    fake = FakeChat()
    await fake.serve(nursery, 2)
    # The rooms of the chat are created once every user watches /topic/rooms (the run's own two
    # are created before any user): on a slow machine the first may come before anyone joined.
    fake.rooms_wait_for_watchers = (2, 6)
    records_file = tmp_path / "records.json"
    cfg = _config(fake.urls, "--signups", "4", "--room-creations", "2", "--records", str(records_file))
    outcome = await run(cfg, None)
    summary = _settled(outcome)
    write_records(outcome, summary, str(records_file))
    records = json.loads(records_file.read_text())
    signups = [w for w in records["writes"] if w["kind"] == "signup"]
    rooms = [w for w in records["writes"] if w["kind"] == "room"]
    assert len(signups) == 6 and len(rooms) == 3  # 1.5 s of chat
    assert all(w["status"] == 201 and len(w["attempts"]) == 1 for w in records["writes"])
    announced = summary["announcements"]
    # to every user (but for one leaving before it read the last)
    assert all(1 <= announced["rooms"][w["roomId"]] <= 6 for w in rooms)
    assert announced["duplicates"] == 0
    acked = {cmid for cmid, _room, _seq, _at in records["acked"]}
    assert len(acked) == summary["messages"]["acked"] > 0
    assert summary["latencyMs"]["answerWait"]["count"] == summary["messages"]["acked"]


async def test_a_room_announced_twice_is_a_duplicate(nursery):
    fake = FakeChat()
    await fake.serve(nursery, 1)
    fake.announce_twice = True
    fake.rooms_wait_for_watchers = (2, 6)  # as above: no room is created before the users watch
    summary = _settled(await run(_config(fake.urls, "--room-creations", "2"), None))
    announced = summary["announcements"]
    # the users that got a room's announcement got it twice (but for one leaving between the two)
    created = [room for room in announced["rooms"] if room not in summary["rooms"]]
    assert len(created) == 3
    assert 0 < announced["duplicates"] <= sum(announced["rooms"][room] for room in created)
