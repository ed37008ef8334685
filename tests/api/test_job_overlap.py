"""A worker that overlaps jobs (`--overlap-jobs`): the next job samples while the job before it decodes
and saves its image, every sampler runs on the device's one sampling thread, and the images are the
ones each job gives alone.

The first job is held after its VAE decode by a test node until the test has heard, over ComfyUI's
websocket, the second job's sampler report a step. A worker that runs one job at a time never starts
the second job while the first is held, so the test would wait in vain. Both graphs are ComfyUI's
flux-schnell example (on the tiny test models) with their own seeds.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.bench.engine_runs import resident_transformer
from engine.diffusion.sampling.device_thread import DeviceThread
from engine.performance import PerformanceSettings
from engine.progress import Interrupted, node_context
from engine.settings import Settings
from tests.api.comfy_client import ComfyClient, Frame, texts
from tests.api.conftest import LiveServer
from tests.api.test_comfy_examples import example

SAMPLER = "13"
"""The example's SamplerCustomAdvanced."""
HOLD_SECONDS = 120.0


@pytest.fixture
def overlapping(settings: Settings) -> Iterator[LiveServer]:
    performance = PerformanceSettings(overlap_jobs=True)
    with LiveServer(replace(settings, open_access=True, performance=performance, cache_bytes=0)) as live:
        yield live


def schnell(seed: int, prefix: str, held_by: Path | None = None) -> dict[str, Any]:
    prompt = example("flux_schnell_example")
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["25"]["inputs"]["noise_seed"] = seed
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    if held_by is not None:
        prompt["90"] = {
            "class_type": "WaitForFile",
            "inputs": {"images": ["8", 0], "path": str(held_by), "timeout": HOLD_SECONDS},
        }
        prompt["9"]["inputs"]["images"] = ["90", 0]
    return prompt


def is_step(frame: Frame, prompt_id: str) -> bool:
    """A step of the prompt's sampler (other nodes report progress too)."""
    return (
        isinstance(frame, tuple)
        and frame[0] == "progress"
        and frame[1]["prompt_id"] == prompt_id
        and frame[1]["node"] == SAMPLER
    )


def pixels(client: ComfyClient, server: LiveServer, prompt_id: str) -> np.ndarray:
    (image,) = client.history(prompt_id)[prompt_id]["outputs"]["9"]["images"]
    with Image.open(io.BytesIO(client.image(image, server.service.outputs.output_dir))) as png:
        return np.asarray(png.convert("RGB"))


def test_the_next_job_samples_while_the_last_one_saves(overlapping: LiveServer, tmp_path: Path) -> None:
    gate = tmp_path / "release-the-first-job"
    with ComfyClient(overlapping.url) as client:
        client.until_done(client.queue(schnell(0, "load")))
        forward_threads: set[int] = set()
        transformer = resident_transformer(overlapping.service)
        hook = transformer.register_forward_pre_hook(lambda *_: forward_threads.add(threading.get_ident()))

        first = client.queue(schnell(1, "first", held_by=gate))
        second = client.queue(schnell(2, "second"))

        frames = client.until(lambda frame: is_step(frame, second), timeout=HOLD_SECONDS / 2)
        running = client.http.get("/queue").json()["queue_running"]
        assert {item[1] for item in running} == {first, second}
        worker = client.http.get("/health").json()["worker"]
        assert worker["state"] == "running" and worker["jobs"] == [first, second]
        gate.touch()
        done: set[str] = set()

        def both_done(frame: Frame) -> bool:
            if isinstance(frame, tuple) and frame[0] == "executing" and frame[1]["node"] is None:
                done.add(frame[1]["prompt_id"])
            return done == {first, second}

        frames += client.until(both_done)
        hook.remove()
        # the two graphs ran on two threads at once, yet every transformer forward on one: CUDA graphs
        # recorded once serve every job (torch's CUDA graph trees belong to the recording thread)
        assert len(forward_threads) == 1

        first_steps = [i for i, frame in enumerate(frames) if is_step(frame, first)]
        second_steps = [i for i, frame in enumerate(frames) if is_step(frame, second)]
        assert first_steps and second_steps and max(first_steps) < min(second_steps)  # one sampler at a time
        for prompt_id in (first, second):
            assert texts(frames, prompt_id)[-2][0] == "execution_success"
        overlapped = {prompt_id: pixels(client, overlapping, prompt_id) for prompt_id in (first, second)}

        alone = {}
        for prompt_id, graph in ((first, schnell(1, "again", held_by=gate)), (second, schnell(2, "again"))):
            again = client.queue(graph)
            client.until_done(again)
            alone[prompt_id] = pixels(client, overlapping, again)
    for prompt_id in (first, second):
        assert np.array_equal(overlapped[prompt_id], alone[prompt_id])
    assert not np.array_equal(alone[first], alone[second])


def test_a_sampler_waiting_for_its_turn_stops_when_its_run_is_interrupted() -> None:
    device_thread = DeviceThread("test")
    started, release, interrupt = threading.Event(), threading.Event(), threading.Event()
    ran: list[str] = []

    def first() -> None:
        started.set()
        assert release.wait(10)
        ran.append("first")

    holder = threading.Thread(target=device_thread.run, args=(first,))
    holder.start()
    assert started.wait(10)
    interrupt.set()
    with node_context(SAMPLER, lambda *_: None, interrupt), pytest.raises(Interrupted):
        device_thread.run(lambda: ran.append("second"))
    release.set()
    holder.join(10)
    assert ran == ["first"]  # the interrupted one was taken out of the line, never run
    device_thread.close()
