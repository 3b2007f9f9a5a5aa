"""What a selector fitted, in words, from its selection's provenance: Instruction Mining's rule (R², the coefficient
of each indicator, how many fine-tuned subsets it was fitted on), for `curate select`'s summary and the notebook's
selection view alike."""

from __future__ import annotations

from typing import Any


def fitted_rule_lines(provenance: dict[str, Any]) -> list[str]:
    """The lines that say the rule a selection was ranked by ([] for a selector that fits none)."""
    if provenance.get("method") != "mining" or "r2" not in provenance:
        return []
    subsets = provenance.get("subsets")  # recorded since; an older selection's count is in the mining artifact
    on = f" fitted on {subsets:,} fine-tuned subsets" if subsets is not None else ""
    betas = ", ".join(f"{name} {beta:+.4f}" for name, beta in (provenance.get("coefficients") or {}).items())
    return [f"Instruction Mining rule{on}: R² {provenance['r2']:.3f} (adjusted {provenance['adjusted_r2']:.3f})",
            f"  log eval loss per indicator std (β; a negative one ranks rows with more of it first): {betas}"]
