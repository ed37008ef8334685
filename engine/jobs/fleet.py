"""Who works in the fleet: each worker's device, resident models and current job, as it last said.

A worker process writes its entry (JSON) every `BEAT_SECONDS` to a Redis key that expires after
`ENTRY_TTL_SECONDS`, so a worker that dies (SIGKILL, a lost machine) drops out of the list on its own;
a sorted set of worker ids by last beat lets a reader find the entries without scanning keys. The
embedded default has no registry: its one worker is described from the process itself
(`Service.fleet_workers`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

BEAT_SECONDS = 2.0
ENTRY_TTL_SECONDS = 10.0
"""Five missed beats: a worker busy loading a model still beats (the beat runs on the event loop)."""


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    device: str
    host: str
    pid: int
    started_at: float
    last_beat: float
    models: list[str] = field(default_factory=list)
    """The models resident on its device, least recently used first."""
    current_job: str | None = None
    """The oldest of the jobs it runs."""
    current_endpoint: str | None = None
    jobs_done: int = 0
    jobs: list[str] = field(default_factory=list)
    """Every job it runs, oldest first: two while it overlaps one job's saving with the next's sampling."""
    warming_up: bool = False
    """Still running its warm-up: it takes no jobs yet, and `warmup_failed` is not complete."""
    warmup_failed: dict[str, str] = field(default_factory=dict)
    """Endpoint -> why its warm-up failed on this worker (so every job of it would fail here)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "last_beat": self.last_beat,
            "models": self.models,
            "current_job": self.current_job,
            "current_endpoint": self.current_endpoint,
            "jobs_done": self.jobs_done,
            "jobs": self.jobs,
            "warming_up": self.warming_up,
            "warmup_failed": self.warmup_failed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerInfo:
        return cls(
            id=str(data["id"]),
            device=str(data["device"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            started_at=float(data["started_at"]),
            last_beat=float(data["last_beat"]),
            models=[str(name) for name in data.get("models", [])],
            current_job=data.get("current_job"),
            current_endpoint=data.get("current_endpoint"),
            jobs_done=int(data.get("jobs_done", 0)),
            jobs=[str(job) for job in data.get("jobs", [])],
            warming_up=bool(data.get("warming_up", False)),
            warmup_failed={str(k): str(v) for k, v in data.get("warmup_failed", {}).items()},
        )


def failed_everywhere(workers: list[WorkerInfo]) -> dict[str, str]:
    """The endpoints whose warm-up failed on every worker that has finished its warm-up, and why (each
    worker's reason, once per distinct reason): an API process refuses their requests, as the embedded
    default refuses an endpoint whose own warm-up failed, rather than queue jobs that would fail the
    same way. Every worker takes every endpoint's jobs (workers are not limited to some endpoints), so
    one warmed-up worker without the failure makes the endpoint available; with none warmed up (none
    alive, or all still warming up) nothing is refused and jobs wait in the queue for a worker."""
    judges = [worker for worker in workers if not worker.warming_up]
    if not judges:
        return {}
    names = set.intersection(*(set(worker.warmup_failed) for worker in judges))
    return {
        name: "; ".join(dict.fromkeys(worker.warmup_failed[name] for worker in judges))
        for name in sorted(names)
    }


class WorkerRegistry:
    def __init__(self, url: str, prefix: str = "engine:", ttl: float = ENTRY_TTL_SECONDS) -> None:
        self._redis: Redis = Redis.from_url(url)
        self._index = f"{prefix}workers"
        self._entry = f"{prefix}worker:"
        self.ttl = ttl

    async def beat(self, info: WorkerInfo) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._entry + info.id, json.dumps(info.to_json()), px=int(self.ttl * 1000))
            pipe.zadd(self._index, {info.id: info.last_beat})
            await pipe.execute()

    async def leave(self, worker_id: str) -> None:
        """A worker stopping cleanly leaves at once instead of when its entry expires."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._entry + worker_id)
            pipe.zrem(self._index, worker_id)
            await pipe.execute()

    async def workers(self) -> list[WorkerInfo]:
        """The workers alive now (their entry has not expired), by id; ids of dead ones are dropped."""
        await self._redis.zremrangebyscore(self._index, "-inf", time.time() - self.ttl)
        members = await self._redis.zrange(self._index, 0, -1)
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        if not ids:
            return []
        entries = await self._redis.mget([self._entry + worker_id for worker_id in ids])
        found = [WorkerInfo.from_json(json.loads(entry)) for entry in entries if entry is not None]
        return sorted(found, key=lambda info: info.id)

    async def close(self) -> None:
        await self._redis.aclose()
