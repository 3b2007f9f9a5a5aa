"""Scale-out engines for `curate run`: :mod:`.ray_engine` (Ray Data) reads shards, deduplicates, embeds
and scores on a cluster and lands the results in the workspace in its normal form; admission, export
and the report then run unchanged. Install with ``pip install 'curate[ray]'``; see evals/SCALING.md."""

from __future__ import annotations

from typing import Any

from curate.errors import CurateError, OptionError

ENGINES = ("single", "ray")

__all__ = ["ENGINES", "RayEngine", "ray_plan"]


def __getattr__(name: str) -> Any:
    """``RayEngine``, imported when asked for: a Ray worker unpickling a task's function of this package (the read's
    ``sources.read_shards``) imported the engine and the workspace's storage with it, ~0.7 s of each new worker."""
    if name == "RayEngine":
        from curate.scale.ray_engine import RayEngine

        return RayEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ray_plan(run: Any, plan: list, address: str | None, *, dedup_name: str, near_dedup_name: str) -> list:
    """The single engine's ``plan`` of ``run`` (a ``curate.pipeline.Run``) with load, dedup, score and embed on
    Ray; what Ray cannot run is refused here, before Ray starts."""
    if not isinstance(run.source, str):  # the tasks read shards by path, on any node
        raise CurateError("engine='ray' (--engine ray) reads the pool from files: save it first (e.g. ds.to_parquet(PATH))")
    if run.embed_model is not None:  # the actors embed with the packaged model
        raise OptionError(f"embed_model {run.embed_model} (--embed-model) runs on the single engine, not on ray")
    reading = [step for step in run.scorers.values() if step.inputs]
    if reading:  # the actors compute a row's signals beside its scores, not before them
        raise CurateError(f"scorer {reading[0].column!r} reads the columns {', '.join(reading[0].inputs)}: a "
                          "scorer reading signal columns runs on the single engine")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CurateError("engine='ray' (--engine ray) needs Ray Data: pip install 'curate[ray]'") from None
    from curate.scale.ray_engine import RayEngine

    return RayEngine(address, dedup_name=dedup_name, near_dedup_name=near_dedup_name).plan(plan)
