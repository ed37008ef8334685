"""The server's warm-up runs each endpoint at the smallest size its template allows, so /ready comes soon."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from engine.jobs.worker import Worker
from engine.performance import PerformanceSettings
from engine.settings import Settings
from tests.api.conftest import LiveServer


def test_the_warm_up_runs_at_the_smallest_allowed_size(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[dict[str, Any]] = []
    warm_up = Worker.warm_up

    async def recording(worker: Worker, prompt: dict[str, Any]) -> str | None:
        ran.append(prompt)
        return await warm_up(worker, prompt)

    monkeypatch.setattr(Worker, "warm_up", recording)
    with (
        LiveServer(replace(settings, warmup_endpoints=("solid-color",), open_access=True)) as server,
        server.client() as client,
    ):
        assert client.get("/ready").json()["ready"] is True
    (prompt,) = ran
    image = prompt["1"]["inputs"]
    assert (image["width"], image["height"], image["batch_size"]) == (1, 1, 1)  # graphs/solid-color.json


def test_a_compiling_server_warms_up_at_the_default_size_it_will_be_compiled_for(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --compile the warm-up is what compiles: it keeps the template's size (graphs/solid-color.json
    defaults to 512x512) and cuts only the steps."""
    ran: list[dict[str, Any]] = []
    warm_up = Worker.warm_up

    async def recording(worker: Worker, prompt: dict[str, Any]) -> str | None:
        ran.append(prompt)
        return await warm_up(worker, prompt)

    monkeypatch.setattr(Worker, "warm_up", recording)
    compiling = replace(
        settings,
        warmup_endpoints=("solid-color",),
        open_access=True,
        performance=PerformanceSettings(compile=True),
    )
    with LiveServer(compiling) as server, server.client() as client:
        assert client.get("/ready").json()["ready"] is True
        assert server.service.models.accelerator.compiles
    (prompt,) = ran
    image = prompt["1"]["inputs"]
    assert (image["width"], image["height"], image["batch_size"]) == (512, 512, 1)
