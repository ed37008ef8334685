"""A damaged model file in the models folder: the service starts, the endpoints naming the file answer
503 saying which file and what is wrong with it, and every other endpoint serves."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.diffusion.bad_weights import MALFORMED, write_malformed


def test_a_damaged_model_file_disables_only_the_endpoints_that_use_it(
    settings: Settings, test_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(test_models, models, copy_function=os.symlink)
    (models / "vae" / "ae.safetensors").unlink()
    write_malformed(models / "vae" / "ae.safetensors", "header is a list")
    # test_models=None: the start-up scan for real weights reads every header, the broken one too
    with (
        LiveServer(replace(settings, models_dir=models, test_models=None, open_access=True)) as server,
        server.client() as client,
    ):
        assert not server.service.test_weights, "the user's models folder is served, not test models"
        refused = client.post("/v1/flux-schnell", json={"prompt": "a fox", "width": 512, "height": 512})
        assert refused.status_code == 503
        message = refused.json()["error"]
        assert "ae.safetensors" in message and MALFORMED["header is a list"][1] in message
        listing = {entry["id"]: entry for entry in client.get("/v1/endpoints").json()["endpoints"]}
        assert (
            not listing["flux-dev"]["available"]
            and "ae.safetensors" in listing["flux-dev"]["unavailable_reason"]
        )
        served = client.post(
            "/v1/aura-flow", json={"prompt": "a fox", "steps": 1, "width": 512, "height": 512}
        )
        assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
        assert client.get("/ready").json()["ready"] is True
