"""What names a signal's cached log-probabilities across devices (GPU audit, 2026-12-07): in bfloat16 the device type
joins the name, since CUDA's and the CPU's bf16 kernels round differently and the cache was one for both; float32
stays shared. A CUDA engine cannot be built here (no GPU in CI): its name comes from the same function."""

from __future__ import annotations

from curate.signals import Engine
from curate.signals.engine import model_fingerprint
from curate.storage.files import folder_fingerprint
from tests.test_signals import smollm2_dir, tiny_model  # noqa: F401 (fixtures)


def test_bf16_values_of_a_gpu_are_named_apart_from_the_cpus_and_cpu_names_stay(tiny_model):  # noqa: F811
    """Before: `curate signal --dtype bfloat16` (or auto, bf16 on CUDA and on AMX CPUs) on a GPU wrote the values a
    later CPU run of the same workspace was answered from, as if it had computed them."""
    files = folder_fingerprint(tiny_model)
    cpu = Engine(tiny_model, device="cpu", dtype="bfloat16")
    assert cpu.fingerprint == f"{files}:bfloat16"  # every CPU cache so far keeps its name
    assert Engine(tiny_model, device="cpu").fingerprint == f"{files}:float32"
    assert model_fingerprint(files, "bfloat16", "cuda:1") == model_fingerprint(files, "bfloat16", "cuda") != cpu.fingerprint
    assert model_fingerprint(files, "float32", "cuda") == f"{files}:float32"  # the devices agree to float rounding
    assert model_fingerprint(files, "bfloat16", "cuda", "abc") == f"{files}:bfloat16@cuda+lora:abc"
