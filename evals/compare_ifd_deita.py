"""IFD on pool_30k beside DEITA's selection: the share of IFD >= 1 per source, and what an IFD top-10%
selection looks like by source versus curate's default DEITA selection of the same pool.

    python evals/compare_ifd_deita.py IFD_JSON WORKSPACE

IFD_JSON: ``[[uid, source, ifd, loss_conditioned, loss_alone, failure_code], ...]`` under ``rows`` (written by
a run of ``curate.signals.IFD`` over every pool row; the H200 run that made the figures in the closing note
used SmolLM2-135M-Instruct, bf16). WORKSPACE: a ``curate run`` workspace of the same pool (its ``deita``
selection). Rows are matched by the pool's ``uid``. Prints a table and a ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ifd_json", type=Path)
    ap.add_argument("workspace", type=Path)
    a = ap.parse_args()
    rows = json.loads(a.ifd_json.read_text())["rows"]
    ws = Workspace.open(a.workspace)
    uid_of = dict(zip(ws.ids, ws.column("uid"), strict=True))
    deita = {uid_of[i] for i in ws.selection("deita").ids}
    source = {r[0]: r[1] for r in rows}
    scored = [(r[0], r[2]) for r in rows if r[2] is not None]
    by_source = Counter(source.values())
    high = Counter(source[u] for u, v in scored if v >= 1.0)
    below = sorted(((v, u) for u, v in scored if v < 1.0), reverse=True)
    k = len(rows) // 10
    top = {u for _, u in below[:k]}
    top_src, deita_src = Counter(source[u] for u in top), Counter(source[u] for u in deita)
    print(f"{len(rows):,} rows, {len(scored):,} with an IFD; IFD >= 1: {sum(high.values()):,} "
          f"({sum(high.values()) / len(scored):.1%}); IFD top-10% = {k:,} rows (IFD < 1); DEITA kept {len(deita):,}")
    print(f"{'source':28s} {'pool':>7s} {'IFD>=1':>8s} {'IFD top10%':>11s} {'DEITA':>7s}")
    for s, n in by_source.most_common():
        print(f"{s:28s} {n:7,d} {high[s] / n:8.1%} {top_src[s] / k:11.1%} {deita_src[s] / len(deita):7.1%}")
    overlap = len(top & deita)
    expected = k * len(deita) / len(rows)
    print(f"overlap of IFD top-10% and DEITA: {overlap:,} rows ({overlap / k:.1%} of the IFD set; "
          f"{expected:,.0f} expected by chance)")
    print(f"RESULT ifd_ge_1_share={sum(high.values()) / len(scored):.4f} overlap={overlap} "
          f"overlap_vs_chance={overlap / expected:.2f}")


if __name__ == "__main__":
    main()
