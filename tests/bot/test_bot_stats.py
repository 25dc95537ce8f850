"""Percentile maths, merging, and the loss/duplicate accounting of the bot."""

import random

from chattrio.bot.stats import Histogram, Ledger, SeenMessage, SentMessage, Timeline, bucket_bounds, bucket_of, settle


def test_buckets_cover_values_contiguously_and_are_narrow():
    previous_high = 0
    for index in range(0, 2000):
        low, high = bucket_bounds(index)
        assert low == previous_high
        assert bucket_of(low) == index and bucket_of(high - 1) == index
        assert (high - low) <= max(1, low / 64)
        previous_high = high


def test_percentiles_match_sorted_values_within_bucket_precision():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(9, 1.5)) for _ in range(20000)]
    h = Histogram()
    for v in values:
        h.record(v)
    ordered = sorted(values)
    for q in (50, 90, 99, 99.9):
        exact = ordered[-(-len(values) * round(q * 1000) // 100_000) - 1]
        assert abs(h.percentile(q) - exact) <= exact / 64 + 1
    assert h.percentile(100) == h.max == ordered[-1]
    assert h.min == ordered[0]


def test_small_counts_are_exact():
    h = Histogram()
    for v in (1, 2, 3, 100):
        h.record(v)
    assert h.percentile(50) == 2 and h.percentile(75) == 3 and h.percentile(99.9) == 100
    assert Histogram().percentile(50) == 0


def test_merge_and_wire_round_trip():
    a, b = Histogram(), Histogram()
    for v in range(1, 1000):
        (a if v % 2 else b).record(v * 37)
    a.merge(Histogram.from_wire(b.to_wire()))
    whole = Histogram()
    for v in range(1, 1000):
        whole.record(v * 37)
    assert a.to_wire() == whole.to_wire()


def test_timeline_merge():
    a, b = Timeline(100.0), Timeline(100.0)
    a.add("delivered", 100.5)
    b.add("delivered", 102.1, 3)
    b.latency_at(101.0).record(5)
    a.merge(Timeline.from_wire(b.to_wire()))
    assert a.counts["delivered"] == [1, 0, 3]
    assert [h.count for h in a.latency] == [0, 1]


def test_timeline_keeps_the_worst_loop_lag_of_each_second():
    a, b = Timeline(100.0), Timeline(100.0)
    a.note_loop_lag(100.2, 5_000)
    a.note_loop_lag(100.7, 2_000)
    b.note_loop_lag(100.1, 3_000)
    b.note_loop_lag(102.5, 900_000)
    a.merge(Timeline.from_wire(b.to_wire()))
    assert a.loop_lag_max == [5_000, 0, 900_000]


def _ledger(members, sent, seen):
    return Ledger(members=members, sent=sent, seen=seen)


def test_settle_counts_only_members_whose_subscription_covers_the_seq():
    # room 1: member A entered an empty room (-1), member B entered when lastSeq was 20.
    ledger = _ledger(
        members={1: [-1, 20]},
        sent={
            "m10": SentMessage(1, 0.0, True, 10),
            "m30": SentMessage(1, 0.0, True, 30),
            "m40": SentMessage(1, 0.0, True, 40),
            "unacked": SentMessage(1, 0.0),
        },
        seen={
            "m10": SeenMessage(10, 1),
            "m30": SeenMessage(30, 2),
            "m40": SeenMessage(40, 1),
            "unacked": SeenMessage(50, 2),
        },
    )
    d = settle(ledger)
    assert d.expected == 1 + 2 + 2
    assert d.delivered == 4 and d.lost == 1 and d.acked_lost_messages == 1
    assert d.unexpected == 2  # delivered although never acknowledged


def test_settle_uses_ack_seq_for_a_message_nobody_received():
    d = settle(_ledger(members={1: [-1, -1]}, sent={"m": SentMessage(1, 0.0, True, 5)}, seen={}))
    assert (d.expected, d.lost) == (2, 2)


def test_merging_worker_ledgers_adds_receivers_and_spots_double_stores():
    w1 = _ledger({1: [-1]}, {"a": SentMessage(1, 0.0, True, 7)}, {"a": SeenMessage(7, 1), "b": SeenMessage(9, 1)})
    w2 = _ledger({1: [-1]}, {"b": SentMessage(1, 0.0, True, 9)}, {"a": SeenMessage(7, 1), "b": SeenMessage(11, 1)})
    merged = Ledger()
    merged.merge(Ledger.from_wire(w1.to_wire()))
    merged.merge(Ledger.from_wire(w2.to_wire()))
    assert merged.seen["a"].receivers == 2
    assert merged.counters["duplicates"] == 1  # "b" seen under seq 9 and seq 11
    d = settle(merged)
    assert (d.expected, d.delivered, d.lost) == (4, 3, 1)


def test_the_inlined_bucket_maths_of_record_many_matches_bucket_of():
    for v in (0, 1, 127, 128, 129, 255, 256, 1000, 123_456, 10**9, -5):
        h = Histogram()
        h.record_many([v])
        assert list(h.counts) == [bucket_of(max(v, 0))]


def test_the_last_complete_second_is_the_one_before_now():
    t = Timeline(t0=1000.0)
    t.record_deliveries(1000.5, [10])
    t.record_deliveries(1001.2, [20, 30])
    assert t.last_complete_second(1001.9).count == 1  # second 1 is still running
    assert t.last_complete_second(1002.0).count == 2
    assert t.last_complete_second(1000.3).count == 0  # no second has ended yet
    assert t.last_complete_second(1010.0).count == 0  # quiet seconds since
