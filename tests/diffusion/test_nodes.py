"""The loader, latent and image nodes, as a graph calls them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import folders
from engine.diffusion.detect import UnrecognizedModelError
from engine.diffusion.loading import load_vae
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import WeightsFileError
from engine.diffusion.vae import LatentShapeError
from engine.nodes.image import EmptyImage, LoadImage, PreviewImage, SaveImage, VAEDecode, VAEEncode
from engine.nodes.latent import EmptyLatentImage, EmptySD3LatentImage
from engine.nodes.loaders import CheckpointLoaderSimple, UNETLoader, VAELoader
from engine.progress import Interrupted, node_context

pytestmark = pytest.mark.usefixtures("dirs", "manager")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_loaders_list_the_model_folders() -> None:
    assert CheckpointLoaderSimple.INPUT_TYPES()["required"]["ckpt_name"][0] == [
        "aura_flow_0.2.safetensors",
        "aura_flow_0.3.safetensors",
        "flux1-dev-fp8.safetensors",
        "flux1-schnell-fp8.safetensors",
    ]
    unet = UNETLoader.INPUT_TYPES()["required"]
    assert unet["unet_name"][0] == [
        "flux.1-fill-dev-OneReward-transformer_fp8.safetensors",
        "flux1-canny-dev.safetensors",
        "flux1-dev.safetensors",
        "flux1-fill-dev.safetensors",
        "flux1-kontext-dev.safetensors",
        "flux1-schnell.safetensors",
    ]
    assert unet["weight_dtype"][0] == ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
    assert VAELoader.INPUT_TYPES()["required"]["vae_name"][0] == ["ae.safetensors"]


def test_checkpoint_loader_returns_model_clip_and_vae_of_the_checkpoint(manager: ModelManager) -> None:
    model, clip, vae = CheckpointLoaderSimple(manager).load_checkpoint("aura_flow_0.3.safetensors")

    assert model.architecture.name == "AuraFlow"
    assert model.latent_format.channels == 4
    assert vae.latent_channels == 4
    cond = clip.encode_from_tokens(clip.tokenize("a red cat"))
    assert cond.shape[0] == 1 and cond.shape[2] == 32


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])
def test_fp8_weight_dtypes_store_fp8_and_stay_close_to_the_full_precision_model(
    manager: ModelManager, weight_dtype: str
) -> None:
    (full,) = UNETLoader(manager).load_unet("flux1-dev.safetensors", "default")
    (small,) = UNETLoader(manager).load_unet("flux1-dev.safetensors", weight_dtype)
    x = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.7])
    given = ModelInputs(torch.randn(1, 8, 32), torch.randn(1, 64))

    linears = {name: m for name, m in small.module().named_modules() if isinstance(m, torch.nn.Linear)}
    if weight_dtype == "fp8_e4m3fn_fast":  # scaled fp8 in the blocks; embeddings and final layer wide
        linears = {name: m for name, m in linears.items() if "transformer_blocks." in name}
    stored = {m.weight.dtype for m in linears.values()}
    assert stored == {torch.float8_e5m2 if weight_dtype == "fp8_e5m2" else torch.float8_e4m3fn}
    assert cosine(small.apply_model(x, sigma, given), full.apply_model(x, sigma, given)) > 0.98
    assert len(manager.resident()) == 2


def test_the_same_file_loads_once_for_every_loader_node_and_graph(manager: ModelManager) -> None:
    (first,) = UNETLoader(manager).load_unet("flux1-schnell.safetensors", "default")
    (second,) = UNETLoader(manager).load_unet("flux1-schnell.safetensors", "default")
    assert first.module() is second.module()
    assert len(manager.resident()) == 1


def test_a_pickle_named_by_a_graph_is_refused_saying_why(
    dirs: folders.FolderSettings, manager: ModelManager
) -> None:
    pickle = dirs.models_dir / "checkpoints" / "old_model.ckpt"
    pickle.write_bytes(b"\x80\x04whatever")
    try:
        assert "old_model.ckpt" in CheckpointLoaderSimple.INPUT_TYPES()["required"]["ckpt_name"][0]
        with pytest.raises(WeightsFileError, match="run arbitrary code"):
            CheckpointLoaderSimple(manager).load_checkpoint("old_model.ckpt")
    finally:
        pickle.unlink()


def test_an_unknown_file_is_refused_by_name(manager: ModelManager, dirs: folders.FolderSettings) -> None:
    unknown = dirs.models_dir / "vae" / "mystery.safetensors"
    unknown.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    try:
        with pytest.raises(UnrecognizedModelError, match=r"mystery\.safetensors"):
            VAELoader(manager).load_vae("mystery.safetensors")
    finally:
        unknown.unlink()


def test_a_file_of_the_wrong_kind_says_what_it_holds(
    dirs: folders.FolderSettings, manager: ModelManager
) -> None:
    with pytest.raises(WeightsFileError, match=r"clip_l\.safetensors: holds no VAE \(it holds CLIP-L\)"):
        load_vae(dirs.models_dir / "text_encoders" / "clip_l.safetensors", manager=manager)


@pytest.mark.parametrize("name", ["../checkpoints/aura_flow_0.3.safetensors", "/etc/passwd"])
def test_loader_names_cannot_leave_their_folder(manager: ModelManager, name: str) -> None:
    with pytest.raises(folders.PathEscapeError):
        UNETLoader(manager).load_unet(name, "default")


def test_empty_latents_have_comfyui_channels_and_one_eighth_the_size() -> None:
    (sd,) = EmptyLatentImage().generate(1024, 768, 2)
    (sd3,) = EmptySD3LatentImage().generate(1024, 768, 1)
    assert sd["samples"].shape == (2, 4, 96, 128)
    assert sd3["samples"].shape == (1, 16, 96, 128)
    assert not sd["samples"].any() and sd3["samples"].device.type == "cpu"


def test_empty_image_is_filled_with_the_color() -> None:
    (image,) = EmptyImage().generate(5, 3, 2, 0xFF8000)
    assert image.shape == (2, 3, 5, 3)
    assert torch.allclose(image[1, 2, 4], torch.tensor([1.0, 128 / 255, 0.0]))


def test_vae_decode_and_encode_move_between_pixels_and_latents(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    latent = {"samples": torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(0))}

    (image,) = VAEDecode().decode(vae, latent)
    assert image.shape == (2, 64, 96, 3)
    assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert image.std() > 0.01

    (encoded,) = VAEEncode().encode(vae, image[:, :61, :, :])
    assert encoded["samples"].shape == (2, 16, 7, 12)


def test_vae_decode_refuses_a_latent_of_another_family(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    with pytest.raises(LatentShapeError, match="16-channel"):
        VAEDecode().decode(vae, EmptyLatentImage().generate(64, 64, 1)[0])


def test_vae_decode_of_a_batch_stops_when_the_run_is_interrupted(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    interrupt = threading.Event()
    interrupt.set()
    reports: list[float] = []
    with (
        node_context("8", lambda value, total, preview: reports.append(value), interrupt),
        pytest.raises(Interrupted),
    ):
        VAEDecode().decode(vae, {"samples": torch.zeros(3, 16, 4, 4)})
    assert reports == []


def png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        return dict(image.text)


def test_save_image_writes_numbered_pngs_with_the_graph_in_them(dirs: folders.FolderSettings) -> None:
    (dirs.output_dir / "ComfyUI_00041_.png").write_bytes(b"earlier run")
    images = torch.rand(2, 24, 40, 3, generator=torch.Generator().manual_seed(0))
    prompt = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI"}}}
    workflow = {"nodes": [], "links": [], "version": 0.4}

    result = SaveImage().save_images(images, "ComfyUI", prompt=prompt, extra_pnginfo={"workflow": workflow})

    expected = [
        {"filename": "ComfyUI_00042_.png", "subfolder": "", "type": "output"},
        {"filename": "ComfyUI_00043_.png", "subfolder": "", "type": "output"},
    ]
    assert result == {"ui": {"images": expected}}
    saved = dirs.output_dir / "ComfyUI_00043_.png"
    with Image.open(saved) as image:
        assert image.size == (40, 24) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert (pixels == np.clip(255.0 * images[1].numpy(), 0, 255).astype(np.uint8)).all()
    assert {key: json.loads(value) for key, value in png_text(saved).items()} == {
        "prompt": prompt,
        "workflow": workflow,
    }


def test_save_image_into_a_subfolder_with_the_batch_number(dirs: folders.FolderSettings) -> None:
    result = SaveImage().save_images(torch.zeros(2, 8, 8, 3), "renders/cat_%batch_num%")
    assert [image["filename"] for image in result["ui"]["images"]] == ["cat_0_00001_.png", "cat_1_00002_.png"]
    assert {image["subfolder"] for image in result["ui"]["images"]} == {"renders"}
    assert (dirs.output_dir / "renders" / "cat_1_00002_.png").is_file()


@pytest.mark.parametrize("prefix", ["../outside", "../../etc/cron.d/evil", "/tmp/evil", "sub/../../outside"])
def test_save_image_never_writes_outside_the_output_folder(dirs: folders.FolderSettings, prefix: str) -> None:
    with pytest.raises(folders.PathEscapeError):
        SaveImage().save_images(torch.zeros(1, 8, 8, 3), prefix)
    assert list(dirs.output_dir.parent.rglob("*.png")) == []


def test_preview_image_goes_to_the_temp_folder(dirs: folders.FolderSettings) -> None:
    result = PreviewImage().save_images(torch.zeros(1, 8, 8, 3))
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    assert (dirs.temp_dir / entry["filename"]).is_file()


def test_load_image_gives_image_and_a_mask_from_alpha(dirs: folders.FolderSettings) -> None:
    rgba = np.zeros((6, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(dirs.input_dir / "cut.png")
    Image.new("RGB", (5, 7), (0, 0, 255)).save(dirs.input_dir / "plain.jpg")
    (dirs.input_dir / "notes.txt").write_text("not an image")

    assert LoadImage.INPUT_TYPES()["required"]["image"][0] == ["cut.png", "plain.jpg"]
    image, mask = LoadImage().load_image("cut.png")
    assert image.shape == (1, 6, 4, 3) and mask.shape == (1, 6, 4)
    assert torch.equal(image[0, 3, 2], torch.tensor([1.0, 0.0, 0.0]))
    assert mask[0, 0, 0] == 1.0 and mask.sum() == 1.0
    _, no_alpha = LoadImage().load_image("plain.jpg")
    assert no_alpha.shape == (1, 64, 64) and not no_alpha.any()


def test_load_image_reads_every_frame_of_an_animation(dirs: folders.FolderSettings) -> None:
    frames = [Image.new("RGB", (4, 4), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(dirs.input_dir / "anim.gif", save_all=True, append_images=frames[1:])
    image, _ = LoadImage().load_image("anim.gif")
    assert image.shape == (3, 4, 4, 3)


def test_load_image_reads_outputs_by_annotation_and_notices_changes(dirs: folders.FolderSettings) -> None:
    Image.new("RGB", (4, 4), (0, 255, 0)).save(dirs.output_dir / "made.png")
    image, _ = LoadImage().load_image("made.png [output]")
    assert image[0, 0, 0, 1] == 1.0
    before = LoadImage.IS_CHANGED("made.png [output]")
    Image.new("RGB", (4, 4), (0, 0, 0)).save(dirs.output_dir / "made.png")
    assert LoadImage.IS_CHANGED("made.png [output]") != before


@pytest.mark.parametrize("name", ["../secret.png", "../../etc/passwd", "/etc/passwd", "sub/../../secret.png"])
def test_load_image_names_cannot_leave_the_input_folder(dirs: folders.FolderSettings, name: str) -> None:
    Image.new("RGB", (4, 4)).save(dirs.input_dir.parent / "secret.png")
    assert LoadImage.VALIDATE_INPUTS(name) == f"Invalid image file: {name}"
    with pytest.raises(folders.PathEscapeError):
        LoadImage().load_image(name)
