"""The Prometheus registry and its text format."""

from __future__ import annotations

import pytest

from chattrio.metrics import Counter, Histogram, Registry


def _samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_counter_without_labels():
    registry = Registry()
    counter = registry.counter("things_total", "Things seen")
    assert counter.value() == 0
    counter.inc()
    counter.inc(2.5)
    assert counter.value() == 3.5
    text = registry.render()
    assert text.splitlines()[:2] == ["# HELP things_total Things seen", "# TYPE things_total counter"]
    assert _samples(text) == {"things_total": "3.5"}
    assert text.endswith("\n")


def test_counter_with_labels_keeps_series_apart():
    registry = Registry()
    counter = registry.counter("errors_total", "Errors", ["code"])
    counter.inc(1, "BAD_FRAME")
    counter.inc(1, "BAD_FRAME")
    counter.inc(1, "TOO_LARGE")
    assert counter.value("BAD_FRAME") == 2
    assert counter.value("TOO_LARGE") == 1
    assert counter.value("NOT_SUBSCRIBED") == 0
    assert _samples(registry.render()) == {'errors_total{code="BAD_FRAME"}': "2", 'errors_total{code="TOO_LARGE"}': "1"}


def test_label_values_are_escaped():
    registry = Registry()
    registry.counter("c_total", "c", ["path"]).inc(1, 'a"b\\c\nd')
    assert 'c_total{path="a\\"b\\\\c\\nd"} 1' in registry.render().splitlines()


def test_gauge_reads_its_callback_at_scrape_time():
    value = {"now": 1}
    registry = Registry()
    registry.gauge("open", "Open things", lambda: value["now"])
    assert _samples(registry.render()) == {"open": "1"}
    value["now"] = 7
    assert _samples(registry.render()) == {"open": "7"}
    assert "# TYPE open gauge" in registry.render()


def test_gauge_with_labels_from_a_dict():
    registry = Registry()
    registry.gauge("per_room", "Per room", lambda: {("1",): 3, ("2",): 0.5}, labels=["room"])
    assert _samples(registry.render()) == {'per_room{room="1"}': "3", 'per_room{room="2"}': "0.5"}


def test_histogram_buckets_are_cumulative_and_inclusive():
    registry = Registry()
    histogram = registry.histogram("latency_ms", "Latency", [10, 1, 5])  # unsorted on purpose
    for value in (0.5, 1, 3, 5, 7, 100):
        histogram.observe(value)
    histogram.observe_many(2, 3)
    assert histogram.count == 9
    samples = _samples(registry.render())
    assert samples == {
        'latency_ms_bucket{le="1"}': "2",  # 0.5, 1 (le is inclusive)
        'latency_ms_bucket{le="5"}': "7",  # + 3, 5, 2, 2, 2
        'latency_ms_bucket{le="10"}': "8",  # + 7
        'latency_ms_bucket{le="+Inf"}': "9",  # + 100
        "latency_ms_sum": "122.5",
        "latency_ms_count": "9",
    }
    assert "# TYPE latency_ms histogram" in registry.render()


def test_fractional_bucket_bounds_are_rendered_as_floats():
    registry = Registry()
    registry.histogram("h", "h", [0.25, 2]).observe(0.1)
    samples = _samples(registry.render())
    assert samples['h_bucket{le="0.25"}'] == "1"
    assert samples['h_bucket{le="2"}'] == "1"


def test_metrics_render_in_registration_order():
    registry = Registry()
    registry.counter("b_total", "b").inc()
    registry.gauge("a", "a", lambda: 0)
    names = [line.split()[2] for line in registry.render().splitlines() if line.startswith("# TYPE")]
    assert names == ["b_total", "a"]


@pytest.mark.parametrize("value, text", [(0, "0"), (3.0, "3"), (2.5, "2.5"), (1e15, "1000000000000000"), (-1, "-1")])
def test_number_format(value, text):
    registry = Registry()
    registry.gauge("g", "g", lambda: value)
    assert _samples(registry.render()) == {"g": text}


def test_metric_objects_expose_their_kind():
    assert Counter("c", "c").kind == "counter"
    assert Histogram("h", "h", [1]).kind == "histogram"
