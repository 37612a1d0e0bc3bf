"""The day's figures: the terminal lines, the Markdown report and its chart."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from bench.clinic_day.records import DAY_SECONDS, KINDS, DayRun

PEAK_WINDOW_SECONDS = 600
"""Offered load's peak is the busiest window of this many simulated seconds."""


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wall_seconds_of(run: DayRun, simulated: float) -> float:
    """How many wall seconds `simulated` seconds of the day took in this run."""
    return simulated * run.plan.wall_minutes * 60 / DAY_SECONDS


def peak_offered(run: DayRun) -> tuple[float, float]:
    """Calls started per wall second in the busiest window, and the hour the window starts."""
    windows = Counter(int(c.at // PEAK_WINDOW_SECONDS) for c in run.calls)
    if not windows:
        return 0.0, 0.0
    window, count = max(windows.items(), key=lambda item: (item[1], -item[0]))
    return (count / wall_seconds_of(run, PEAK_WINDOW_SECONDS),
            window * PEAK_WINDOW_SECONDS / 3600)


def summary(run: DayRun) -> dict[str, float]:
    """The headline figures of one run, each named for what it measures."""
    turn = [t * 1000 for c in run.calls for t in c.turnaround]
    action = [c.action_seconds * 1000 for c in run.calls
              if c.kind == "book" and c.action_seconds is not None]
    booking = [c.seconds * 1000 for c in run.calls if c.kind == "book" and c.codes()]
    peak, peak_at = peak_offered(run)
    return {"calls": len(run.calls),
            "offered_mean": len(run.calls) / wall_seconds_of(run, DAY_SECONDS),
            "offered_peak": peak, "peak_at": peak_at,
            "rush": sum(1 for c in run.calls if c.at < PEAK_WINDOW_SECONDS),
            "hour0": sum(1 for c in run.calls if c.hour == 0),
            "turn_p50": percentile(turn, 50), "turn_p99": percentile(turn, 99),
            "action_p50": percentile(action, 50), "action_p99": percentile(action, 99),
            "actions": len(action),
            "booking_p50": percentile(booking, 50), "booking_p99": percentile(booking, 99),
            "bookings": len(booking), "completed": run.consultations["completed"],
            "consultations": sum(run.consultations.values())}


MEASURES = (
    "- **Offered load** is what the script sent: calls started per wall second, over the "
    "whole day (mean) and in its busiest 10 simulated minutes (peak). It is not a capacity.",
    "- **Per-command turnaround** is nobat's time per FastAGI command: from a reply leaving "
    "the fake PBX to nobat's next command arriving.",
    "- **Booking action** is that turnaround for the one command after the caller's "
    "confirming key: nobat writes the booking (or meets the slot taken) and sends the code "
    "or \"slot taken\" prompt. Every booking call that reached the confirming key counts.",
    "- **Whole booking call** is a call that heard its code, from connect to hang-up in wall "
    "time; the caller's prompts play in the fake PBX's virtual time, so it is nobat's work "
    "for the whole dialogue, not what a caller on a real line waits.",
)
"""What each figure of the report measures, printed under its table."""


def report(runs: list[DayRun], out: Path) -> Path:
    """Write report.md and day.png into `out`; return the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    chart(runs, out / "day.png")
    plan = runs[0].plan
    lines = ["# nobat: a simulated clinic day", "",
             f"A Saturday compressed into {plan.wall_minutes:g} minutes of wall time "
             f"(seed {plan.seed}): {plan.calls} inbound calls and {plan.consultations} phone "
             f"consultations over {plan.practices} practice(s) (a chosen load; the day's "
             "shape follows DESIGN.md's field facts), "
             "through `nobat serve`, the fake PBX over real FastAGI and AMI sockets, and the "
             "real database.", "",
             "![calls per 10 simulated minutes and turnaround per hour, faults marked](day.png)",
             "", "| backend | calls | offered load, mean calls/s | offered load, peak calls/s | "
             "per-command turnaround p50 / p99 ms | booking action p50 / p99 ms | "
             "whole booking call p50 / p99 ms | IVR bookings | consultations completed | "
             "wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(run) for run in runs]
    lines += ["", *MEASURES]
    for run in runs:
        lines += _section(run)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(run: DayRun) -> str:
    """One backend's line of the headline table."""
    s = summary(run)
    return (f"| {run.plan.backend} | {s['calls']:.0f} | {s['offered_mean']:.1f} | "
            f"{s['offered_peak']:.1f} (from {s['peak_at']:05.2f} h) | "
            f"{s['turn_p50']:.1f} / {s['turn_p99']:.1f} | "
            f"{s['action_p50']:.1f} / {s['action_p99']:.1f} ({s['actions']:.0f}) | "
            f"{s['booking_p50']:.0f} / {s['booking_p99']:.0f} | {s['bookings']:.0f} | "
            f"{s['completed']:.0f} of {s['consultations']:.0f} | {run.wall_seconds:.0f} |")


def _section(run: DayRun) -> list[str]:
    """One backend's faults, invariants, calls, consultations and memory."""
    s = summary(run)
    lines = ["", f"## {run.plan.backend}", ""]
    if run.late_start:
        lines += [f"The day had run {run.late_start:.1f} wall seconds before nobat first "
                  "listened: its first callers waited for it.", ""]
    lines += ["Faults:", ""]
    lines += [f"- {hour:05.2f} h: {name}: {note}" for name, hour, note in run.faults]
    lines += ["", "| invariant | violations | checked | figures / why |", "|---|---|---|---|"]
    lines += [f"| {i.name} | {i.violations} | {i.checked} | {i.note} |" for i in run.invariants]
    kinds = Counter(c.kind for c in run.calls)
    reached = Counter(c.kind for c in run.calls if c.reached())
    lines += ["", "Calls by kind (reached their goal / placed): " + ", ".join(
        f"{k} {reached[k]}/{kinds[k]}" for k in KINDS) + ".",
        "", f"Midnight rush: {s['rush']:.0f} of hour 0's {s['hour0']:.0f} calls came in "
        "00:00-00:10.", "",
        "Consultations by final state: " + ", ".join(
            f"{state} {n}" for state, n in sorted(run.consultations.items())) + ".",
        "", "nobat's memory (MB) by simulated hour: " + ", ".join(
            f"{m.hour:.2f}h {m.mb:.0f}" + (" (before the kill)" if m.before_kill else "")
            for m in run.rss) + "."]
    return lines


def chart(runs: list[DayRun], path: Path) -> None:
    """Calls per 10 simulated minutes (the midnight burst shows) and turnaround per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    bins = [n * PEAK_WINDOW_SECONDS / 3600 for n in range(DAY_SECONDS // PEAK_WINDOW_SECONDS)]
    hours = list(range(24))
    windows = Counter(int(c.at // PEAK_WINDOW_SECONDS) for c in runs[0].calls)
    axes[0].step(bins, [windows[n] for n in range(len(bins))], where="post",
                 label="calls offered (one seed: the same on each backend)")
    for run in runs:
        per_hour: dict[int, list[float]] = defaultdict(list)
        for call in run.calls:
            per_hour[call.hour] += [t * 1000 for t in call.turnaround]
        axes[1].plot(hours, [percentile(per_hour[h], 99) for h in hours], marker="o",
                     label=f"{run.plan.backend} p99")
        axes[1].plot(hours, [percentile(per_hour[h], 50) for h in hours], linestyle="--",
                     label=f"{run.plan.backend} p50")
    for name, hour, _ in runs[0].faults:
        for ax in axes:
            ax.axvline(hour, color="grey", linestyle=":")
        axes[0].annotate(name.replace("_", " "), (hour, 0), rotation=90, fontsize=7,
                         va="bottom")
    axes[0].set_ylabel("inbound calls per 10 simulated min")
    axes[1].set_ylabel("per-command turnaround, ms")
    axes[1].set_xlabel("hour of the simulated Saturday (Asia/Tehran)")
    axes[0].legend()
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_run(run: DayRun) -> None:
    """The run's headline figures and each invariant, on the terminal."""
    s = summary(run)
    print(f"{run.plan.backend}: {s['calls']:.0f} calls in {run.wall_seconds:.0f} s; offered "
          f"load mean {s['offered_mean']:.1f} calls/s, peak {s['offered_peak']:.1f} calls/s "
          f"from {s['peak_at']:05.2f} h; per-command turnaround p50 {s['turn_p50']:.1f} ms "
          f"p99 {s['turn_p99']:.1f} ms; booking action p50 {s['action_p50']:.1f} ms p99 "
          f"{s['action_p99']:.1f} ms ({s['actions']:.0f}); whole booking call p50 "
          f"{s['booking_p50']:.0f} ms p99 {s['booking_p99']:.0f} ms ({s['bookings']:.0f} "
          f"booked); consultations completed {s['completed']:.0f} of "
          f"{s['consultations']:.0f}")
    if run.late_start:
        print(f"  the day had run {run.late_start:.1f} s before nobat first listened")
    for name, hour, note in run.faults:
        print(f"  fault at {hour:05.2f} h: {name}: {note}")
    for i in run.invariants:
        note = f" ({i.note})" if i.note else ""
        print(f"  {'ok  ' if i.violations == 0 else 'FAIL'} {i.name}: {i.violations} of "
              f"{i.checked}{note}")
