"""Embedding backends (issue 16): ONNX Runtime float32 and int8 exports of the packaged MiniLM, cached per
backend; the torch backend's cache file and vectors are unchanged."""

import os

import numpy as np
import pytest

from curate.embed import encode, encode_cached
from curate.embed.cache import cache_folder, cache_id
from curate.embed.encoder import BACKENDS, resolve_backend

TEXTS = ["How do I bake sourdough bread at home?", "Explain the rules of tennis scoring.",
         "Write a Python function that reverses a linked list.", "short", "",
         "A much longer text about the history of the Roman empire, its emperors, its provinces and its fall " * 6]


def test_backend_is_resolved_from_the_argument_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv("CURATE_EMBED_BACKEND", raising=False)
    assert resolve_backend(None) == "torch" and set(BACKENDS) == {"torch", "onnx", "onnx-int8"}
    monkeypatch.setenv("CURATE_EMBED_BACKEND", "onnx-int8")
    assert resolve_backend(None, "cpu") == "onnx-int8"  # the embedding step follows the environment ...
    assert resolve_backend(None, "cpu", env=False) == "torch"  # ... encode() does not (trained scorers' vectors)
    assert resolve_backend(None, "cuda") == "torch"  # onnx runs on the CPU: the default falls back there
    assert resolve_backend("onnx", None) == "onnx"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("onnx-int8", "cuda")
    with pytest.raises(ValueError, match="one of"):
        resolve_backend("tensorrt")


def test_cache_key_includes_the_backend_and_torch_keeps_its_name(tmp_path):
    assert cache_id(None) == cache_id(None, "torch") == "all-MiniLM-L6-v2"
    assert cache_id(None, "onnx-int8") == "all-MiniLM-L6-v2@onnx-int8"
    files = {b: cache_folder(tmp_path, None, b) for b in BACKENDS}
    assert len(set(files.values())) == 3
    assert files["torch"] == cache_folder(tmp_path, None)  # the name caches had before backends existed


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    old = os.environ.get("CURATE_HOME")
    os.environ["CURATE_HOME"] = str(tmp_path_factory.mktemp("curate_home"))
    yield os.environ["CURATE_HOME"]
    if old is None:
        os.environ.pop("CURATE_HOME")
    else:
        os.environ["CURATE_HOME"] = old


def test_onnx_backends_agree_with_torch_and_export_once(home, tmp_path):
    ref = encode(TEXTS, backend="torch", device="cpu")
    fp32 = encode(TEXTS, backend="onnx")
    int8 = encode(TEXTS, backend="onnx-int8")
    for v in (fp32, int8):
        assert v.shape == ref.shape and v.dtype == np.float32
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert (fp32 * ref).sum(1).min() > 0.99999  # the same network: float rounding only
    assert (int8 * ref).sum(1).min() > 0.97  # int8 weights and activations: close, not equal
    from curate.embed.encoder import default_model_path
    from curate.embed.onnx import exported_model

    path = exported_model(default_model_path(), "onnx-int8")
    assert str(path).startswith(home) and path.name == "model-int8.onnx"
    mtime = path.stat().st_mtime_ns
    assert exported_model(default_model_path(), "onnx-int8").stat().st_mtime_ns == mtime  # cached: not exported again
    # the embedding cache keeps backends apart
    _, n_int8, f_int8 = encode_cached(TEXTS, tmp_path, backend="onnx-int8")
    _, n_torch, f_torch = encode_cached(TEXTS, tmp_path, backend="torch", device="cpu")
    assert n_int8 == n_torch == len(set(TEXTS)) and f_int8 != f_torch
    again, n_again, _ = encode_cached(TEXTS[::-1], tmp_path, backend="onnx-int8")
    assert n_again == 0 and np.allclose(again[::-1], int8, atol=1e-6)


def test_an_onnx_encoder_follows_a_folder_whose_weights_were_saved_again(home, tiny_base, tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = tmp_path / "st"

    def save(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        body = Transformer(tiny_base)
        for p in body.parameters():
            p.data.normal_(0, 0.05)
        st = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension()), Normalize()], device="cpu")
        st.save(str(folder))
        return st.encode(TEXTS[:3], convert_to_numpy=True)

    first_torch = save(1)
    first = encode(TEXTS[:3], model=str(folder), backend="onnx")
    second_torch = save(2)  # the same folder, other weights
    second = encode(TEXTS[:3], model=str(folder), backend="onnx")
    assert (first * first_torch).sum(1).min() > 0.9999 and (second * second_torch).sum(1).min() > 0.9999
    assert (first * second).sum(1).max() < 0.999  # not the first weights' encoder, remembered by path
