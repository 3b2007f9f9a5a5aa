"""Trained scorers: train-scorer, distil (`curate score --scorer` applies one: cli/judge.py)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from curate.cli.common import (
    app,
    console,
)
from curate.defaults import DISTIL, SCORER, TRAIN_SCORER

METRIC_HEADS = ("spearman", "kendall", "MAE", "pairwise acc")
METRIC_KEYS = ("spearman", "kendall", "mae", "pairwise_accuracy")  # a figure not computed: a dash and a line why


def evaluation_table(ev, title: str = "agreement with the judge", scale: str | None = None) -> Table:
    """A scorer's K-fold and held-out agreement beside the length and random baselines; ``scale`` (e.g. ``1-10``):
    the judge's scale the MAE is on, said under the table (the column written is on DEITA's 1-6)."""
    from curate.scorers.metrics import figure

    table = Table(title=title, caption=f"MAE on the judge's {scale} scale (the column written is on DEITA's 1-6)"
                  if scale else None)
    for head in ("predictor", "split", *METRIC_HEADS, "n"):  # at 80 columns names wrap at a space; figures never
        table.add_column(head, justify="left" if head in ("predictor", "split") else "right",
                         no_wrap=head not in ("predictor", "split"))
    for who, split, m in ev.rows():
        table.add_row(who.replace("_", " "), split, *(figure(m[k]) for k in METRIC_KEYS), f"{m['n']:,}")
    return table


def settings_choice_line(choice: dict, on: str) -> str:
    """The head settings a K-fold search (:func:`curate.scorers.evaluation.choose_settings`) chose on ``on`` (the
    rows it searched), of how many candidates, and when no fold or few folds gave the figure it chose by."""
    picked = ", ".join(f"{name} {value:g}" for name, value in choice["chosen"].items())
    by = "Spearman and chain order" if "criterion" in choice["candidates"][0] else "Spearman"
    return (f"head settings chosen by {choice['k']}-fold {by} on {on}: {picked} (of {len(choice['candidates'])} "
            "candidates)" + (f"; {choice['undecided']}" if "undecided" in choice else "")
            + (f"; {choice['few_folds']}" if "few_folds" in choice else ""))


def _print_training(result, out: Path, console: Console) -> None:
    data, ev = result.data, result.evaluation
    groups = len(set(data.groups))
    pair_only = len(data) - data.labelled
    scale = data.scale.text() if data.scale is not None else None
    console.print(evaluation_table(ev, f"scorer {result.scorer.column!r} from {data.source}: "
                                       f"{data.labelled:,} labels" + (f" and {pair_only:,} chain versions without one"
                                                                      if pair_only else "")
                                       + f" ({groups:,} groups), reads {', '.join(data.reads)}", scale))
    if data.scale is not None:
        outside = data.skipped.get(data.scale.outside_reason(), 0)
        how = {"given": "given with --label-scale", "declared": "as the judge's provenance declares it",
               "inferred": "inferred: the smallest standard judge scale holding nearly all the labels; "
                           "--label-scale LO,HI to say another",
               "span": "the labels' span: continuous scores on no standard judge scale; --label-scale LO,HI to say "
                       "the scale"}[data.scale.how]
        console.print(f"judge's scale: {data.scale.text()} ({how}); {outside:,} labels outside it left out; the "
                      f"column maps it onto DEITA's 1-6")
    for line in ev.missing_figure_lines():
        console.print(line)
    if result.how_trained():
        console.print(result.how_trained())
    if data.skipped:
        left = data.skipped_text()
        console.print(f"left out: {left}")
    if ev.extra.get("holdout_without_label_spread"):
        console.print("no held-out figure: the training part holds one label value, so no head could be fitted on it")
    choice = ev.extra.get("chosen_by_kfold")
    if choice:
        console.print(settings_choice_line(choice, "the training part"))
    spread = [f"{who} {m['spearman']:.3f} ({m['spearman_ci95'][0]:.2f}..{m['spearman_ci95'][1]:.2f})"
              for who, m in ev.holdout.items()  # where either is missing, missing_figure_lines said why
              if "spearman_ci95" in m and all(math.isfinite(v) for v in (m["spearman"], *m["spearman_ci95"]))]
    if spread:
        console.print(f"held-out Spearman with its 95% bootstrap interval (groups resampled): {', '.join(spread)}")
    within = [f"{who} {m['pairwise_within_group']:.3f}" for who, m in ev.holdout.items() if "pairwise_within_group" in m]
    if within:
        n = ev.holdout["scorer"]["pairs_within_group"]
        console.print(f"held-out pairwise accuracy within one group ({n:,} pairs of answers to one instruction, "
                      f"as labelled preference pairs measure): {', '.join(within)}")
    if "chain_order" in ev.holdout.get("scorer", {}):
        console.print(f"held-out chain order ({ev.holdout['scorer']['chain_pairs']:,} pairs of versions of one Evol "
                      f"chain, ordered by construction): scorer {ev.holdout['scorer']['chain_order']:.3f}, length "
                      f"{ev.holdout['length']['chain_order']:.3f}")
    if ev.calibration:
        bins = ", ".join(f"{c['mean_predicted']:.2f}->{c['mean_label']:.2f}" for c in ev.calibration)
        on = f" on the judge's {scale} scale" if scale else ""
        console.print(f"held-out calibration{on} (mean predicted -> mean label, by prediction decile): {bins}")
    console.print(f"saved scorer to {result.scorer.save(out)}")


FEATURE_COLUMN_HELP = ("a numeric column read as one more feature, per turn (repeat it), e.g. the token signals of "
                       "`curate signal`: ifd, ifd_loss_conditioned, ifd_loss_alone. Scoring then needs the column: a "
                       "turn without a number fails.")


@app.command("train-scorer")
def train_scorer(
    workspace: Path = typer.Argument(..., help="Workspace directory holding the labels."),
    target: str | None = typer.Option(None, "--target", help="Judge column to imitate (every scored turn is a label): "
                                      "a judge's column, or a numeric field of the pool file (labels that came "
                                      "with the data; rows without one are not labels)."),
    labels: str | None = typer.Option(None, "--labels", help="Label set to learn from, e.g. evol_complexity "
                                      "(see `curate evol`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the scorer in (scorer.json + its weights), replaced whole: a new folder, "
                                    "an empty one or an earlier scorer's."),
    name: str | None = typer.Option(None, "--column", "--name", help="Column the scorer writes (default: the label "
                                    "set's name, or TARGET_scorer); --name, its earlier name, still works."),
    head: str | None = typer.Option(None, help="ridge kind: ridge (regression, default) or ordinal (expected label of "
                                    "a multinomial head). small-lm: score (a linear head on the last token, default) "
                                    "or digits (DEITA's scorer: the LM answers prompts/quality_reader.md or "
                                    "complexity_reader.md and scores its expected digit)."),
    inputs: str | None = typer.Option(None, help="Comma-separated texts to read: instruction[,response]. Default: "
                                      "what the labels carry (a label set with responses, or a column whose "
                                      "provenance says it read the response), else the instruction."),
    folds: int = typer.Option(TRAIN_SCORER.folds, "--folds", "-k", help="K for K-fold agreement on the training part."),
    holdout: float = typer.Option(TRAIN_SCORER.holdout, help="Share of groups held out (split before any fitting)."),
    group_by: str | None = typer.Option(None, "--group-by", help="--target: a column (e.g. a question id of the "
                                        "pool file) that keeps rows together in every split. Default: the row's "
                                        "first instruction."),
    seed: int = typer.Option(TRAIN_SCORER.seed, min=0, help="Seed for the splits."),
    kind: str = typer.Option(TRAIN_SCORER.kind, help="ridge (linear head on MiniLM features; seconds), cross-encoder "
                             "(MiniLM + LoRA fine-tuned on the labels; minutes on a CPU) or small-lm (DEITA's style: "
                             "SmolLM2-135M + LoRA + a score or digits head, see --head; best on a GPU, see --device)."),
    init: str | None = typer.Option(None, help="cross-encoder, small-lm: start from this saved or shipped adapter "
                                    "(e.g. quality_ce, complexity_ridge)."),
    epochs: float | None = typer.Option(None, help="cross-encoder, small-lm: passes over the training labels "
                                        f"(default: {SCORER.finetune_epochs:g})."),
    base: str | None = typer.Option(None, "--base", help="cross-encoder, small-lm: the base model folder (Hugging Face "
                                    "layout; default: the packaged MiniLM / SmolLM2), e.g. Gemma 3 270M converted by "
                                    "evals/gguf_to_hf.py."),
    device: str | None = typer.Option(None, "--device", help="cross-encoder, small-lm: where to train and score: "
                                      "cpu (default), cuda, cuda:1, or auto (CUDA when torch sees one)."),
    features: str | None = typer.Option(None, help="ridge: comma-separated features (embeddings, product, length, "
                                        "stats); e.g. length,stats reads no MiniLM at all (evals/eval_distil.py)."),
    embed_inputs: str | None = typer.Option(None, "--embed-inputs", help="ridge: which texts get a MiniLM embedding "
                                            "(default: every text read; 'none' for none)."),
    feature_columns: list[str] | None = typer.Option(None, "--feature-column", help="ridge: " + FEATURE_COLUMN_HELP),
    label_scale: str | None = typer.Option(None, "--label-scale", help="The judge's scale as LO,HI, e.g. 1,10: "
                                           "labels outside it are left out and counted, never clipped. Default: the "
                                           "scale the judge's provenance declares, else the smallest standard judge "
                                           "scale (0-1, 1-5, 1-6, 1-7, 1-10, 0-10, 1-100, 0-100) holding 99% of the "
                                           "labels (a continuous score on none: its span); labels that look like two "
                                           "scales mixed are refused. The column maps it onto DEITA's 1-6."),
    chain_pairs: bool = typer.Option(False, "--chain-pairs", help="--labels of `curate evol --kind complexity`: the "
                                     "scorer (ridge or cross-encoder) also learns the order each chain has by "
                                     "construction (every in-depth rewrite asks for more than the versions before "
                                     "it; sets the rank judge failed on count too); held-out chains are scored as "
                                     "chain_order beside length. With --target as well: labels from the column (e.g. "
                                     "difficulty levels), only the order from the chains. Needs a rewriter that "
                                     "follows the operations (not the packaged SmolLM2: evals/eval_local_evol_loop.py)."),
) -> None:
    """Train a small scorer on a judge column or a label set; print K-fold and held-out agreement beside baselines.
    The scorer writes its own column (default: the label set's name or TARGET_scorer), never the judge's."""
    from curate.scorers import train_scorer as train
    from curate.scorers.saved import check_scorer_folder
    from curate.session import Workspace
    from curate.storage.outputs import check_outside_workspace

    if (target is None) == (labels is None) and not (target and labels and chain_pairs):
        raise typer.BadParameter("give exactly one of --target COLUMN and --labels NAME (both with --chain-pairs)")
    ws = Workspace.open(workspace)
    check_outside_workspace(ws, out, "a scorer")  # before any fitting
    check_scorer_folder(out)
    result = train(ws, target=target, labels=labels, reads=inputs.split(",") if inputs else None, head=head,
                   name=name, k=folds, holdout=holdout, seed=seed, kind=kind, init=init, epochs=epochs,
                   features=features.split(",") if features else None, group_by=group_by,
                   columns=feature_columns or (), chain_pairs=chain_pairs, base=base, device=device, progress=True,
                   label_scale=label_scale,
                   embed_inputs=None if embed_inputs is None else [] if embed_inputs == "none" else embed_inputs.split(","))
    _print_training(result, out, console)


@app.command("distil")
def distil_command(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    label_column: str = typer.Option(..., "--target", "--label-column", help="Existing judge column used as the "
                                     "labeller, as train-scorer's --target (the loop reads only the rows it asks for, "
                                     "and counts them); --label-column, its earlier name, still works."),
    n: int = typer.Option(DISTIL.n, "--initial-labels", "-n", help="Random rows labelled before the first fit."),
    rounds: int = typer.Option(DISTIL.rounds, help="Rounds of labelling the least-certain rows."),
    uncertain_k: int = typer.Option(DISTIL.uncertain_k, "--uncertain-k", help="Rows labelled per round (largest bootstrap disagreement)."),
    holdout_n: int = typer.Option(DISTIL.holdout_n, "--holdout-n", help="Random labelled rows kept out of training, for agreement."),
    column: str | None = typer.Option(None, help="Column for the scorer's predictions (default LABEL_distilled)."),
    inputs: str | None = typer.Option(None, help="Comma-separated texts to read: instruction[,response] (default: "
                                      "what the column's provenance says it read, else the instruction)."),
    group_by: str | None = typer.Option(None, "--group-by", help="A column (e.g. a question id of the pool file) "
                                        "whose rows stay together: a held-out row's group is never asked about. "
                                        "Default: the row's first instruction."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also save the distilled scorer here."),
    feature_columns: list[str] | None = typer.Option(None, "--feature-column", help=FEATURE_COLUMN_HELP[0].upper()
                                                     + FEATURE_COLUMN_HELP[1:]),
) -> None:
    """Distil a judge column into a small scorer; report labels spent and held-out agreement."""
    from curate.errors import TooFewLabelsError
    from curate.scorers import column_labeller, distil
    from curate.scorers.distil import TooFewRowsToDistil
    from curate.scorers.metrics import figure
    from curate.scorers.saved import check_scorer_folder
    from curate.session import Workspace
    from curate.storage.outputs import check_outside_workspace

    ws = Workspace.open(workspace)
    if out:
        check_outside_workspace(ws, out, "a scorer")  # before any fitting
        check_scorer_folder(out)
    try:  # the API's scorer, reads and settings search: the same labels give the same column as distil(...)
        report = distil(ws, column_labeller(ws, label_column), n=n, rounds=rounds, uncertain_k=uncertain_k,
                        holdout_n=holdout_n, column=column, inputs=inputs.split(",") if inputs else None,
                        columns=feature_columns or (), group_by=group_by)
    except TooFewRowsToDistil as exc:  # the same counts, with this command's options
        raise TooFewLabelsError(exc.line("-n", "--holdout-n", f"curate train-scorer {workspace} --target {label_column} "
                                   "--out DIR")) from None
    table = Table(title=f"distilling {label_column!r} into {report.column!r}: {report.labels_spent:,} of "
                        f"{report.rows_total:,} rows labelled ({report.fraction_spent:.1%})")
    for head in ("round", "labels fit", "labels paid", "spearman", "length", "kendall", "MAE", "pairwise acc"):
        table.add_column(head, no_wrap=not head.startswith("labels"))  # those two wrap at a space
    for r in report.rounds:
        table.add_row(str(r["round"]), f"{r['labelled']:,}", f"{r['spent']:,}", figure(r.get("spearman")),
                      figure(r.get("length", {}).get("spearman")), *(figure(r.get(k)) for k in METRIC_KEYS[1:]))
    console.print(table)
    for line in report.missing_figure_lines():
        console.print(line)
    if report.turns_left_out:
        console.print(f"turns the scorer cannot read (never asked about; scoring gives them a failure): "
                      f"{report.left_out_text()}")
    for round_no, choice in report.settings_chosen.items():
        console.print(f"round {round_no}: {settings_choice_line(choice, 'its labelled rows')}")
    console.print(f"agreement on {report.holdout.get('n', 0):,} held-out labels; length: the Spearman of the length "
                  f"baseline ({report.scorer.metrics['length_baseline_reads']} length, fitted on the same labels)")
    if out:
        console.print(f"saved scorer to {report.scorer.save(out)}")

