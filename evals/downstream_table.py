"""One downstream table from several ``evals/downstream.py run`` calls (issue 15, item 7).

The GPU machine's 10-minute calls each finish part of the table; every call writes a ``downstream.json``.
This reads those files (in name order), groups fine-tunes by selection *and* how it was made (a Cartography
run from 3,000 candidates is another selection than one from 6,000), keeps the last result per seed, and
prints the table, each selection's mean minus random's with both seed spreads, and a RESULT line.

    python3 evals/downstream_table.py evals/results/issue15_downstream_h200
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def collect(folder: Path) -> tuple[dict, dict]:
    """{(method, how): {seed: result}} and {(method, how): selection info}, later files winning per seed."""
    runs: dict[tuple[str, str], dict] = {}
    info: dict[tuple[str, str], dict] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        for method, results in data["losses"].items():
            sel = data["selections"].get(method, {})
            how = sel.get("how", "")
            if method == "el2n" and "cartography" in data["selections"]:  # EL2N comes from Cartography's run
                how += " | " + data["selections"]["cartography"]["how"]
            key = (method, how + json.dumps(sel.get("sources", {})))  # the source mix tells two selections apart
            info.setdefault(key, {**sel, "how": how, "first_file": path.stem})
            for r in results:
                runs.setdefault(key, {})[r.get("seed")] = {**r, "file": path.name}
    return runs, info


def label(method: str, key: tuple[str, str], methods: dict[str, list[str]], info: dict) -> str:
    """The method's name; where one method has several selections, with its candidate count or first file."""
    if len(methods.get(method, [])) < 2:
        return method
    hows = [info[(method, k)]["how"] for k in methods[method]]
    how = info[key]["how"]
    cand = how.split(" from ")[1].split(" ")[0] if " from " in how else None
    if cand and len({h.split(" from ")[1].split(" ")[0] for h in hows if " from " in h}) == len(hows):
        return f"{method} ({cand} cand.)"
    return f"{method} [{info[key]['first_file']}]"


def main(folder: Path) -> None:
    runs, info = collect(folder)
    methods: dict[str, list[str]] = {}
    for m, how in runs:
        methods.setdefault(m, []).append(how)
    random_key = next(k for k in runs if k[0] == "random")
    ref = np.array([r["loss"] for r in runs[random_key].values()])
    print(f"{'selection':<38}{'seeds':>6}{'loss mean':>11}{'std':>8}{'vs random':>11}{'mtbench':>9}{'autoj':>8}  top sources")
    parts = []
    order = sorted(runs, key=lambda k: (k[0] != "base (no fine-tune)", k[0] != "random", np.mean([r["loss"] for r in runs[k].values()])))
    for key in order:
        v = np.array([r["loss"] for r in runs[key].values()])
        name = label(key[0], key, methods, info)
        std = v.std(ddof=1) if len(v) > 1 else float("nan")
        delta = v.mean() - ref.mean()
        src = info[key].get("sources", {})
        top = ", ".join(f"{s} {share:.0%}" for s, share in list(src.items())[:3])
        print(f"{name:<38}{len(v):>6}{v.mean():>11.4f}{std:>8.4f}{delta if key != random_key else 0:>+11.4f}"
              f"{np.mean([r['mtbench'] for r in runs[key].values()]):>9.4f}"
              f"{np.mean([r['autoj'] for r in runs[key].values()]):>8.4f}  {top}")
        if key[0] not in ("random", "base (no fine-tune)"):
            tag = "".join(c if c.isalnum() else "_" for c in name).strip("_")
            parts.append(f"{'_'.join(filter(None, tag.split('_')))}={delta:+.4f}")
    print(f"RESULT downstream_table random_loss={ref.mean():.4f} random_seed_std={ref.std(ddof=1):.4f} " + " ".join(parts))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "evals/results/issue15_downstream_h200"))
