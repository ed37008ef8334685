"""Where models, inputs and outputs live: ComfyUI's folder layout, so existing folders work unchanged.

One process-wide `FolderSettings` (set once at start-up by `configure`) says where each model folder
(`checkpoints`, `diffusion_models`, ...) looks, in order, and where the input, output and temp folders
are. The functions below carry ComfyUI's `folder_paths` names so custom nodes written against it work.

Every name that reaches this module may come from a client (a graph, an upload, a `/view` request), so
each lookup refuses a name that would leave its folder; model folders may hold symbolic links to files
elsewhere (a common way to share weights), the input, output and temp folders may not.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
"""What ComfyUI lists in a model folder; pickle formats are listed but refused when loaded."""

_MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "checkpoints": (("checkpoints",), MODEL_EXTENSIONS),
    "diffusion_models": (("unet", "diffusion_models"), MODEL_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), MODEL_EXTENSIONS),
    "vae": (("vae",), MODEL_EXTENSIONS),
    "loras": (("loras",), MODEL_EXTENSIONS),
    "embeddings": (("embeddings",), MODEL_EXTENSIONS),
    "upscale_models": (("upscale_models",), MODEL_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), MODEL_EXTENSIONS),
    "clip_vision": (("clip_vision",), MODEL_EXTENSIONS),
    "style_models": (("style_models",), MODEL_EXTENSIONS),
    "configs": (("configs",), (".yaml",)),
}
"""Folder name -> (its sub-folders of the models directory, in search order; the file extensions it lists)."""

LEGACY_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}
"""Older names that graphs, custom nodes and extra_model_paths.yaml files still use."""

USER_DIRECTORY_TYPES = ("input", "output", "temp")


class PathEscapeError(ValueError):
    """A file name that would leave the folder it was looked up in."""


class UnknownFolderError(ValueError):
    """A model folder name that is not configured."""


class MissingFileError(FileNotFoundError):
    """A named file that is in none of its folder's search paths."""


@dataclass(frozen=True)
class FolderSettings:
    models_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    model_paths: Mapping[str, tuple[Path, ...]]
    """Folder name -> the directories it searches, first match wins."""
    extensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Folder name -> the extensions it lists; a folder missing here lists every file."""


_lock = threading.Lock()
_settings: FolderSettings | None = None


def configure(
    *,
    base_dir: str | Path | None = None,
    models_dir: str | Path | None = None,
    input_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    temp_dir: str | Path | None = None,
    extra_model_paths: Iterable[str | Path] = (),
) -> FolderSettings:
    """Set the process-wide folders (start-up, or a test fixture) and return them.

    Unset directories default to `models/`, `input/`, `output/` and `temp/` under `base_dir` (the current
    directory by default), as in a ComfyUI install. Each `extra_model_paths` YAML file adds search paths.
    """
    base = Path(base_dir or Path.cwd()).expanduser().resolve()
    models = _directory(models_dir, base / "models")
    paths: dict[str, list[Path]] = {
        name: [models / sub for sub in subfolders] for name, (subfolders, _) in _MODEL_FOLDERS.items()
    }
    extensions = {name: exts for name, (_, exts) in _MODEL_FOLDERS.items()}
    for yaml_path in extra_model_paths:
        for folder, path, is_default in read_extra_model_paths(yaml_path):
            roots = paths.setdefault(folder, [])
            if is_default:
                roots.insert(0, path)
            else:
                roots.append(path)
    settings = FolderSettings(
        models_dir=models,
        input_dir=_directory(input_dir, base / "input"),
        output_dir=_directory(output_dir, base / "output"),
        temp_dir=_directory(temp_dir, base / "temp"),
        model_paths={name: tuple(roots) for name, roots in paths.items()},
        extensions=extensions,
    )
    use(settings)
    return settings


def use(settings: FolderSettings) -> None:
    """Install settings made earlier (a test restores the previous ones this way)."""
    global _settings
    with _lock:
        _settings = settings


def current() -> FolderSettings:
    """The process-wide settings; ComfyUI's defaults under the current directory until `configure` runs."""
    with _lock:
        settings = _settings
    return settings if settings is not None else configure()


def _directory(value: str | Path | None, default: Path) -> Path:
    return Path(value).expanduser().resolve() if value is not None else default


def read_extra_model_paths(yaml_path: str | Path) -> list[tuple[str, Path, bool]]:
    """(folder, directory, is_default) for each search path an extra_model_paths.yaml adds.

    Each top-level section may set `base_path` (relative paths are relative to the YAML file) and
    `is_default` (its paths are searched before the built-in ones), and maps folder names to one
    directory or several separated by newlines.
    """
    yaml_path = Path(yaml_path).expanduser().resolve()
    with yaml_path.open(encoding="utf-8") as stream:
        config = yaml.safe_load(stream) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{yaml_path}: expected sections mapping folder names to paths")
    found: list[tuple[str, Path, bool]] = []
    for section_name, section in config.items():
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ValueError(f"{yaml_path}: section '{section_name}' must map folder names to paths")
        section = dict(section)
        base = section.pop("base_path", None)
        base_path = yaml_path.parent / _expand(str(base)) if base else None
        is_default = bool(section.pop("is_default", False))
        for folder, value in section.items():
            if not isinstance(value, str):
                raise ValueError(
                    f"{yaml_path}: '{section_name}.{folder}' must be a path or newline-separated paths"
                )
            for line in value.splitlines():
                if not line.strip():
                    continue
                root = base_path if base_path is not None else yaml_path.parent
                found.append(
                    (LEGACY_NAMES.get(folder, folder), (root / _expand(line.strip())).resolve(), is_default)
                )
    return found


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def canonical_folder(folder: str) -> str:
    """The folder's current name (`unet` -> `diffusion_models`), refusing one that is not configured."""
    name = LEGACY_NAMES.get(folder, folder)
    if name not in current().model_paths:
        known = ", ".join(sorted(current().model_paths))
        raise UnknownFolderError(f"unknown model folder '{folder}' (known: {known})")
    return name


def get_folder_paths(folder: str) -> list[Path]:
    return list(current().model_paths[canonical_folder(folder)])


def get_filename_list(folder: str) -> list[str]:
    """Every model file in the folder's search paths: relative, '/'-separated, sorted, without duplicates."""
    name = canonical_folder(folder)
    extensions = current().extensions.get(name)
    found: set[str] = set()
    for root in current().model_paths[name]:
        for relative in _walk_files(root):
            if extensions is None or relative.suffix.lower() in extensions:
                found.add(relative.as_posix())
    return sorted(found)


def _walk_files(root: Path) -> Iterable[PurePosixPath]:
    """Files below root, following directory links once each (so a loop ends), skipping hidden ones."""
    if not root.is_dir():
        return
    seen: set[Path] = set()
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        real = Path(directory).resolve()
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        relative_dir = PurePosixPath(Path(directory).relative_to(root).as_posix())
        for filename in files:
            if not filename.startswith("."):
                yield relative_dir / filename


def get_full_path(folder: str, filename: str) -> Path:
    """The file `filename` (as get_filename_list names it) in the first search path of `folder` with it."""
    name = canonical_folder(folder)
    relative = relative_name(filename)
    roots = current().model_paths[name]
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(root) for root in roots)
    raise MissingFileError(f"{filename} was not found in the '{name}' model folder (searched {searched})")


def relative_name(name: str) -> Path:
    """A client-supplied file name as a relative path that cannot leave the folder it is joined to.

    Both separators count (a Windows client sends backslashes); absolute paths (a leading '\\' is one
    on Windows), drive letters, '..' segments and NUL bytes are refused.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise PathEscapeError(f"invalid file name {name!r}")
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts or not parts:
        raise PathEscapeError(f"file name {name!r} would leave its folder")
    return Path(*parts)


def resolve_in(directory: Path, name: str) -> Path:
    """directory/name for a client-supplied name, also refusing a link in the directory that points out."""
    path = directory / relative_name(name)
    root = directory.resolve()
    if not path.resolve().is_relative_to(root):
        raise PathEscapeError(f"file name {name!r} leads outside its folder")
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, so that a reader sees the old
    file or the new one, never half of one, and a link at `path` is replaced rather than written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def get_input_directory() -> Path:
    return current().input_dir


def get_output_directory() -> Path:
    return current().output_dir


def get_temp_directory() -> Path:
    return current().temp_dir


def get_directory_by_type(type_name: str) -> Path | None:
    """The input, output or temp directory by the name clients use in `/view` and uploads; None otherwise."""
    return {
        "input": get_input_directory,
        "output": get_output_directory,
        "temp": get_temp_directory,
    }.get(type_name, lambda: None)()


def annotated_filepath(name: str) -> tuple[str, Path | None]:
    """Split ComfyUI's 'file.png [output]' form into the name and the directory its annotation names."""
    for type_name in USER_DIRECTORY_TYPES:
        suffix = f" [{type_name}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], get_directory_by_type(type_name)
    return name, None


def get_annotated_filepath(name: str, default_dir: Path | None = None) -> Path:
    """Where a LoadImage-style name points: its annotated directory, else `default_dir`, else input."""
    name, directory = annotated_filepath(name)
    return resolve_in(directory or default_dir or get_input_directory(), name)


def exists_annotated_filepath(name: str) -> bool:
    try:
        return get_annotated_filepath(name).is_file()
    except PathEscapeError:
        return False


@dataclass(frozen=True)
class SavePath:
    """Where the next files of one save go: `{filename}_{counter:05}_.{ext}` in `folder`."""

    folder: Path
    filename: str
    counter: int
    subfolder: str
    """The '/'-separated folder below the output directory, as clients see it."""


def get_save_image_path(
    filename_prefix: str, output_dir: Path, image_width: int = 0, image_height: int = 0
) -> SavePath:
    """Resolve a SaveImage `filename_prefix` ('sub/dir/name', with %width% / %date% style variables).

    The counter continues after the highest one already used for this prefix, as ComfyUI numbers files.
    """
    prefix = _substitute_variables(filename_prefix, image_width, image_height)
    relative = relative_name(prefix) if prefix else Path()
    filename = relative.name
    subfolder = relative.parent.as_posix() if relative.parent != Path() else ""
    folder = resolve_in(output_dir, subfolder) if subfolder else output_dir
    folder.mkdir(parents=True, exist_ok=True)
    return SavePath(folder, filename, _next_counter(folder, filename), subfolder)


def _substitute_variables(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}",
        "day": f"{now.tm_mday:02}",
        "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}",
        "second": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def _next_counter(folder: Path, filename: str) -> int:
    """1 + the highest N among files named '{filename}_{N}_...' in folder (case-insensitively), else 1."""
    highest = 0
    stem = f"{filename}_".lower()
    for existing in os.listdir(folder):
        lowered = existing.lower()
        if not lowered.startswith(stem):
            continue
        digits = lowered[len(stem) :].split("_", 1)
        if len(digits) == 2 and digits[0].isdigit():
            highest = max(highest, int(digits[0]))
    return highest + 1
