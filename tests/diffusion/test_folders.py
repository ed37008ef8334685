from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import folders


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    previous = folders.current()
    folders.configure(base_dir=tmp_path)
    yield tmp_path
    folders.use(previous)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_lists_model_files_sorted_with_subfolders_and_only_model_extensions(base: Path) -> None:
    touch(base / "models/checkpoints/b.safetensors")
    touch(base / "models/checkpoints/sd/a.sft")
    touch(base / "models/checkpoints/old.ckpt")
    touch(base / "models/checkpoints/notes.txt")
    touch(base / "models/checkpoints/.cache/hidden.safetensors")

    assert folders.get_filename_list("checkpoints") == ["b.safetensors", "old.ckpt", "sd/a.sft"]


def test_legacy_folder_names_reach_the_same_files_in_both_directories(base: Path) -> None:
    touch(base / "models/unet/old.safetensors")
    touch(base / "models/diffusion_models/new.safetensors")
    touch(base / "models/clip/clip_l.safetensors")
    touch(base / "models/text_encoders/t5xxl_fp16.safetensors")

    expected_models = ["new.safetensors", "old.safetensors"]
    assert folders.get_filename_list("diffusion_models") == expected_models
    assert folders.get_filename_list("unet") == expected_models
    assert folders.get_filename_list("clip") == ["clip_l.safetensors", "t5xxl_fp16.safetensors"]
    assert (
        folders.get_full_path("unet", "new.safetensors") == base / "models/diffusion_models/new.safetensors"
    )


def test_configs_list_yaml_files(base: Path) -> None:
    touch(base / "models/configs/v1.yaml")
    touch(base / "models/configs/weights.safetensors")
    assert folders.get_filename_list("configs") == ["v1.yaml"]


def test_models_dir_can_point_elsewhere(tmp_path: Path, base: Path) -> None:
    touch(tmp_path / "shared-models/vae/ae.safetensors")
    folders.configure(base_dir=base, models_dir=tmp_path / "shared-models")
    assert folders.get_filename_list("vae") == ["ae.safetensors"]


def test_missing_file_error_names_the_folder_and_the_file(base: Path) -> None:
    with pytest.raises(folders.MissingFileError, match=r"flux1-dev\.safetensors.*'diffusion_models'"):
        folders.get_full_path("unet", "flux1-dev.safetensors")


def test_unknown_folder_is_refused(base: Path) -> None:
    with pytest.raises(folders.UnknownFolderError, match="nope"):
        folders.get_filename_list("nope")


@pytest.mark.parametrize(
    "name",
    [
        "../secret.safetensors",
        "sub/../../secret.safetensors",
        "/etc/passwd",
        "..\\secret.safetensors",
        "\\secret.safetensors",
        "\\\\server\\share\\secret.safetensors",
        "C:x",
        "",
    ],
)
def test_model_lookups_refuse_names_that_leave_the_folder(base: Path, name: str) -> None:
    touch(base / "models/secret.safetensors")
    with pytest.raises(folders.PathEscapeError):
        folders.get_full_path("checkpoints", name)


def test_model_folders_may_link_to_files_elsewhere(tmp_path: Path, base: Path) -> None:
    outside = touch(tmp_path / "elsewhere/big.safetensors")
    link = base / "models/checkpoints/big.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)

    assert folders.get_filename_list("checkpoints") == ["big.safetensors"]
    assert folders.get_full_path("checkpoints", "big.safetensors").read_bytes() == b"x"


def test_a_directory_link_loop_does_not_hang_the_listing(base: Path) -> None:
    touch(base / "models/loras/a.safetensors")
    (base / "models/loras/loop").symlink_to(base / "models/loras")
    assert "a.safetensors" in folders.get_filename_list("loras")


def test_extra_model_paths_yaml_adds_search_paths_in_order(tmp_path: Path, base: Path) -> None:
    touch(tmp_path / "comfy/models/checkpoints/x.safetensors")
    touch(tmp_path / "comfy/models/unet/flux.safetensors")
    touch(tmp_path / "a1111/models/Lora/style.safetensors")
    touch(tmp_path / "a1111/models/LyCORIS/other.safetensors")
    touch(tmp_path / "first/checkpoints/x.safetensors")
    config = tmp_path / "config" / "extra_model_paths.yaml"
    config.parent.mkdir()
    config.write_text(
        "comfyui:\n"
        "  base_path: ../comfy\n"
        "  checkpoints: models/checkpoints/\n"
        "  unet: models/unet\n"
        "a1111:\n"
        f"  base_path: {tmp_path / 'a1111'}\n"
        "  loras: |\n"
        "    models/Lora\n"
        "    models/LyCORIS\n"
        "preferred:\n"
        f"  base_path: {tmp_path / 'first'}\n"
        "  is_default: true\n"
        "  checkpoints: checkpoints\n"
        "empty_section:\n"
    )
    folders.configure(base_dir=base, extra_model_paths=[config])

    assert folders.get_filename_list("diffusion_models") == ["flux.safetensors"]
    assert folders.get_filename_list("loras") == ["other.safetensors", "style.safetensors"]
    assert (
        folders.get_full_path("checkpoints", "x.safetensors") == tmp_path / "first/checkpoints/x.safetensors"
    )
    assert folders.get_folder_paths("checkpoints")[1] == base / "models/checkpoints"


def test_annotated_names_pick_the_folder_and_cannot_leave_it(base: Path) -> None:
    touch(base / "output/sub/result.png")
    assert folders.get_annotated_filepath("sub/result.png [output]") == base / "output/sub/result.png"
    assert folders.exists_annotated_filepath("sub/result.png [output]")
    assert not folders.exists_annotated_filepath("../output/sub/result.png")
    with pytest.raises(folders.PathEscapeError):
        folders.get_annotated_filepath("../../etc/passwd [input]")


def test_links_out_of_the_input_folder_are_refused(tmp_path: Path, base: Path) -> None:
    secret = touch(tmp_path / "secret.png")
    (base / "input").mkdir()
    (base / "input/innocent.png").symlink_to(secret)
    assert not folders.exists_annotated_filepath("innocent.png")
    with pytest.raises(folders.PathEscapeError):
        folders.get_annotated_filepath("innocent.png")


def test_save_path_numbers_after_the_highest_existing_file(base: Path) -> None:
    touch(base / "output/renders/cat_00007_.png")
    touch(base / "output/renders/cat_00002_.png")
    touch(base / "output/renders/dog_00009_.png")

    target = folders.get_save_image_path("renders/cat", folders.get_output_directory())

    assert (target.folder, target.filename, target.subfolder, target.counter) == (
        base / "output/renders",
        "cat",
        "renders",
        8,
    )


def test_save_path_fills_size_variables_and_creates_the_subfolder(base: Path) -> None:
    target = folders.get_save_image_path("%width%x%height%/img", folders.get_output_directory(), 640, 480)
    assert target.subfolder == "640x480"
    assert target.folder.is_dir()
    assert target.counter == 1


@pytest.mark.parametrize("prefix", ["../escaped", "/tmp/escaped", "a/../../escaped"])
def test_save_path_cannot_leave_the_output_folder(base: Path, prefix: str) -> None:
    with pytest.raises(folders.PathEscapeError):
        folders.get_save_image_path(prefix, folders.get_output_directory())
