"""Serving real weights when models/ has them, and tiny random test models when it has none.

A fresh checkout has no weights (they cannot be downloaded here, and are tens of GB elsewhere), yet
the service should start and answer every endpoint. So when no model folder holds a real weights file,
tiny random checkpoints in the real layouts are written once to data/test-models/ and served from
there, loudly: the log says so at start and every response carries a header saying the images are
noise. The user's own models/ folder is never written to.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine import folders
from engine.diffusion.safetensors_file import WeightsFileError, read_header
from engine.diffusion.test_models import write_test_models
from engine.settings import Settings

log = logging.getLogger(__name__)

WEIGHT_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae")
COMPLETE_MARKER = ".complete"


def has_real_weights() -> bool:
    """Whether a model folder holds a file other than the engine's own test weights. A file that cannot
    be read (damaged, a pickle) counts: it is the user's, so models/ is served and the endpoints naming it
    say what is wrong with it, where test models would hide it behind noise."""
    for folder in WEIGHT_FOLDERS:
        for name in folders.get_filename_list(folder):
            try:
                if not read_header(folders.get_full_path(folder, name)).holds_random_test_weights:
                    return True
            except WeightsFileError:
                return True
    return False


def _configure(settings: Settings, models_dir: Path | None) -> None:
    folders.configure(
        base_dir=settings.base_dir,
        models_dir=models_dir,
        output_dir=settings.output_dir,
        extra_model_paths=settings.extra_model_paths,
    )


def prepare_models(settings: Settings) -> bool:
    """Point the model folders at real weights or at the test models; True when serving test weights."""
    _configure(settings, settings.models_dir)
    use_test_models = settings.test_models if settings.test_models is not None else not has_real_weights()
    if not use_test_models:
        return False
    test_dir = settings.data_path / "test-models"
    if not (test_dir / COMPLETE_MARKER).exists():
        write_test_models(test_dir)
        (test_dir / COMPLETE_MARKER).touch()
    _configure(settings, test_dir)
    log.warning(
        "NO REAL WEIGHTS FOUND: serving tiny random test models from %s. Every image is noise. "
        "Put real weights in %s (ComfyUI's folder layout) and restart.",
        test_dir,
        settings.models_dir or settings.base_dir / "models",
    )
    return True
