"""Asset records in a fleet's Redis (the `AssetStore` interface), beside its jobs (engine.jobs.redis_store),
so every API process of the fleet sees the same records over the blobs of a shared assets folder.

    {p}assetseq                     counter: a record's `seq`
    {p}asset:{id}                   hash: the record (tags as JSON; file_path and job_id absent = None)
    {p}assets:{owner}               sorted set: the owner's record ids by seq (listing, newest first)
    {p}assets:{owner}:{digest}      sorted set: the owner's records over one blob, by seq
    {p}assetjob:{owner}:{job}       sorted set: the owner's records of a job's outputs, by seq
    {p}blob:{digest}                set: every record over the blob, any owner (is it still referenced)
    {p}blobs                        set: every referenced digest

A record is added and deleted by one script each, so the indexes never disagree with the records.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis

from engine.assets.types import Asset, NewAsset
from engine.jobs.redis_layout import pairs
from engine.jobs.redis_store import guarded as redis_call

P = ParamSpec("P")
T = TypeVar("T")

ADD = r"""
-- ARGV: p, id, owner, digest, job_id ('' none), created_at, then the record's fields as pairs
local p, id, owner, digest, job = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local seq = redis.call('INCR', p .. 'assetseq')
local k = p .. 'asset:' .. id
local fields = {'id', id, 'seq', seq, 'owner', owner, 'digest', digest, 'created_at', ARGV[6]}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k, unpack(fields))
if job ~= '' then
  redis.call('HSET', k, 'job_id', job)
  redis.call('ZADD', p .. 'assetjob:' .. owner .. ':' .. job, seq, id)
end
redis.call('ZADD', p .. 'assets:' .. owner, seq, id)
redis.call('ZADD', p .. 'assets:' .. owner .. ':' .. digest, seq, id)
redis.call('SADD', p .. 'blob:' .. digest, id)
redis.call('SADD', p .. 'blobs', digest)
return redis.call('HGETALL', k)
"""

DELETE = r"""
-- ARGV: p, owner, id. Returns false, or {record, whether any record still names its blob}.
local p, owner, id = ARGV[1], ARGV[2], ARGV[3]
local k = p .. 'asset:' .. id
if redis.call('HGET', k, 'owner') ~= owner then return false end
local record = redis.call('HGETALL', k)
local digest = redis.call('HGET', k, 'digest')
local job = redis.call('HGET', k, 'job_id')
redis.call('DEL', k)
redis.call('ZREM', p .. 'assets:' .. owner, id)
redis.call('ZREM', p .. 'assets:' .. owner .. ':' .. digest, id)
if job then redis.call('ZREM', p .. 'assetjob:' .. owner .. ':' .. job, id) end
redis.call('SREM', p .. 'blob:' .. digest, id)
local referenced = redis.call('SCARD', p .. 'blob:' .. digest)
if referenced == 0 then redis.call('SREM', p .. 'blobs', digest) end
return {record, referenced}
"""

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
    )


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
        self._delete = redis.register_script(DELETE)

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
        }
        if new.file_path is not None:
            fields["file_path"] = new.file_path
        flat = [str(item) for name, value in fields.items() for item in (name, value)]
        reply = await self._add(
            args=[
                self.prefix,
                str(uuid.uuid4()),
                new.owner,
                new.digest,
                new.job_id or "",
                repr(time.time()),
                *flat,
            ]
        )
        return _asset(pairs(reply))

    @_guarded
    async def asset(self, owner: str, asset_id: str) -> Asset | None:
        fields = cast(dict[str, str], await self.redis.hgetall(self.prefix + "asset:" + asset_id))
        return _asset(fields) if fields and fields["owner"] == owner else None

    @_guarded
    async def latest_asset_over(self, owner: str, digest: str) -> Asset | None:
        found = await self._newest(f"{self.prefix}assets:{owner}:{digest}", 1)
        return found[0] if found else None

    @_guarded
    async def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...]
    ) -> Asset | None:
        """An upload or earlier mint (not a job's output) with the same blob, name and tags."""
        for asset in await self._newest(f"{self.prefix}assets:{owner}:{digest}", -1):
            if asset.job_id is None and asset.file_path == file_path and asset.tags == tags:
                return asset
        return None

    @_guarded
    async def list_assets(
        self, owner: str, limit: int, before_seq: int | None, tag: str | None
    ) -> list[Asset]:
        listed: list[Asset] = []
        index = f"{self.prefix}assets:{owner}"
        while len(listed) < limit:
            page = await self._newest(index, PAGE if tag is not None else limit - len(listed), before_seq)
            if not page:
                break
            listed += [asset for asset in page if tag is None or tag in asset.tags]
            before_seq = page[-1].seq
        return listed[:limit]

    @_guarded
    async def delete_asset(self, owner: str, asset_id: str) -> tuple[Asset, bool] | None:
        reply = await self._delete(args=[self.prefix, owner, asset_id])
        if not reply:
            return None
        return _asset(pairs(reply[0])), int(reply[1]) > 0

    @_guarded
    async def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        ids = cast(list[str], await self.redis.zrange(f"{self.prefix}assetjob:{owner}:{job_id}", 0, -1))
        return await self._records(ids)

    @_guarded
    async def asset_digests(self) -> set[str]:
        return cast(set[str], await self.redis.smembers(self.prefix + "blobs"))
