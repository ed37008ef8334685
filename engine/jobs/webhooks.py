"""Webhooks: a job's final result POSTed to the URL its client gave, signed, retried with backoff.

Signatures follow Standard Webhooks: headers `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the server's
secret (`whsec_<base64>`), so receivers can use any Standard Webhooks library to verify.

The URL comes from a client, so it must not become a way into the server's own network: unless
private targets are explicitly allowed, engine.jobs.webhook_targets refuses each connection to an
address that is not public.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.types import Job
from engine.jobs.webhook_targets import PublicOnlyResolver, WebhookTargetError, refuse_private_address

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
DEFAULT_DELAYS = (0.0, 5.0, 30.0, 120.0, 600.0)
"""Seconds to wait before each attempt: five tries over about 13 minutes."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def load_or_create_secret(path: Path) -> str:
    """The server's signing secret, created once and kept private to the server's user."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookSender:
    def __init__(
        self,
        store: SqliteStore,
        render: Callable[[Job], dict[str, Any]],
        secret: str,
        *,
        allow_private: bool = False,
        delays: Sequence[float] = DEFAULT_DELAYS,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.render = render
        self.secret = secret
        self.allow_private = allow_private
        self.delays = tuple(delays)
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=None if self.allow_private else PublicOnlyResolver())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    def schedule(self, job: Job) -> None:
        """Start delivering a finished job's result (call on the event loop)."""
        if job.webhook_url is None:
            return
        task = asyncio.create_task(self.deliver(job), name=f"webhook-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, job: Job) -> bool:
        assert job.webhook_url is not None
        body = json.dumps(self.render(job)).encode()
        message_id = f"msg_{job.id}"
        for attempt, delay in enumerate(self.delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            status, error = await self._post(job.webhook_url, message_id, body)
            self.store.record_delivery(job.id, attempt, job.webhook_url, status, error)
            if status is not None and 200 <= status < 300:
                return True
            if isinstance(error, str) and error.startswith("refused:"):
                break  # a forbidden target stays forbidden
            log.info("webhook for job %s, attempt %d: %s", job.id, attempt, error or f"HTTP {status}")
        log.warning("webhook for job %s was not delivered", job.id)
        return False

    async def _post(self, url: str, message_id: str, body: bytes) -> tuple[int | None, str | None]:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, message_id, timestamp, body),
        }
        try:
            if not self.allow_private:
                refuse_private_address(url)  # names are checked by the resolver, on each connection
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return response.status, None if response.status < 300 else f"HTTP {response.status}"
        except WebhookTargetError as exc:
            return None, f"refused: {exc}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, WebhookTargetError):
                return None, f"refused: {exc.os_error}"
            return None, f"connection failed: {exc.os_error}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
