"""The server's warm-up runs each endpoint at the smallest size its template allows, so /ready comes soon."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from engine.jobs.worker import Worker
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
