"""/metrics in Prometheus text format: latency histograms kept in this process, and gauges
and day totals read from the same snapshot as the page at each scrape."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from db.call_log import CallRecord
from db.consultations import Claim
from web.status import Status

AMI_STATES = ("connected", "connecting", "auth_failed", "stopped", "off")


class Metrics:
    """The process's histograms; the composition root feeds them from the line and dialer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.call_seconds = Histogram(
            "nobat_ivr_call_duration_seconds", "How long IVR calls last, answer to hang-up.",
            buckets=(5, 15, 30, 60, 90, 120, 180, 300, 600), registry=self.registry)
        self.dispatch_lag = Histogram(
            "nobat_consultation_dispatch_lag_seconds",
            "How late each consultation attempt started after it came due.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=self.registry)
        self.agi_turnaround = Histogram(
            "nobat_agi_turnaround_seconds",
            "nobat's time from each AGI reply to its next command on a call (flow logic, store "
            "reads and writes): what a caller waits on nobat, prompts aside.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)

    def call_ended(self, record: CallRecord) -> None:
        """InboundLine.on_call_end listener."""
        self.call_seconds.observe(max(0.0, (record.ended - record.started).total_seconds()))

    def turnaround(self, seconds: float) -> None:
        """FastAgiServer.on_turnaround listener."""
        self.agi_turnaround.observe(seconds)

    def dispatched(self, _claim: Claim, lag: dt.timedelta) -> None:
        """Dialer.on_dispatch listener."""
        self.dispatch_lag.observe(max(0.0, lag.total_seconds()))

    def render(self, status: Status, consultation_states: dict[str, int]) -> bytes:
        """The exposition text: histograms plus this snapshot's figures."""
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_SnapshotCollector(status, consultation_states))
        return generate_latest(self.registry) + generate_latest(registry)


class _SnapshotCollector(Collector):
    """Yields the page's figures as metric families, once."""

    def __init__(self, status: Status, consultation_states: dict[str, int]) -> None:
        self.status, self.states = status, consultation_states

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
        yield _gauge("nobat_ivr_calls_active", "IVR calls in progress on this instance.",
                     len(status.live_calls))
        states = GaugeMetricFamily("nobat_consultations", "Consultations by state.",
                                   labels=["state"])
        for state, count in sorted(self.states.items()):
            states.add_metric([state], count)
        yield states
        today = GaugeMetricFamily("nobat_today", "Today's totals (clinic time), reset at "
                                  "local midnight.", labels=["figure"])
        for name in ("calls", "bookings", "reschedules", "cancellations",
                     "consultation_minutes", "completed_consultations", "resumed_attempts"):
            today.add_metric([name], float(getattr(day, name)))
        today.add_metric(["failed_consultations"], float(sum(n for _, n in day.failed)))
        yield today
        patients = GaugeMetricFamily("nobat_patient_calls_today", "Reminder, absence and "
                                     "survey calls that ended today, by what came of them.",
                                     labels=["purpose", "outcome"])
        for purpose, outcome, count in status.patient_calls:
            patients.add_metric([purpose, outcome], count)
        yield patients


def _gauge(name: str, text: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=float(value))
