"""Token-level model signals on Ray actors: `curate run --engine ray --signal ifd`.

Each actor loads one causal LM (:class:`curate.scale.infer.SignalInference`) and runs the signal steps' own
``run`` on its batches; the driver stores the values, failures and side columns through ``ws.apply`` with
:class:`~curate.scale.infer.Precomputed`, so the columns are what ``ws.signal`` writes (same fingerprint and
provenance, plus the engine).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from curate.scale.infer import Precomputed, SignalInference


def signals_on_ray(engine: Any, run: Any, fallback: Callable[[Any], Any] | None) -> dict[str, Any]:
    """The token-level signals ``run.signals`` on the actor pool (one causal LM per actor), stored through
    ``ws.apply`` under the signal steps' own fingerprints and provenance."""
    if not engine._whole_pool:  # other sources in the workspace: the single-process step sees the whole pool
        return fallback(run)
    from curate.signals.steps import signal_steps
    from curate.storage.apply import rows_needing_work

    steps, ws = signal_steps(run.signals, run.signal_model), run.ws
    if not any(rows_needing_work(ws, s, ws.ids, s.fingerprint(), force=False, retry_failed=False) for s in steps):
        return {s.column: ws.apply(s) for s in steps}
    with engine._stage():
        ray = engine.connect()
        actors, options, threads, info = engine._actor_pool(ray)
        out = engine._data.map_batches(
            SignalInference, fn_constructor_kwargs={"kinds": list(run.signals), "model": run.signal_model,
                                                    "threads": threads},
            batch_size=engine.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors), **options)
        results: dict[str, dict[str, tuple[Any, list]]] = {s.column: {} for s in steps}
        extra: dict[str, dict[str, dict[str, Any]]] = {s.column: {} for s in steps}
        for batch in out.iter_batches(batch_format="numpy", batch_size=None):
            pos = np.searchsorted(engine._orders, batch["order"])
            for s in steps:
                c = s.column
                for p, v, f, e in zip(pos.tolist(), batch[f"{c}__values"], batch[f"{c}__failures"],
                                      batch[f"{c}__extra"], strict=True):
                    results[c][engine._ids[p]] = (json.loads(v), json.loads(f))
                    extra[c][engine._ids[p]] = json.loads(e)
            for pid, rss in zip(batch["pid"].tolist(), batch["rss_mb"].tolist(), strict=True):
                key = f"signals pid {pid}"
                engine.workers[key] = max(engine.workers.get(key, 0.0), float(rss))
    stats = {"engine": info}
    return {s.column: ws.apply(Precomputed(s, results[s.column], stats, extra[s.column])) for s in steps}
