"""The midnight rush as a benchmark: N callers in several processes racing for M slots.

Run: python -m bench.booking_rush [--callers 1000] [--slots 100] [--processes 4]
Prints, for SQLite and for PostgreSQL (a throwaway server it starts), bookings/s,
attempts/s, p50/p99 booking latency and the double bookings found afterwards (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment
from db.schema import upgrade
from tests.support.clinics import every_day_clinic, tomorrow_tehran
from tests.support.postgres import PostgresServer
from tests.support.rush import rush


async def double_bookings(database: Database) -> int:
    """Slots holding more than one live booking; the constraint must keep this at zero."""
    async with database.reading() as session:
        groups = (await session.execute(
            select(func.count()).where(Appointment.status != "cancelled")
            .group_by(Appointment.doctor_id, Appointment.start_at))).scalars().all()
    return sum(1 for count in groups if count > 1)


async def one_backend(name: str, url: str, callers: int, slots: int, processes: int) -> str:
    """Run one rush on a fresh store and format its line of figures."""
    database = Database.from_url(url)
    await upgrade(database)
    await load_clinic(database, every_day_clinic(slots))
    service = BookingService(database)
    doctor = (await service.doctors())[0].id
    offered = await service.free_slots(doctor, tomorrow_tehran())
    calls = [(f"0912{n:07d}", offered[n % len(offered)].start) for n in range(callers)]
    result = await rush(url, doctor, calls, processes)
    outcomes = Counter(a.outcome for a in result.attempts)
    latencies = sorted(a.seconds * 1000 for a in result.attempts)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    doubles = await double_bookings(database)
    await database.close()
    errors = sum(n for k, n in outcomes.items() if k.startswith("error"))
    return (f"{name:<10} {outcomes['booked']:>6} {outcomes['taken']:>6} {errors:>6} "
            f"{outcomes['booked'] / result.wall_seconds:>10.1f} "
            f"{len(result.attempts) / result.wall_seconds:>10.1f} {p50:>8.1f} {p99:>8.1f} "
            f"{doubles:>7}")


async def main(callers: int, slots: int, processes: int) -> None:
    """Run the rush on both backends and print one table."""
    print(f"midnight rush: {callers} callers in {processes} processes, {slots} slots")
    print(f"{'backend':<10} {'booked':>6} {'taken':>6} {'errors':>6} {'booked/s':>10} "
          f"{'tries/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'doubles':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'rush.db'}"
        print(await one_backend("sqlite", url, callers, slots, processes))
    server = PostgresServer().start()
    try:
        print(await one_backend("postgresql", await server.create_database(), callers, slots,
                                processes))
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.callers, args.slots, args.processes))
