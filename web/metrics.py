"""/metrics in Prometheus text format: latency histograms kept in this process, and gauges
and day totals read from the same snapshot as the page at each scrape.

The per-call series (IVR call durations and calls in progress, consultation dispatch lag,
consultations by state, today's patient calls) carry a `practice` label, the practice's key,
when the store holds several practices; with one they read exactly as before there were
several. The day's totals (`nobat_today`) and health are the platform's; a practice's own
day is on /api/status with its token. Only practice keys are label values
("" for the shared number's calls that reached none), so the series stay few."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from db.call_log import CallRecord
from db.consultations import Claim
from web.status import Status

AMI_STATES = ("connected", "connecting", "auth_failed", "stopped", "off")
PRACTICE = "practice"


class Metrics:
    """The process's histograms; the composition root feeds them from the line and dialer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.practices = CollectorRegistry(auto_describe=True)
        """The histograms with a practice label (see the module's docstring)."""
        self.call_seconds = Histogram(
            "nobat_ivr_call_duration_seconds", "How long IVR calls last, answer to hang-up.",
            [PRACTICE], buckets=(5, 15, 30, 60, 90, 120, 180, 300, 600),
            registry=self.practices)
        self.dispatch_lag = Histogram(
            "nobat_consultation_dispatch_lag_seconds",
            "How late each consultation attempt started after it came due.", [PRACTICE],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=self.practices)
        for histogram in (self.call_seconds, self.dispatch_lag):
            histogram.labels("")  # zeros from the start, as an unlabelled one shows
        self.agi_turnaround = Histogram(
            "nobat_agi_turnaround_seconds",
            "nobat's time from each AGI reply to its next command on a call (flow logic, store "
            "reads and writes): what a caller waits on nobat, prompts aside.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)

    def call_ended(self, record: CallRecord) -> None:
        """InboundLine.on_call_end listener."""
        self.call_seconds.labels(record.practice).observe(
            max(0.0, (record.ended - record.started).total_seconds()))

    def turnaround(self, seconds: float) -> None:
        """FastAgiServer.on_turnaround listener."""
        self.agi_turnaround.observe(seconds)

    def dispatched(self, claim: Claim, lag: dt.timedelta) -> None:
        """Dialer.on_dispatch listener."""
        self.dispatch_lag.labels(claim.practice.folder).observe(max(0.0, lag.total_seconds()))

    def render(self, status: Status, consultation_states: dict[tuple[str, str], int],
               patient_calls: dict[tuple[str, str, str], int]) -> bytes:
        """The exposition text: histograms plus this snapshot's figures, each practice's
        apart when the store holds several."""
        several = len(status.practices) > 1
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_SnapshotCollector(status, consultation_states, patient_calls,
                                             several))
        registry.register(_Relabelled(self.practices.collect(), several))
        return generate_latest(self.registry) + generate_latest(registry)


class _Relabelled(Collector):
    """Families with a practice label as they are when several practices share the store;
    with one, summed across it (its key and "") into the series one practice always had."""

    def __init__(self, families: Iterable[Metric], several: bool) -> None:
        self.families, self.several = list(families), several

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            if not self.several:
                family.samples = _without_practice(family.samples)
            yield family


def _without_practice(samples: list[Any]) -> list[Any]:
    """Samples with the practice label dropped: counts summed, creation times the first."""
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
    for sample in samples:
        labels = {k: v for k, v in sample.labels.items() if k != PRACTICE}
        key = (sample.name, tuple(sorted(labels.items())))
        kept = merged.get(key)
        if kept is None:
            merged[key] = sample._replace(labels=labels)
        else:
            join = min if sample.name.endswith("_created") else sum
            merged[key] = kept._replace(value=join((kept.value, sample.value)))
    return list(merged.values())


class _SnapshotCollector(Collector):
    """Yields the page's figures as metric families, once."""

    def __init__(self, status: Status, consultation_states: dict[tuple[str, str], int],
                 patient_calls: dict[tuple[str, str, str], int], several: bool) -> None:
        self.status, self.states, self.several = status, consultation_states, several
        self.patient_calls = patient_calls

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status, health, day = self.status, self.status.health, self.status.day
        yield _gauge("nobat_up", "1 when every configured part works.", health.ok)
        ami = GaugeMetricFamily("nobat_ami_state", "The AMI link's state (1 = current).",
                                labels=["state"])
        for state in AMI_STATES:
            ami.add_metric([state], 1.0 if health.ami == state else 0.0)
        yield ami
        yield _gauge("nobat_fastagi_listening", "1 when the FastAGI port is open.",
                     health.fastagi == "listening")
        yield _gauge("nobat_database_up", "1 when the store answers at the current schema.",
                     health.database == "ok")
        parts = GaugeMetricFamily("nobat_part_up", "1 while a supervised part (dialer, flow "
                                  "watcher, ...) runs and its work succeeds.", labels=["part"])
        restarts = CounterMetricFamily("nobat_part_restarts", "Times a supervised part was "
                                       "started again after it failed.", labels=["part"])
        for part in health.parts:
            parts.add_metric([part.name], float(part.running))
            restarts.add_metric([part.name], float(part.restarts))
        yield parts
        yield restarts
        yield _gauge("nobat_consultations_due_unserved", "Consultations due now while the "
                     "dialer or its AMI link is down.", health.due_unserved)
        active = Counter({(key,): 0 for key in status.practices} or {("",): 0})
        active.update((call.practice,) for call in status.live_calls)
        yield _by_practice(GaugeMetricFamily(
            "nobat_ivr_calls_active", "IVR calls in progress on this instance.",
            labels=[PRACTICE]), active, self.several)
        yield _by_practice(GaugeMetricFamily(
            "nobat_consultations", "Consultations by state.",
            labels=["state", PRACTICE]), self.states, self.several)
        today = GaugeMetricFamily("nobat_today", "Today's totals (clinic time), reset at "
                                  "local midnight.", labels=["figure"])
        for name in ("calls", "bookings", "reschedules", "cancellations",
                     "consultation_minutes", "completed_consultations", "resumed_attempts"):
            today.add_metric([name], float(getattr(day, name)))
        today.add_metric(["failed_consultations"], float(sum(n for _, n in day.failed)))
        yield today
        yield _by_practice(GaugeMetricFamily(
            "nobat_patient_calls_today", "Reminder, absence and survey calls that ended "
            "today, by what came of them.", labels=["purpose", "outcome", PRACTICE]),
            self.patient_calls, self.several)


def _by_practice(family: GaugeMetricFamily, counts: Mapping[tuple[str, ...], int],
                 several: bool) -> Metric:
    """A family counted per (practice, *values), with the practice label when several."""
    for (practice, *values), count in sorted(counts.items()):
        family.add_metric([*values, practice], count)
    if not several:
        family.samples = _without_practice(family.samples)
    return family


def _gauge(name: str, text: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=float(value))
