"""Webhooks are signed (Standard Webhooks), retried with backoff, logged,, never sent to private addresses."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.types import NewJob
from engine.jobs.webhook_targets import WebhookTargetError, check_url
from engine.jobs.webhooks import WebhookSender, new_secret


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """What a receiver does, with the official Standard Webhooks verifier (signature and timestamp)."""
    try:
        Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[Any, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((request.headers, await request.read()))
        if len(self.calls) <= self.failures:
            return web.Response(status=503)
        return web.Response(status=204)


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook"


def finished_job(store: SqliteStore, url: str):
    job, _ = store.submit(
        NewJob(str(uuid.uuid4()), "e", "segmind", {}, {}, "1", 0.0, webhook_url=url, base_url="http://x")
    )
    store.claim()
    return store.complete(job.id, [], {})


async def deliver_outbox(sender: WebhookSender) -> None:
    """Run the sender until its outbox is empty."""
    task = asyncio.create_task(sender.run_forever())
    try:
        while await sender.store.next_webhook_at() is not None:
            assert not task.done(), task
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await sender.close()


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "s.sqlite3")


def test_signed_delivery_retried_until_accepted(store: SqliteStore) -> None:
    async def scenario() -> None:
        receiver = Receiver(failures=2)
        runner, url = await serve(receiver)
        secret = new_secret()
        sender = WebhookSender(
            AsyncSqliteStore(store),
            lambda job: {"id": job.id, "status": job.status},
            secret,
            allow_private=True,
            delays=(0, 0.05, 0.05, 0.05),
        )
        job = finished_job(store, url)
        await deliver_outbox(sender)
        await runner.cleanup()
        assert len(receiver.calls) == 3
        headers, body = receiver.calls[-1]
        assert json.loads(body) == {"id": job.id, "status": "COMPLETED"}
        assert verify(secret, headers, body)
        assert not verify(new_secret(), headers, body)
        log = store.deliveries(job.id)
        assert [(d.attempt, d.status_code) for d in log] == [(1, 503), (2, 503), (3, 204)]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/x",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_private_targets_are_refused(store: SqliteStore, target: str) -> None:
    async def scenario() -> None:
        sender = WebhookSender(AsyncSqliteStore(store), lambda job: {}, new_secret(), delays=(0, 0))
        job = finished_job(store, target)
        await deliver_outbox(sender)
        log = store.deliveries(job.id)
        assert (
            len(log) == 1 and log[0].error is not None and log[0].error.startswith("refused:")
        )  # not retried

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "not a url", "http:///nohost", "http://x/" + "a" * 3000]
)
def test_malformed_urls_are_refused_at_submit(url: str) -> None:
    with pytest.raises(WebhookTargetError):
        check_url(url)
