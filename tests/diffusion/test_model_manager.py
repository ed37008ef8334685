from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.diffusion.model_manager import ModelKey, ModelManager, OutOfMemoryError, module_bytes
from engine.diffusion.safetensors_file import RANDOM_TEST_WEIGHTS_METADATA

MB = 2**20


def weights_file(path: Path, metadata: dict[str, str] | None = None) -> Path:
    save_file({"w": torch.zeros(4)}, path, metadata=metadata)
    return path


def one_megabyte_module() -> torch.nn.Module:
    return torch.nn.Linear(512, 512, bias=False)  # 512 * 512 * 4 bytes


class Builds:
    """A build function that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> torch.nn.Module:
        self.count += 1
        return one_megabyte_module()


def test_a_model_is_built_once_and_shared_by_every_caller(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    key = ModelKey.for_file(weights_file(tmp_path / "m.safetensors"), "diffusion_model")
    build = Builds()

    first = manager.load(key, build)
    second = manager.load(ModelKey.for_file(tmp_path / "m.safetensors", "diffusion_model"), build)

    assert first is second
    assert build.count == 1
    assert not first.training and not any(p.requires_grad for p in first.parameters())


def test_a_replaced_file_or_other_options_load_a_new_model(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    path = weights_file(tmp_path / "m.safetensors")
    build = Builds()
    before = manager.load(ModelKey.for_file(path, "diffusion_model"), build)
    fp8 = manager.load(ModelKey.for_file(path, "diffusion_model", weight_dtype="fp8_e4m3fn"), build)
    save_file({"w": torch.ones(8)}, path)
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    after = manager.load(ModelKey.for_file(path, "diffusion_model"), build)

    assert len({id(before), id(fp8), id(after)}) == 3
    assert build.count == 3


def test_least_recently_used_models_are_evicted_to_fit_the_budget(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=int(2.5 * MB))
    keys = [ModelKey.for_file(weights_file(tmp_path / f"{name}.safetensors"), "vae") for name in "abc"]
    builds = {key: Builds() for key in keys}
    a, b, c = keys

    manager.load(a, builds[a])
    manager.load(b, builds[b])
    manager.load(a, builds[a])  # a is now the most recently used
    manager.load(c, builds[c])

    assert manager.resident() == [a, c]
    assert manager.used_bytes <= manager.budget_bytes
    manager.load(b, builds[b])
    assert builds[b].count == 2
    assert builds[a].count == 1


def test_two_threads_asking_for_the_same_model_build_it_once(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    key = ModelKey.for_file(weights_file(tmp_path / "m.safetensors"), "diffusion_model")

    def slow_build() -> torch.nn.Module:
        time.sleep(0.2)
        return one_megabyte_module()

    results: list[torch.nn.Module] = []
    threads = [
        threading.Thread(target=lambda: results.append(manager.load(key, slow_build))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results[0] is results[1]


def test_running_out_of_memory_frees_every_model_and_fails_only_that_run(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    resident = ModelKey.for_file(weights_file(tmp_path / "a.safetensors"), "diffusion_model")
    manager.load(resident, Builds())

    with (
        pytest.raises(OutOfMemoryError, match="every model was unloaded"),
        manager.out_of_memory_guard("sampling"),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    assert manager.resident() == []
    build = Builds()
    reloaded = manager.load(resident, build)
    assert manager.load(resident, build) is reloaded and build.count == 1, "resident again, and kept"


def test_out_of_memory_while_loading_is_reported_the_same_way(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    key = ModelKey.for_file(weights_file(tmp_path / "a.safetensors"), "diffusion_model")

    def build() -> torch.nn.Module:
        raise RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes"
        )

    with pytest.raises(OutOfMemoryError):
        manager.load(key, build)
    builds = Builds()
    loaded = manager.load(key, builds)
    assert manager.load(key, builds) is loaded and builds.count == 1, "the next load succeeds and stays"


def test_other_errors_pass_through_untouched(tmp_path: Path) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    manager.load(ModelKey.for_file(weights_file(tmp_path / "a.safetensors"), "vae"), Builds())
    with pytest.raises(ValueError, match="shape"), manager.out_of_memory_guard("decoding"):
        raise ValueError("bad shape")
    assert len(manager.resident()) == 1


def test_loading_random_test_weights_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=10 * MB)
    real = ModelKey.for_file(weights_file(tmp_path / "real.safetensors"), "vae")
    fake = ModelKey.for_file(weights_file(tmp_path / "fake.safetensors", RANDOM_TEST_WEIGHTS_METADATA), "vae")

    with caplog.at_level(logging.WARNING, logger="engine.diffusion.model_manager"):
        manager.load(real, Builds())
        manager.load(fake, Builds())

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "fake.safetensors" in warnings[0] and "random test weights" in warnings[0]


def test_module_size_counts_parameters_in_their_dtype() -> None:
    assert module_bytes(one_megabyte_module()) == MB
    assert module_bytes(one_megabyte_module().to(torch.bfloat16)) == MB // 2
