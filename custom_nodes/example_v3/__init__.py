"""An example custom node package written against ComfyUI's V3 schema (`comfy_api.latest`).

It exposes its nodes the V3 way, through `async def comfy_entrypoint()`, and loads beside V1 packages
such as example_text: the same registry, object_info, validation and executor serve both.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import ComfyExtension, io, ui

ADJUSTMENTS = ("invert", "grayscale", "brightness")


class ImageAdjust(io.ComfyNode):
    """Inverts, desaturates or brightens an image, optionally only where a mask is set."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ExampleV3ImageAdjust",
            display_name="Image Adjust (example V3)",
            category="example/image",
            description="Inverts, desaturates or brightens an image; a mask limits where.",
            inputs=[
                io.Image.Input("image"),
                io.Combo.Input("mode", options=list(ADJUSTMENTS), default="invert"),
                io.Float.Input(
                    "amount", default=1.0, min=0.0, max=2.0, step=0.01, tooltip="Brightness factor."
                ),
                io.Mask.Input("mask", optional=True),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image: Any, mode: str, amount: float, mask: Any = None) -> io.NodeOutput:
        if mode == "invert":
            adjusted = 1.0 - image
        elif mode == "grayscale":
            gray = (image[..., :3] * image.new_tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
            adjusted = gray.expand_as(image)
        else:
            adjusted = (image * amount).clamp(0.0, 1.0)
        if mask is not None:
            weight = mask.reshape(-1, *image.shape[1:3], 1).to(image)
            adjusted = image + (adjusted - image) * weight
        return io.NodeOutput(adjusted)


class TextJoin(io.ComfyNode):
    """Joins two texts; the second is lazy, so its branch runs only when it is used."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ExampleV3TextJoin",
            display_name="Text Join (example V3)",
            category="example/text",
            inputs=[
                io.String.Input("text_a", multiline=True, default=""),
                io.Boolean.Input("use_b", default=True),
                io.String.Input("text_b", default="", lazy=True),
                io.String.Input("separator", default=" "),
                io.Int.Input("times", default=1, min=1, max=10),
            ],
            outputs=[io.String.Output(display_name="text")],
        )

    @classmethod
    def check_lazy_status(cls, use_b: bool, text_b: str | None = None, **_: Any) -> list[str]:
        return ["text_b"] if use_b and text_b is None else []

    @classmethod
    def validate_inputs(cls, separator: str) -> bool | str:
        return True if len(separator) <= 8 else "separator must be at most 8 characters"

    @classmethod
    async def execute(
        cls, text_a: str, use_b: bool, separator: str, times: int, text_b: str | None = None
    ) -> io.NodeOutput:
        joined = separator.join([text_a, text_b or ""]) if use_b else text_a
        result = separator.join([joined] * times)
        return io.NodeOutput(result, ui=ui.PreviewText(result))


class ExampleV3Extension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ImageAdjust, TextJoin]


async def comfy_entrypoint() -> ExampleV3Extension:
    return ExampleV3Extension()
