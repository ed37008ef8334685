"""A real server on a free port, with the repository's endpoints plus two test-only ones (slow, broken)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web

from engine import folders
from engine.api.app import create_app
from engine.api.listen import bind, socket_url, tls_context
from engine.diffusion.test_models import write_test_models
from engine.service import Service
from engine.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
T = TypeVar("T")


class LiveServer:
    """The service in a background thread, serving HTTP(S) on 127.0.0.1 at a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.previous_folders = folders.current()
        self.service: Service
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        self.service = Service(self.settings)
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        deadline = time.monotonic() + 300
        while not self.service.readiness.ready:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.05)
        return self

    async def _start(self) -> str:
        sock = bind("127.0.0.1", 0)
        ssl_context = tls_context(self.settings.tls_cert, self.settings.tls_key)
        url = socket_url(sock, tls=ssl_context is not None)
        self.runner = web.AppRunner(create_app(self.service, url))
        await self.runner.setup()
        await web.SockSite(self.runner, sock, ssl_context=ssl_context).start()
        return url

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        folders.use(self.previous_folders)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one of the service's coroutines (a store query) on the server's loop, from the test."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"x-api-key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 120, **kwargs})


@pytest.fixture(scope="session")
def test_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("test-models")
    write_test_models(directory)
    return directory


@pytest.fixture(scope="session")
def graphs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("graphs")
    shutil.copytree(REPO / "graphs", directory, dirs_exist_ok=True)
    shutil.copytree(HERE / "graphs", directory, dirs_exist_ok=True)
    return directory


@pytest.fixture(params=["sqlite", "redis"])
def broker(request: pytest.FixtureRequest) -> str | None:
    """Every API test runs on both stores: the embedded SQLite default and a fleet's Redis (a real,
    empty redis-server), which must behave the same. A test of one store's own failure modes overrides
    this with `@pytest.mark.parametrize("broker", [None], ids=["sqlite"])`."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def settings(tmp_path: Path, test_models: Path, graphs_dir: Path, broker: str | None) -> Settings:
    return Settings(
        broker=broker,
        base_dir=tmp_path,
        models_dir=test_models,
        graphs_dir=graphs_dir,
        custom_nodes_dirs=(HERE / "custom_nodes",),
        test_models=False,
        warmup_endpoints=(),
        allow_private_webhooks=True,
        webhook_delays=(0.0, 0.2, 0.2),
        sync_timeout_seconds=120,
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    """A server started with --open-access: no key needed."""
    with LiveServer(replace(settings, open_access=True)) as live:
        yield live


@pytest.fixture
def keyed_server(settings: Settings) -> Iterator[tuple[LiveServer, str]]:
    """A server that requires keys, and the secret of one with 10 credits and 600 requests/minute."""
    with LiveServer(settings) as live:
        _, secret = live.service.keys.add_key("tester", credits=10, rate_per_minute=600)
        yield live, secret
