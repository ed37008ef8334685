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
import contextlib
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

from engine.jobs.store import JobStore, StoreUnavailable, WebhookDue
from engine.jobs.types import Job
from engine.jobs.webhook_targets import PublicOnlyResolver, WebhookTargetError, refuse_private_address

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
DEFAULT_DELAYS = (0.0, 5.0, 30.0, 120.0, 600.0)
"""Seconds to wait before each attempt: five tries over about 13 minutes."""
IDLE_POLL_SECONDS = 5.0
"""How often the outbox is looked at with nothing due (finishing jobs wake the sender at once)."""
LEASE_MARGIN_SECONDS = 5.0


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
    """Delivers the webhook outbox: the store queues a job's webhook in the same commit that finishes
    the job, and this loop attempts each due one, logs the attempt and schedules the next. Pending
    retries live in the store, so a restart (even SIGKILL) resumes them where they were."""

    def __init__(
        self,
        store: JobStore,
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
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=None if self.allow_private else PublicOnlyResolver())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    def wake(self) -> None:
        """A job finished: look at the outbox now instead of at its next due time."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                delivered_any = await self.deliver_due()
                wait = IDLE_POLL_SECONDS
                if not delivered_any:
                    next_at = await self.store.next_webhook_at()
                    if next_at is not None:
                        wait = min(wait, max(0.0, next_at - time.time()))
            except StoreUnavailable as exc:
                log.warning("webhook outbox unavailable, retrying: %s", exc)
                wait = IDLE_POLL_SECONDS
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def deliver_due(self) -> bool:
        """Attempt every webhook due now; True if there was any."""
        attempted = False
        while (
            due := await self.store.claim_webhook(time.time(), self.timeout + LEASE_MARGIN_SECONDS)
        ) is not None:
            attempted = True
            await self._attempt(due)
        return attempted

    async def _attempt(self, due: WebhookDue) -> None:
        job = await self.store.get(due.job_id)
        if job is None:  # expired before it could be delivered
            await self.store.webhook_attempted(due, None, "the job expired before delivery", None)
            return
        body = json.dumps(self.render(job)).encode()
        status, error = await self._post(due.url, f"msg_{job.id}", body)
        delivered = status is not None and 200 <= status < 300
        refused = isinstance(error, str) and error.startswith("refused:")  # a forbidden target stays so
        retry_at = None
        if not delivered and not refused and due.attempt < len(self.delays):
            retry_at = time.time() + self.delays[due.attempt]
        await self.store.webhook_attempted(due, status, error, retry_at)
        if not delivered:
            log.info("webhook for job %s, attempt %d: %s", job.id, due.attempt, error or f"HTTP {status}")
            if retry_at is None:
                log.warning("webhook for job %s was not delivered", job.id)

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
        if self._session is not None:
            await self._session.close()
