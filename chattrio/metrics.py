"""A small Prometheus registry: counters, gauges and histograms in the text format."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import TypeVar

LabelValues = tuple[str, ...]
GaugeReading = Callable[[], float | dict[LabelValues, float]]


class Counter:
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, *label_values: str) -> None:
        self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def samples(self) -> Iterable[tuple[str, LabelValues, float]]:
        for label_values, value in self._values.items():
            yield self.name, label_values, value


class Gauge:
    """A gauge whose value is read from a callback at scrape time."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        read: GaugeReading,
        labels: Iterable[str] = (),
    ) -> None:
        self.name, self.help, self.labels, self._read = name, help_text, tuple(labels), read

    def samples(self) -> Iterable[tuple[str, LabelValues, float]]:
        value = self._read()
        if isinstance(value, dict):
            for label_values, item in value.items():
                yield self.name, label_values, item
        else:
            yield self.name, (), value


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        self.name, self.help, self.labels = name, help_text, ()
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def observe_many(self, value: float, count: int) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += count
        self._sum += value * count

    @property
    def count(self) -> int:
        return sum(self._counts)

    def samples(self) -> Iterable[tuple[str, LabelValues, float]]:
        running = 0
        for bound, count in zip(self._bounds, self._counts):
            running += count
            yield f"{self.name}_bucket", (_format_number(bound),), running
        yield f"{self.name}_bucket", ("+Inf",), self.count
        yield f"{self.name}_sum", (), self._sum
        yield f"{self.name}_count", (), self.count


M = TypeVar("M", Counter, Gauge, Histogram)


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Counter:
        """A new counter, or the one already registered under this name (several components
        count into one, e.g. chattrio_rate_limited_total)."""
        for metric in self._metrics:
            if metric.name == name and isinstance(metric, Counter):
                return metric
        return self._add(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, read: GaugeReading, labels: Iterable[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, read, labels))

    def histogram(self, name: str, help_text: str, buckets: Iterable[float]) -> Histogram:
        return self._add(Histogram(name, help_text, buckets))

    def _add(self, metric: M) -> M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines = []
        for metric in self._metrics:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            label_names = ("le",) if isinstance(metric, Histogram) else metric.labels
            for sample_name, label_values, value in metric.samples():
                labels = ",".join(f'{name}="{_escape(str(v))}"' for name, v in zip(label_names, label_values))
                rendered = f"{sample_name}{{{labels}}}" if labels else sample_name
                lines.append(f"{rendered} {_format_number(value)}")
        return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
