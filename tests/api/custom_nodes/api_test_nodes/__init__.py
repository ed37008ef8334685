"""Nodes for the API tests: one that takes its time (and stops when interrupted), one that waits for a
file the test creates, one that always fails."""

from __future__ import annotations

import time
from pathlib import Path

from engine.progress import ProgressBar, throw_if_interrupted

STEP_SECONDS = 0.05


class SlowImages:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 60.0}),
            }
        }

    def run(self, images, seconds):
        steps = max(1, round(seconds / STEP_SECONDS))
        bar = ProgressBar(steps)
        for _ in range(steps):
            throw_if_interrupted()
            time.sleep(STEP_SECONDS)
            bar.update(1)
        return (images,)


class WaitForFile:
    """Passes its images on once `path` exists: a test holds a job at this node until it has seen
    what it waits for happen elsewhere (fails after `timeout` seconds; stops when interrupted)."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "path": ("STRING", {"default": ""}),
                "timeout": ("FLOAT", {"default": 60.0, "min": 0.0, "max": 600.0}),
            }
        }

    def run(self, images, path, timeout):
        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            throw_if_interrupted()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear within {timeout} s")
            time.sleep(STEP_SECONDS)
        return (images,)


class FailingImages:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def run(self, images):
        raise RuntimeError("this node fails on purpose")


NODE_CLASS_MAPPINGS = {"SlowImages": SlowImages, "WaitForFile": WaitForFile, "FailingImages": FailingImages}
