"""Where a fleet's store keeps things in Redis, and how a job and a key read back from their hashes.

Every name starts with a prefix (default `engine:`), so one Redis server can hold several fleets (or
tests) apart. Shared by the async store the services use (redis_store) and the synchronous key admin
the command line uses (redis_keys).

A job enters `jobs`, `unfinished`, its API's `api:` set and its key's `owned:` set when it is
submitted, moves from `unfinished` to `finished` when it finishes (completed, failed or cancelled, by its
worker, by a client or by the take-over of a job whose workers keep dying), and leaves every set when it
is forgotten or expired (the DROP script); all in the scripts that change it, so the indexes never
disagree with it.
A job of no key is in no `owned:` set: a listing without an owner lists every key's jobs, and none asks
for only the keyless ones.

    {p}seq                  counter: a job's `seq`, its arrival order
    {p}job:{id}             hash: the job (fields as the SQLite columns; absent = NULL), TTL once finished
    {p}created              string: the latest job's created_at (no job is created before an earlier one)
    {p}jobs                 sorted set: every job id by seq (listing)
    {p}finished             sorted set: finished job ids by finished_at (expiry; listing finished jobs)
    {p}unfinished           sorted set: queued and running job ids by seq (listing them: /queue)
    {p}owned:{key}          sorted set: the ids of the API key's jobs by seq (listing a key's jobs)
    {p}jobowner             hash: job id -> its API key's id, for a job of a key (which `owned:` set to
                            leave once Redis dropped the job's hash at its TTL, before the expiry sweep)
    {p}api:{api}            sorted set: the ids of the jobs an API accepted ("comfy", "segmind"...) by seq
                            (ComfyUI's /history and /api/jobs read only ComfyUI's jobs)
    {p}apis                 set: every API that has had a job (whose `api:` sets a dropped job leaves)
    {p}indexes              string: the version of the listing indexes above ("2": with `api:`) once
                            they cover every job (built once for a store written before them, or before
                            some of them: "1" had no `api:` sets)
    {p}queued               sorted set: queued jobs by `number`, member "{seq:015}:{id}" (position, depth)
    {p}queue:{endpoint}     the same, per endpoint (what a worker claims from)
    {p}run:{endpoint}       stream of running jobs, consumer group "workers": the pending entry of a
                            job is its worker's lease (idle time = time since its last heartbeat)
    {p}endpoints            set: every endpoint that has had a job (whose streams to reclaim from)
    {p}log:{id}             stream: the job's log lines and progress
    {p}idem:{key}:{idem}    string: the job submitted with this idempotency key by this API key
    {p}key:{id}             hash: an API key (balance and reservation in micro-credits)
    {p}keyhash:{sha256}     string: the id of the key with this secret
    {p}keys                 sorted set: key ids by creation; {p}keys:live: set of unrevoked ones
    {p}rate:{key}           hash: the key's token bucket
    {p}outbox               sorted set: job ids whose webhook is due, by due time
    {p}outbox:{id}          hash: the webhook's url and attempts
    {p}deliveries:{id}      list: the webhook attempts, as JSON
    {p}once:{owner}:{scope}:{key}   string: when a Comfy API v2 Idempotency-Key was claimed
"""

from __future__ import annotations

import json

from engine.jobs.sqlite_jobs import MICROS
from engine.jobs.types import ApiKey, Job, JobStatus, OutputFile, RunReport

DEFAULT_PREFIX = "engine:"
GROUP = "workers"


def queue_member(seq: int, job_id: str) -> str:
    """A queued job's member in the queue sets: equal `number`s run in arrival order (members sort
    by their bytes, and the seq is zero-padded)."""
    return f"{seq:015d}:{job_id}"


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def job_from_hash(fields: dict[str, str]) -> Job:
    progress = None
    if "progress_total" in fields:
        progress = (float(fields["progress_value"]), float(fields["progress_total"]))
    return Job(
        id=fields["id"],
        seq=int(fields["seq"]),
        endpoint=fields["endpoint"],
        api=fields["api"],
        status=JobStatus(fields["status"]),
        params=json.loads(fields["params"]),
        prompt=json.loads(fields["prompt"]),
        output_node=fields["output_node"],
        cost=int(fields["cost_micros"]) / MICROS,
        key_id=fields.get("key_id"),
        idempotency_key=fields.get("idempotency_key"),
        webhook_url=fields.get("webhook_url"),
        base_url=fields["base_url"],
        created_at=float(fields["created_at"]),
        started_at=_float(fields.get("started_at")),
        finished_at=_float(fields.get("finished_at")),
        outputs=[OutputFile.from_json(o) for o in json.loads(fields.get("outputs", "[]"))],
        error=fields.get("error"),
        metrics=json.loads(fields.get("metrics", "{}")),
        progress=progress,
        attempts=int(fields["attempts"]),
        cancel_requested=fields["cancel_requested"] == "1",
        number=float(fields["number"]),
        extra_data=json.loads(fields["extra_data"]),
        targets=json.loads(fields["targets"]) if "targets" in fields else None,
        report=RunReport.from_json(json.loads(fields["report"])) if "report" in fields else None,
    )


def key_from_hash(fields: dict[str, str]) -> ApiKey:
    return ApiKey(
        id=fields["id"],
        name=fields["name"],
        balance=int(fields["balance_micros"]) / MICROS,
        reserved=int(fields["reserved_micros"]) / MICROS,
        rate_per_minute=int(fields["rate_per_minute"]),
        created_at=float(fields["created_at"]),
        revoked_at=_float(fields.get("revoked_at")),
        admin=fields.get("admin") == "1",
    )


def pairs(values: list[str] | list[object]) -> dict[str, str]:
    """A flat [field, value, ...] reply (HGETALL inside a script) as a dict."""
    return {str(values[i]): str(values[i + 1]) for i in range(0, len(values), 2)}
