"""API keys in a fleet's Redis, managed from the command line (`engine keys ... --broker redis://...`)
and by tests: synchronous, like the SQLite store's key commands. Secrets are stored only as their hash,
as the SQLite store does, so a key made here authenticates in every API process of the fleet."""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from engine.jobs import redis_scripts as scripts
from engine.jobs.keys import hash_secret, new_key_id, new_secret
from engine.jobs.redis_layout import DEFAULT_PREFIX, key_from_hash, pairs
from engine.jobs.sqlite_jobs import to_micros
from engine.jobs.types import ApiKey


class RedisKeyAdmin:
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self._revoke = self.redis.register_script(scripts.REVOKE_KEY)
        self._credit = self.redis.register_script(scripts.ADD_CREDITS)

    def add_key(
        self, name: str, credits: float, rate_per_minute: int, *, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        secret = new_secret()
        key_id = new_key_id()
        fields = {
            "id": key_id,
            "name": name,
            "secret_hash": hash_secret(secret),
            "balance_micros": str(to_micros(credits)),
            "reserved_micros": "0",
            "rate_per_minute": str(rate_per_minute),
            "created_at": repr(time.time()),
            "admin": "1" if admin else "0",
        }
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.prefix + "key:" + key_id, mapping=cast(Any, fields))
            pipe.set(self.prefix + "keyhash:" + fields["secret_hash"], key_id)
            pipe.zadd(self.prefix + "keys", {key_id: float(fields["created_at"])})
            pipe.sadd(self.prefix + "keys:live", key_id)
            pipe.execute()
        return key_from_hash(fields), secret

    def list_keys(self) -> list[ApiKey]:
        ids = cast(list[str], self.redis.zrange(self.prefix + "keys", 0, -1))
        keys = [self.key(key_id) for key_id in ids]
        return [key for key in keys if key is not None]

    def key(self, key_id: str) -> ApiKey | None:
        fields = cast(dict[str, str], self.redis.hgetall(self.prefix + "key:" + key_id))
        return key_from_hash(fields) if fields else None

    def has_keys(self) -> bool:
        return bool(self.redis.scard(self.prefix + "keys:live"))

    def authenticate(self, secret: str) -> ApiKey | None:
        key_id = cast(str | None, self.redis.get(self.prefix + "keyhash:" + hash_secret(secret)))
        key = self.key(key_id) if key_id is not None else None
        return key if key is not None and key.revoked_at is None else None

    def revoke_key(self, key_id: str) -> bool:
        return bool(self._revoke(args=[self.prefix, key_id, repr(time.time())]))

    def add_credits(self, key_id: str, credits: float) -> ApiKey | None:
        reply = self._credit(args=[self.prefix, key_id, to_micros(credits)])
        return key_from_hash(pairs(reply)) if reply else None

    def close(self) -> None:
        self.redis.close()
