"""Several nobat instances in separate processes claiming due consultations from one database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time

from db.consultations import ConsultationStore
from db.engine import Database
from tests.support.clinics import Clock


async def _worker(job: dict[str, object]) -> list[int]:
    database = Database.from_url(str(job["url"]))
    store = ConsultationStore(database, Clock(dt.datetime.fromisoformat(str(job["now"]))))
    lease = dt.timedelta(seconds=float(job["lease_seconds"]))
    await database.ping()
    await asyncio.sleep(max(0.0, float(job["go_at"]) - time.time()))
    claimed: list[int] = []
    try:
        while batch := await store.claim_next(str(job["instance"]), lease, int(job["limit"])):
            claimed.extend(claim.ident for claim in batch)
    finally:
        await database.close()
    return claimed


async def claim_race(url: str, now: dt.datetime, processes: int, limit: int) -> list[list[int]]:
    """Start `processes` instances at the same instant; each claims until nothing is due and
    reports the consultation ids it won."""
    go_at = time.time() + 1.0 + 0.2 * processes
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.claim_race", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
        for _ in range(processes)]
    outputs = await asyncio.gather(*(
        worker.communicate(json.dumps({
            "url": url, "now": now.isoformat(), "instance": f"nobat-{n}", "lease_seconds": 60,
            "limit": limit, "go_at": go_at}).encode())
        for n, worker in enumerate(workers)))
    for worker in workers:
        if worker.returncode != 0:
            raise RuntimeError(f"claim worker failed with exit code {worker.returncode}")
    return [json.loads(stdout) for stdout, _ in outputs]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_worker(json.loads(sys.stdin.read())))))
