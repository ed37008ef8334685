"""Job updates and cancellation requests between the processes of a fleet, over Redis pub/sub.

Every process publishes what it learns (a worker: status, logs, progress, previews, executor events;
an API process: a job queued or cancelled) and hears what every other process publishes, so a client
watching a job through any API process (SSE, fal's status stream, ComfyUI's websocket, v2 events) sees
the job that a worker on another machine runs. Cancellation requests go to every worker; the one that
runs the job interrupts it.

Pub/sub delivers at most once, which is what updates need: they only make answers come sooner, and a
listener that misses one still reads the job's state from the store at its next poll (see
engine.jobs.broadcast). A process hears its own updates directly, not back through Redis, so its own
listeners hear them at once and in order, as in the embedded default.

Executor events (every node and sampler step, with a preview per step) are many: they go on a channel
of their own, which an API process subscribes to only while someone there listens to every job, and
a worker sends them only while some process is subscribed (PUBSUB NUMSUB, looked at every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from engine.jobs import update_codec
from engine.jobs.broadcast import JobBroadcast, JobUpdate
from engine.jobs.tasks import cancel_all

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 4096
"""Updates waiting to be published; past it the oldest are dropped (the store still has the truth)."""
LISTENER_POLL_SECONDS = 1.0
RETRY_SECONDS = 1.0
ORIGIN_BYTES = 32
"""Each message starts with its sender's id (32 hex digits), so a process skips its own."""


class Channels:
    def __init__(self, prefix: str) -> None:
        self.updates = f"{prefix}updates"
        self.events = f"{prefix}events"
        self.cancel = f"{prefix}cancel"


class RedisBroadcast(JobBroadcast):
    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, prefix: str = "engine:") -> None:
        super().__init__(loop)
        self._redis: Redis = Redis.from_url(url)
        self.channels = Channels(prefix)
        self._origin = uuid.uuid4().hex.encode()
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(OUTBOX_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._unfollowed: set[asyncio.Task[None]] = set()
        """Event followers cancelled when their last listener left, awaited at `close` (a loop that
        stops first would leave their coroutines to be collected mid-way, connection and all)."""
        self._events_task: asyncio.Task[None] | None = None
        self._remote_listeners = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribed before it returns: an update published after this reaches this process."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self.channels.updates, self.channels.cancel)
        self._tasks = [
            asyncio.create_task(self._read(pubsub), name="broadcast-read"),
            asyncio.create_task(self._send_forever(), name="broadcast-send"),
            asyncio.create_task(self._count_listeners(), name="broadcast-listeners"),
        ]
        self._all_changed()

    async def close(self) -> None:
        events = [self._events_task] if self._events_task is not None else []
        await cancel_all([*self._tasks, *self._unfollowed, *events])
        self._tasks, self._events_task = [], None
        await self._redis.aclose()

    # -- sending -----------------------------------------------------------------------------------------

    @property
    def listening_to_all(self) -> bool:
        return bool(self._all) or self._remote_listeners > 0

    def publish(self, update: JobUpdate) -> None:
        """Safe to call from any thread: encoded here, handed to the loop for this process's listeners
        and for Redis, in the order of the calls."""
        if update.kind == "event" and not self.listening_to_all:
            return
        if self._loop.is_closed():
            return
        channel = self.channels.events if update.kind == "event" else self.channels.updates
        payload = self._origin + update_codec.encode(update)
        self._loop.call_soon_threadsafe(self._local_and_remote, update, channel, payload)

    def _local_and_remote(self, update: JobUpdate, channel: str, payload: bytes) -> None:
        self._deliver(update)
        self._enqueue(channel, payload)

    def request_cancel(self, job_id: str) -> None:
        self._cancelled(job_id)
        self._enqueue(self.channels.cancel, self._origin + job_id.encode())

    def _enqueue(self, channel: str, payload: bytes) -> None:
        if self._outbox.full():
            self._outbox.get_nowait()
        self._outbox.put_nowait((channel, payload))

    async def _send_forever(self) -> None:
        while True:
            channel, payload = await self._outbox.get()
            try:
                await self._redis.publish(channel, payload)
            except (RedisError, OSError) as exc:
                log.warning("a job update was not published: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    # -- hearing -----------------------------------------------------------------------------------------

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                except (RedisError, OSError) as exc:  # the connection comes back, subscribed again
                    log.warning("lost the job updates channel, reconnecting: %s", exc)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                if message is not None:
                    self._heard(message)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _heard(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if not isinstance(data, bytes) or data[:ORIGIN_BYTES] == self._origin:
            return
        channel = message.get("channel", b"")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        body = data[ORIGIN_BYTES:]
        if channel == self.channels.cancel:
            self._cancelled(body.decode(errors="replace"))
            return
        try:
            update = update_codec.decode(body)
        except update_codec.BadUpdate as exc:
            log.warning("ignored a message on %s: %s", channel, exc)
            return
        self._deliver(update)

    def _all_changed(self) -> None:
        """Subscribe to executor events while this process has a listener of every job, not longer."""
        if not self._tasks:  # not started: `start` looks again
            return
        if self._all and self._events_task is None:
            self._events_task = self._loop.create_task(self._follow_events(), name="broadcast-events")
        elif not self._all and self._events_task is not None:
            self._events_task.cancel()
            self._unfollowed.add(self._events_task)
            self._events_task.add_done_callback(self._unfollowed.discard)
            self._events_task = None

    async def _follow_events(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.channels.events)
        except (RedisError, OSError) as exc:
            log.warning("cannot follow executor events: %s", exc)
            await pubsub.aclose()
            return
        await self._read(pubsub)

    async def _count_listeners(self) -> None:
        """How many processes besides this one follow executor events (a worker sends them only then)."""
        while True:
            try:
                counts = await self._redis.pubsub_numsub(self.channels.events)
                total = int(counts[0][1]) if counts else 0
                own = 1 if self._events_task is not None else 0
                self._remote_listeners = max(0, total - own)
            except (RedisError, OSError) as exc:
                log.debug("could not count event listeners: %s", exc)
            await asyncio.sleep(LISTENER_POLL_SECONDS)
