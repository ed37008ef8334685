"""Nodes for the API tests: one that takes its time (and stops when interrupted), one that always fails."""

from __future__ import annotations

import time

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


class FailingImages:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def run(self, images):
        raise RuntimeError("this node fails on purpose")


NODE_CLASS_MAPPINGS = {"SlowImages": SlowImages, "FailingImages": FailingImages}
