"""Scale-out engines for `curate run`: :mod:`.ray_engine` (Ray Data) reads shards, deduplicates, embeds
and scores on a cluster and lands the results in the workspace in its normal form; admission, export
and the report then run unchanged. Install with ``pip install 'curate[ray]'``; see evals/SCALING.md."""

from __future__ import annotations

from curate.scale.ray_engine import RayEngine

ENGINES = ("single", "ray")

__all__ = ["ENGINES", "RayEngine"]
