"""ONNX Runtime backends for the encoder: ``onnx`` (float32) and ``onnx-int8`` (dynamic int8 quantisation).

sentence-transformers' own ONNX backend needs ``optimum-onnx``, which pins transformers < 4.58, so curate
exports the model itself: the sentence-transformers folder's transformer is exported with
``torch.onnx.export`` (eager attention, dynamic batch and sequence axes), fused with onnxruntime's BERT
optimizer where it applies, and for ``onnx-int8`` quantised with ``onnxruntime.quantization.quantize_dynamic``
(int8 weights with per-channel scales, uint8 activations quantised per batch). The export runs offline, once per model, at first use
and is cached under ``$CURATE_HOME/onnx/<model>-<digest of its weights>/``. Pooling (mean or CLS, from the
folder's ``1_Pooling/config.json``), truncation (``max_seq_length``) and unit normalisation follow the
sentence-transformers model, so vectors agree with the torch backend (measured by ``evals/bench_embed.py``).
float32: texts are batched by token length under a padded-token budget (``TOKENS_PER_ROW``), which alone
makes the export 2x torch. int8: each text runs alone (one call per text, calls side by side on one thread
per core). Dynamic quantisation scales activations per call,
so in a batch a text's int8 vector depends on its batch-mates (measured: cosine 0.994 mean between two
batchings of the same texts); alone it is the same in every run and cache, it needs no padding, and it
is about as fast.

Needs the ``onnx`` extra: ``pip install 'curate[onnx]'`` (onnxruntime, onnx).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from filelock import FileLock

from curate.defaults import EMBED
from curate.embed.batching import token_budget_batches
from curate.hardware import import_torch
from curate.storage.files import folder_fingerprint

ONNX_BACKENDS = ("onnx", "onnx-int8")
OPSET = 17
TOKENS_PER_ROW = 32  # padded tokens per row of a batch: long texts are batched fewer at a time (measured: 32 -> 4.5x
# torch on 600 pool texts, 64 -> 4.2x, no limit -> 2.7x; float32 onnx with 64: 2.0x, cosine 1.000000)


def curate_home() -> Path:
    """Folder for curate's own caches: ``$CURATE_HOME`` or ``~/.cache/curate``."""
    return Path(os.environ.get("CURATE_HOME") or Path.home() / ".cache" / "curate")


def _require() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the onnx embedding backends need onnxruntime and onnx: pip install 'curate[onnx]'") from exc


def weights_digest(folder: Path) -> str:
    """A digest of the model folder's weight and config files (the export cache key)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        p = folder / name
        if p.is_file() and name.endswith((".safetensors", ".bin", ".json", ".txt")):
            h.update(name.encode())
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]


def _pooling(folder: Path) -> str:
    cfg_path = folder / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {"pooling_mode_mean_tokens": True}
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    if isinstance(cfg.get("pooling_mode"), str):  # newer sentence-transformers (6.x) save one mode by name
        modes = [cfg["pooling_mode"]]
    if modes in (["pooling_mode_mean_tokens"], ["mean"]):
        return "mean"
    if modes in (["pooling_mode_cls_token"], ["cls"]):
        return "cls"
    raise ValueError(f"the onnx backends support mean or CLS pooling, not {modes} ({folder}): use backend 'torch'")


def _max_seq_length(folder: Path) -> int | None:
    p = folder / "sentence_bert_config.json"
    return json.loads(p.read_text()).get("max_seq_length") if p.exists() else None


def _export_fp32(folder: Path, out: Path) -> None:
    """The transformer of the sentence-transformers folder as ONNX (last hidden state), float32."""
    torch = import_torch()
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager").eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tok.model_input_names]

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *inputs):
            return self.m(**dict(zip(names, inputs, strict=True))).last_hidden_state

    enc = tok(["an example sentence to trace", "short"], padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about data-dependent branches of the mask code
        args = (Hidden(model), tuple(enc[n] for n in names), str(out))
        kwargs = {"input_names": names, "output_names": ["last_hidden_state"], "dynamic_axes": axes,
                  "opset_version": OPSET}
        try:  # the TorchScript exporter: needs no onnxscript (torch >= 2.5 asks for it by dynamo=False)
            torch.onnx.export(*args, **kwargs, dynamo=False)
        except TypeError:  # torch < 2.5 has no ``dynamo`` argument and uses that exporter anyway
            torch.onnx.export(*args, **kwargs)


def _optimise(src: Path, out: Path, folder: Path) -> bool:
    """onnxruntime's BERT fusions (attention, layer norm, GELU) on CPU; False when they do not apply."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("model_type") not in ("bert", "roberta", "mpnet", "xlm-roberta", "distilbert"):
            return False
        opt = optimize_model(str(src), model_type="bert", num_heads=int(cfg["num_attention_heads"]),
                             hidden_size=int(cfg["hidden_size"]), opt_level=1, use_gpu=False)
        opt.save_model_to_file(str(out))
        return True
    except Exception:  # noqa: BLE001 - fusions are an optimisation only; the unfused graph is exact
        return False


def exported_model(folder: str | os.PathLike, backend: str, home: str | os.PathLike | None = None) -> Path:
    """The ONNX file of ``backend`` for the sentence-transformers ``folder``, exported at first use and cached
    under ``$CURATE_HOME/onnx/`` (a file lock keeps two processes from exporting at once)."""
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"onnx backend must be one of {ONNX_BACKENDS}, not {backend!r}")
    _require()
    folder = Path(folder)
    dest = Path(home or curate_home()) / "onnx" / f"{folder.name if folder.name != 'model' else folder.parent.name}-{weights_digest(folder)}"
    target = dest / ("model-int8.onnx" if backend == "onnx-int8" else "model.onnx")
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / ".export.lock")):
        if target.exists():
            return target
        tmp = dest / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            fp32 = dest / "model.onnx"
            if not fp32.exists():
                _export_fp32(folder, tmp / "raw.onnx")
                src = tmp / "fused.onnx" if _optimise(tmp / "raw.onnx", tmp / "fused.onnx", folder) else tmp / "raw.onnx"
                os.replace(src, fp32)
            if backend == "onnx-int8":
                import onnx
                from onnxruntime.quantization import QuantType, quantize_dynamic

                # fused ops (com.microsoft domain) escape shape inference: their outputs are float32
                # per-channel weight scales: cosine to float32 0.994 mean / 0.986 min on pool_30k texts, where
                # per-tensor scales gave 0.965 / 0.90 at the same speed (evals/bench_embed.py)
                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)  # its advice to pre-process applies to static quantisation
                try:
                    quantize_dynamic(str(fp32), str(tmp / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                finally:
                    root.setLevel(level)
                os.replace(tmp / "int8.onnx", target)
        finally:
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    return target


class OnnxEncoder:
    """Sentence embeddings from an exported ONNX transformer: tokenise (truncating to ``max_seq_length``),
    run, pool (mean over the attention mask, or CLS), normalise to unit rows."""

    def __init__(self, folder: str | os.PathLike, backend: str = "onnx-int8", threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        self.backend = backend
        self.path = exported_model(folder, backend)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.max_length = _max_seq_length(folder)
        self.pooling = _pooling(folder)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # int8 runs one text a call: calls run side by side on ``workers`` threads of one thread each
        self.workers = 1 if backend != "onnx-int8" else (threads or len(os.sched_getaffinity(0)))
        if backend == "onnx-int8":
            opts.intra_op_num_threads = 1
        elif threads:
            opts.intra_op_num_threads = threads
        # spinning worker threads cost much on a machine whose cores other processes also use
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int = EMBED.batch_size, tokens_per_row: int = TOKENS_PER_ROW
               ) -> np.ndarray:
        """Unit-normalised float32 rows, one per text. Texts are tokenised once and batched in token-length
        order, at most ``batch_size`` rows and ``batch_size * tokens_per_row`` padded tokens a batch (long
        texts go in smaller batches: far less padding than batches of a fixed row count); int8: one text
        a call (see the module docstring)."""
        out = np.empty((len(texts), self.dimension), np.float32)
        if not texts:
            return out
        enc = self.tokenizer(list(texts), truncation=self.max_length is not None, max_length=self.max_length)
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
        batches = token_budget_batches(lengths, max(1, batch_size) * tokens_per_row,
                                       1 if self.backend == "onnx-int8" else batch_size)

        def run(idx: np.ndarray) -> None:
            width = int(lengths[idx].max())
            feeds = {}
            for name in self.inputs:
                arr = np.full((len(idx), width), (self.tokenizer.pad_token_id or 0) if name == "input_ids" else 0,
                              np.int64)
                for r, i in enumerate(idx.tolist()):
                    seq = enc[name][i] if name in enc else [0] * lengths[i]
                    arr[r, :len(seq)] = seq
                feeds[name] = arr
            hidden = self.session.run(None, feeds)[0]
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = (np.arange(width)[None, :] < lengths[idx][:, None]).astype(np.float32)[..., None]
                vec = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[idx] = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)

        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers) as pool:  # session.run releases the GIL
                list(pool.map(run, batches))
        else:
            for idx in batches:
                run(idx)
        return out


def load_onnx(folder: str, backend: str, threads: int | None = None) -> OnnxEncoder:
    """One :class:`OnnxEncoder` per (folder, backend, threads) per process, and another once the folder's files
    change (weights saved again into it)."""
    return _load_onnx(folder, backend, threads, folder_fingerprint(Path(folder)))


@lru_cache(maxsize=4)
def _load_onnx(folder: str, backend: str, threads: int | None, contents: str) -> OnnxEncoder:
    return OnnxEncoder(folder, backend, threads)
