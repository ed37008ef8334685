"""Asset records in a fleet's Redis (the `AssetStore` interface), beside its jobs (engine.jobs.redis_store),
so every API process of the fleet sees the same records over the blobs of a shared assets folder.

    {p}assetseq                     counter: a record's `seq`
    {p}asset:{id}                   hash: the record (tags as JSON; an absent field = None)
    {p}assets:{owner}               sorted set: the owner's record ids by seq (listing, newest first)
    {p}assets:{owner}:{digest}      sorted set: the owner's records over one blob, by seq
    {p}assetjob:{owner}:{job}       sorted set: the owner's records of a job's outputs, by seq
    {p}jobassets:{job}              set: every record of a job's outputs, any owner (forgetting the job's)
    {p}assetjobs                    set: every job that has output records (sweeping forgotten jobs')
    {p}assetexpiry                  sorted set: the records with an `expires_at`, by it
    {p}assethold:{id}               set: the jobs that hold the record (referenced it when submitted)
    {p}assetholds                   set: every record that has holds (the sweep of finished jobs' holds)
    {p}blob:{digest}                set: every record over the blob, any owner (is it still referenced)
    {p}blobs                        set: every referenced digest

Every change runs as one script, so the indexes never disagree with the records, and a delete's check
of the holds and the delete itself are one step (as the SQLite store's transaction). A job is stored
while its hash `{p}job:{id}` exists (engine.jobs.redis_layout), and queued or running while its
`status` says so: the outputs of a job whose hash is gone (forgotten, or dropped by its TTL) go at the
next `expire_assets`. A record past its `expires_at` is gone for every reader at once, before that
sweep deletes it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis

from engine.assets.types import Asset, AssetInUse, NewAsset
from engine.jobs.redis_layout import pairs
from engine.jobs.redis_store import guarded as redis_call

P = ParamSpec("P")
T = TypeVar("T")

PRELUDE = r"""
local p = ARGV[1]

local function live(k, now)
  local expires = redis.call('HGET', k, 'expires_at')
  return (not expires) or tonumber(expires) > now
end

local function unfinished(job)
  local status = redis.call('HGET', p .. 'job:' .. job, 'status')
  return status == 'QUEUED' or status == 'PROCESSING'
end

-- Delete a record with its index entries and holds; returns its digest, or false if there is none.
local function drop(id)
  local k = p .. 'asset:' .. id
  local found = redis.call('HMGET', k, 'owner', 'digest', 'job_id')
  local owner, digest, job = found[1], found[2], found[3]
  if not owner then return false end
  redis.call('DEL', k, p .. 'assethold:' .. id)
  redis.call('SREM', p .. 'assetholds', id)
  redis.call('ZREM', p .. 'assetexpiry', id)
  redis.call('ZREM', p .. 'assets:' .. owner, id)
  redis.call('ZREM', p .. 'assets:' .. owner .. ':' .. digest, id)
  if job then
    redis.call('ZREM', p .. 'assetjob:' .. owner .. ':' .. job, id)
    redis.call('SREM', p .. 'jobassets:' .. job, id)
    if redis.call('SCARD', p .. 'jobassets:' .. job) == 0 then redis.call('SREM', p .. 'assetjobs', job) end
  end
  redis.call('SREM', p .. 'blob:' .. digest, id)
  return digest
end

-- Of these digests (a table digest -> true), the ones no record names any more, dropped from {p}blobs.
local function unreferenced(digests)
  local gone = {}
  for digest in pairs(digests) do
    if redis.call('SCARD', p .. 'blob:' .. digest) == 0 then
      redis.call('SREM', p .. 'blobs', digest)
      gone[#gone + 1] = digest
    end
  end
  return gone
end
"""

ADD = (
    PRELUDE
    + r"""
-- ARGV: p, id, owner, digest, job_id ('' none), created_at, expires_at ('' none), then the fields as pairs
local id, owner, digest, job, expires = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[7]
local seq = redis.call('INCR', p .. 'assetseq')
local k = p .. 'asset:' .. id
local fields = {'id', id, 'seq', seq, 'owner', owner, 'digest', digest, 'created_at', ARGV[6]}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k, unpack(fields))
if job ~= '' then
  redis.call('HSET', k, 'job_id', job)
  redis.call('ZADD', p .. 'assetjob:' .. owner .. ':' .. job, seq, id)
  redis.call('SADD', p .. 'jobassets:' .. job, id)
  redis.call('SADD', p .. 'assetjobs', job)
end
if expires ~= '' then
  redis.call('HSET', k, 'expires_at', expires)
  redis.call('ZADD', p .. 'assetexpiry', expires, id)
end
redis.call('ZADD', p .. 'assets:' .. owner, seq, id)
redis.call('ZADD', p .. 'assets:' .. owner .. ':' .. digest, seq, id)
redis.call('SADD', p .. 'blob:' .. digest, id)
redis.call('SADD', p .. 'blobs', digest)
return redis.call('HGETALL', k)
"""
)

SET_EXPIRY = (
    PRELUDE
    + r"""
-- ARGV: p, id, expires_at ('' never). Returns the record, or false if there is none.
local id, expires = ARGV[2], ARGV[3]
local k = p .. 'asset:' .. id
if redis.call('EXISTS', k) == 0 then return false end
if expires == '' then
  redis.call('HDEL', k, 'expires_at')
  redis.call('ZREM', p .. 'assetexpiry', id)
else
  redis.call('HSET', k, 'expires_at', expires)
  redis.call('ZADD', p .. 'assetexpiry', expires, id)
end
return redis.call('HGETALL', k)
"""
)

DELETE = (
    PRELUDE
    + r"""
-- ARGV: p, owner, id, now. Returns false (no live record of the owner's), 'held' (a queued or running
-- job holds it), or {record, whether any record still names its blob}.
local owner, id, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local k = p .. 'asset:' .. id
if redis.call('HGET', k, 'owner') ~= owner or not live(k, now) then return false end
for _, job in ipairs(redis.call('SMEMBERS', p .. 'assethold:' .. id)) do
  if unfinished(job) then return 'held' end
end
local record = redis.call('HGETALL', k)
local digest = drop(id)
local referenced = redis.call('SCARD', p .. 'blob:' .. digest)
if referenced == 0 then redis.call('SREM', p .. 'blobs', digest) end
return {record, referenced}
"""
)

HOLD = (
    PRELUDE
    + r"""
-- ARGV: p, job, then the ids of the records it holds (an id with no record is left out)
local job = ARGV[2]
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('EXISTS', p .. 'asset:' .. id) == 1 then
    redis.call('SADD', p .. 'assethold:' .. id, job)
    redis.call('SADD', p .. 'assetholds', id)
  end
end
return true
"""
)

FORGET_JOB = (
    PRELUDE
    + r"""
-- ARGV: p, job. Deletes the records of the job's outputs; returns the digests no record names any more.
local digests = {}
for _, id in ipairs(redis.call('SMEMBERS', p .. 'jobassets:' .. ARGV[2])) do
  local digest = drop(id)
  if digest then digests[digest] = true end
end
return unreferenced(digests)
"""
)

EXPIRE = (
    PRELUDE
    + r"""
-- ARGV: p, now. Deletes the records past their expires_at, the outputs of jobs no longer stored, and
-- the holds of jobs no longer queued or running; returns the digests no record names any more.
local now = ARGV[2]
local digests = {}
local function forget(id)
  local digest = drop(id)
  if digest then digests[digest] = true end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'assetexpiry', '-inf', now)) do forget(id) end
for _, job in ipairs(redis.call('SMEMBERS', p .. 'assetjobs')) do
  if redis.call('EXISTS', p .. 'job:' .. job) == 0 then
    for _, id in ipairs(redis.call('SMEMBERS', p .. 'jobassets:' .. job)) do forget(id) end
  end
end
for _, id in ipairs(redis.call('SMEMBERS', p .. 'assetholds')) do
  local holds = p .. 'assethold:' .. id
  for _, job in ipairs(redis.call('SMEMBERS', holds)) do
    if not unfinished(job) then redis.call('SREM', holds, job) end
  end
  if redis.call('SCARD', holds) == 0 then redis.call('SREM', p .. 'assetholds', id) end
end
return unreferenced(digests)
"""
)

PAGE = 100
"""Records read per round while a listing filters by tag."""


def _asset(fields: dict[str, str]) -> Asset:
    return Asset(
        id=fields["id"],
        seq=int(fields["seq"]),
        owner=fields["owner"],
        digest=fields["digest"],
        size_bytes=int(fields["size_bytes"]),
        content_type=fields["content_type"],
        file_path=fields.get("file_path"),
        tags=tuple(json.loads(fields["tags"])),
        created_at=float(fields["created_at"]),
        job_id=fields.get("job_id"),
        expires_at=float(fields["expires_at"]) if "expires_at" in fields else None,
        node_id=fields.get("node_id"),
        output_type=fields.get("output_type"),
    )


def _live(asset: Asset, now: float) -> bool:
    """As the scripts' `live`: a record past its `expires_at` is gone for every reader."""
    return asset.expires_at is None or asset.expires_at > now


def _guarded(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """The store's Redis failures as StoreUnavailable, as for its jobs."""

    @wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, RedisAssetStore)
        return await redis_call(store.url, method(*args, **kwargs))

    return guarded


class RedisAssetStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, url: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.url = url
        self._add = redis.register_script(ADD)
        self._set_expiry = redis.register_script(SET_EXPIRY)
        self._delete = redis.register_script(DELETE)
        self._hold = redis.register_script(HOLD)
        self._forget_job = redis.register_script(FORGET_JOB)
        self._expire = redis.register_script(EXPIRE)

    async def _records(self, ids: list[str]) -> list[Asset]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for asset_id in ids:
                pipe.hgetall(self.prefix + "asset:" + asset_id)
            found: list[dict[str, str]] = await pipe.execute()
        return [_asset(fields) for fields in found if fields]

    async def _newest(self, index: str, count: int, before_seq: int | None = None) -> list[Asset]:
        top = f"({before_seq}" if before_seq is not None else "+inf"
        ids = cast(list[str], await self.redis.zrevrangebyscore(index, top, "-inf", start=0, num=count))
        return await self._records(ids)

    @_guarded
    async def add_asset(self, new: NewAsset) -> Asset:
        fields: dict[str, Any] = {
            "size_bytes": new.size_bytes,
            "content_type": new.content_type,
            "tags": json.dumps(list(new.tags)),
            "file_path": new.file_path,
            "node_id": new.node_id,
            "output_type": new.output_type,
        }
        flat = [str(item) for name, value in fields.items() if value is not None for item in (name, value)]
        reply = await self._add(
            args=[
                self.prefix,
                str(uuid.uuid4()),
                new.owner,
                new.digest,
                new.job_id or "",
                repr(time.time()),
                repr(new.expires_at) if new.expires_at is not None else "",
                *flat,
            ]
        )
        return _asset(pairs(reply))

    @_guarded
    async def asset(self, owner: str, asset_id: str, now: float) -> Asset | None:
        fields = cast(dict[str, str], await self.redis.hgetall(self.prefix + "asset:" + asset_id))
        if not fields or fields["owner"] != owner:
            return None
        found = _asset(fields)
        return found if _live(found, now) else None

    async def _over(self, owner: str, digest: str, now: float) -> list[Asset]:
        """The owner's live records over the blob, newest first."""
        found = await self._newest(f"{self.prefix}assets:{owner}:{digest}", -1)
        return [asset for asset in found if _live(asset, now)]

    @_guarded
    async def latest_asset_over(self, owner: str, digest: str, now: float) -> Asset | None:
        found = await self._over(owner, digest, now)
        return found[0] if found else None

    @_guarded
    async def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...], now: float
    ) -> Asset | None:
        """An upload or earlier mint (not a job's output) with the same blob, name and tags."""
        for asset in await self._over(owner, digest, now):
            if asset.job_id is None and asset.file_path == file_path and asset.tags == tags:
                return asset
        return None

    @_guarded
    async def set_asset_expiry(self, asset_id: str, expires_at: float | None) -> Asset:
        reply = await self._set_expiry(
            args=[self.prefix, asset_id, repr(expires_at) if expires_at is not None else ""]
        )
        if not reply:
            raise KeyError(asset_id)
        return _asset(pairs(reply))

    @_guarded
    async def list_assets(
        self, owner: str, limit: int, before_seq: int | None, tag: str | None, now: float
    ) -> list[Asset]:
        listed: list[Asset] = []
        index = f"{self.prefix}assets:{owner}"
        while len(listed) < limit:
            page = await self._newest(index, PAGE if tag is not None else limit - len(listed), before_seq)
            if not page:
                break
            listed += [asset for asset in page if (tag is None or tag in asset.tags) and _live(asset, now)]
            before_seq = page[-1].seq
        return listed[:limit]

    @_guarded
    async def delete_asset(self, owner: str, asset_id: str, now: float) -> tuple[Asset, bool] | None:
        reply = await self._delete(args=[self.prefix, owner, asset_id, repr(now)])
        if not reply:
            return None
        if reply == "held":
            raise AssetInUse(asset_id)
        return _asset(pairs(reply[0])), int(reply[1]) > 0

    @_guarded
    async def hold_assets(self, job_id: str, asset_ids: Iterable[str]) -> None:
        held = list(asset_ids)
        if held:
            await self._hold(args=[self.prefix, job_id, *held])

    @_guarded
    async def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        ids = cast(list[str], await self.redis.zrange(f"{self.prefix}assetjob:{owner}:{job_id}", 0, -1))
        return await self._records(ids)

    @_guarded
    async def forget_job_assets(self, job_id: str) -> set[str]:
        """Delete the records of a job's outputs (an earlier, interrupted run's); returns the digests no
        record names any more."""
        return set(await self._forget_job(args=[self.prefix, job_id]))

    @_guarded
    async def expire_assets(self, now: float) -> set[str]:
        """Delete the uploads past their `expires_at`, the outputs of jobs whose hash is gone (forgotten
        or dropped by its TTL), and the holds of jobs no longer waiting or running; returns the digests
        no record names any more."""
        return set(await self._expire(args=[self.prefix, repr(now)]))

    @_guarded
    async def asset_digests(self) -> set[str]:
        return cast(set[str], await self.redis.smembers(self.prefix + "blobs"))
