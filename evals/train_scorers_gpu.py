"""Train the issue-13 cross-encoder scorers (MiniLM + LoRA + head) on real GPT-4 labels; reproduces the shipped
``curate/scorers/weights/quality_ce`` and ``complexity`` (the default complexity scorer) from ``../shared/data``.

    PYTHONPATH=. python3 evals/train_scorers_gpu.py --data ../shared/data --base MINILM_DIR --out OUT [--device cuda] \
        [--only quality --loso --loso-sources autoj,mtbench | --only complexity [--complexity-chains appended]]
    # CPU smoke test at tiny size:  ... --tiny --device cpu
    # the default complexity scorer: four runs, --only complexity --complexity-point-rank-weight 1 [--seed 1|2|3],
    # each made a scorer folder (python3 evals/ship_gpu_scorer.py OUT/complexity_ce_mixed_rank1[_seedN].safetensors
    # OUT/issue13_gpu_metrics.json complexity_ce_mixed_rank1[_seedN] --name complexity --judge complexity --dest DIRN),
    # then averaged: python3 evals/soup_complexity_scorers.py DIR0 DIR1 DIR2 DIR3 --rank 24 --dest curate/scorers/weights/complexity
    # (MINILM_DIR: the packaged MiniLM saved as fp16 with transformers, 45 MB: one device call carries it)

quality:    pointwise (MT-bench + Auto-J ratings, standardised per source) and pairwise (AlpacaEval preferences,
            Bradley-Terry with soft targets; MT-bench same-question pairs) losses mixed; length is an explicit
            covariate. Early stopping on the ``val`` groups; figures on the ``test`` groups (split by
            instruction / question id). Leave-one-source-out runs measure zero-shot agreement on a source never
            trained on (``--loso``).
complexity: FLASK levels (pointwise) + synthetic constraint chains (pairwise, training families only); test on
            FLASK test instructions and on chains of held-out families over held-out seeds. The default recipe,
            ``mixed`` (appended and rewritten chains, filler twins as ties), was chosen over ``appended`` on val
            (evals/compare_complexity_scorers.py). ``--complexity-point-rank-weight 1`` adds a Bradley-Terry loss
            over each FLASK batch's pairs of unequal levels: over seeds it raised the mean val criterion from
            0.800 (9 runs) to 0.806 (4 runs). The shipped default complexity scorer is the average (soup) of
            those four runs, cut to rank 24 (evals/soup_complexity_scorers.py). ``--complexity-pseudo`` (a
            teacher's scores of unlabelled pool instructions, ``--pool-texts``) was measured with the shipped soup
            as teacher: mean val criterion 0.801 over four seeds, against 0.806 without; not adopted.
Writes OUT/{quality_ce,complexity_ce[_rewritten|_mixed]}.safetensors (adapter + head + calibration) and
OUT/issue13_gpu_metrics.json. bf16 autocast is entered per step inside ``CE.train_net`` (see its docstring).
Imports only torch/transformers/peft/safetensors/numpy and curate files loaded by path (``--lm-head digits``
also imports curate, for the reader prompt).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "evals"))
import scorer_label_data as D  # noqa: E402

CE = D.curate_file("curate_crossencoder_by_path", "curate/scorers/crossencoder.py")
MAP = D.curate_file("curate_readermap_by_path", "curate/scorers/readermap.py")
CONS = D.constraints_module()  # the same module object D's chain sets are built with
QUALITY_MAX_LEN, COMPLEXITY_MAX_LEN = 256, 128


# -- metrics (numpy only) ------------------------------------------------------------------------------
def _rank(x):
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return (sums / counts)[inv]


def spearman(a, b) -> float:
    ra, rb = _rank(a), _rank(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    n1, n2 = (da != 0).sum(), (db != 0).sum()
    return float((da * db).sum() / math.sqrt(n1 * n2)) if n1 and n2 else float("nan")


def pair_acc(t, p) -> float:
    t, p = np.asarray(t, float), np.asarray(p, float)
    dt = np.sign(t[:, None] - t[None, :])
    dp = np.sign(p[:, None] - p[None, :])
    m = dt > 0
    return float(((dp[m] > 0) + 0.5 * (dp[m] == 0)).sum() / m.sum()) if m.sum() else float("nan")


def agreement(t, p) -> dict:
    return {"spearman": spearman(t, p), "kendall": kendall(t, p), "mae": float(np.mean(np.abs(np.asarray(t) - p))),
            "pairwise_accuracy": pair_acc(t, p), "n": int(len(t))}


def amp(device: str):
    """bfloat16 mixed precision on a GPU (entered per step inside ``CE.train_net``), none on the CPU."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else None


def to6(label10):
    return 1 + (np.asarray(label10, float) - 1) * 5 / 9


def point_report(rows, raw, cal, train_rows=None) -> dict:
    """Agreement of calibrated predictions (1-6) and of the length baselines (quantile-mapped to the labels)."""
    y = to6([r["label"] for r in rows])
    pred = MAP.apply_map(raw, *cal)
    out = {"scorer": agreement(y, pred)}
    ref = train_rows or rows
    ref_y = to6([r["label"] for r in ref])
    for name, key in (("response_length", "response"), ("instruction_length", "instruction")):
        ln = np.log1p([len(r[key]) for r in rows]) + 1e-6 * np.arange(len(rows))
        ref_ln = np.log1p([len(r[key]) for r in ref])
        m = MAP.quantile_map(ref_ln, ref_y)
        out[name] = agreement(y, MAP.apply_map(ln, *m))
    out["distribution"] = {"predicted_quantiles": np.quantile(pred, [0, .1, .25, .5, .75, .9, 1]).round(3).tolist(),
                           "label_quantiles": np.quantile(y, [0, .1, .25, .5, .75, .9, 1]).round(3).tolist(),
                           "predicted_mean_std": [float(pred.mean()), float(pred.std())],
                           "label_mean_std": [float(y.mean()), float(y.std())]}
    return out


def pair_report(pairs, s_a, s_b) -> dict:
    """Pairwise accuracy vs the judge's preference (ties left out), overall and on length-matched pairs."""
    p = np.array([q["p_b"] for q in pairs])
    keep = np.abs(p - 0.5) > 1e-6
    want = p > 0.5
    la = np.array([len(q["a"]) for q in pairs], float)
    lb = np.array([len(q["b"]) for q in pairs], float)
    matched = np.abs(np.log(lb / np.maximum(la, 1))) < math.log(1.25)
    res = {}
    for name, sel in (("all", keep), ("length_matched", keep & matched)):
        d = np.asarray(s_b) - np.asarray(s_a)
        res[name] = {"scorer": float(np.mean(((d > 0) == want)[sel] * (d[sel] != 0) + 0.5 * (d[sel] == 0))),
                     "response_length": float(np.mean(((lb > la) == want)[sel])), "n": int(sel.sum())}
    return res


# -- quality ---------------------------------------------------------------------------------------------
def quality_data(data: Path, tiny: bool):
    pairs = D.alpaca_pairs(data)
    singles = {s: D.single_scores(s, data) for s in ("mtbench", "autoj")}
    if tiny:
        rng = random.Random(0)
        pairs = rng.sample(pairs, 120)
        singles = {s: rng.sample(v, 80) for s, v in singles.items()}
    return pairs, singles


def zscore(rows):
    y = np.array([r["label"] for r in rows], float)
    return (y - y.mean()) / max(y.std(), 1e-6)


def same_question_pairs(rows, limit: int, seed: int):
    """Pairs of MT-bench answers to one question with different GPT-4 scores (the higher one wins)."""
    by = {}
    for r in rows:
        by.setdefault((r["group"], r["instruction"]), []).append(r)
    out = []
    for (_, ins), rs in by.items():
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                if rs[i]["label"] != rs[j]["label"]:
                    out.append((ins, rs[i]["response"], rs[j]["response"], float(rs[i]["label"] > rs[j]["label"])))
    random.Random(seed).shuffle(out)
    return out[:limit]


def digit_head(args, tok) -> dict:
    """``build_net``'s options for ``--lm-head digits``: the digit tokens and reader prompt exactly as
    ``SmallLMScorer(head="digits")`` builds them (this imports curate; the score head does not)."""
    if args.lm_head != "digits":
        return {}
    from curate.scorers.smalllm import SmallLMScorer

    return SmallLMScorer(head="digits", base=args.base)._head_options(tok)


def train_quality(args, pairs, singles, train_sources, device, log):
    """One quality run: train on the train split of ``train_sources``; returns (net, tok, info)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tok)
    net = CE.build_net(args.base, **digit_head(args, tok)).to(device)
    points, prs = [], []
    for s in ("mtbench", "autoj"):
        if s in train_sources:
            tr = [r for r in singles[s] if r["split"] == "train"]
            # the digits head learns the judge's scale (1-10 onto its 1-6 digits), the score head a ranking scale
            target = to6([r["label"] for r in tr]) if args.lm_head == "digits" else zscore(tr)
            points += [(r["instruction"], r["response"], float(z)) for r, z in zip(tr, target, strict=True)]
            if s == "mtbench":
                prs += same_question_pairs(tr, 3000 if not args.tiny else 20, 0)
    if "alpaca_eval" in train_sources:
        prs += [(q["instruction"], q["b"], q["a"], q["p_b"]) for q in pairs if q["split"] == "train"]
    # early stopping reads only the val groups of the sources trained on (a left-out source stays unseen)
    val_pairs = [q for q in pairs if q["split"] == "val"][: (40 if args.tiny else 800)] \
        if "alpaca_eval" in train_sources else []
    val_single = {s: [r for r in singles[s] if r["split"] == "val"] for s in singles if s in train_sources}

    def evaluate():
        parts = []
        if val_pairs:
            sa = CE.predict_net(net, tok, [q["instruction"] for q in val_pairs], [q["a"] for q in val_pairs],
                                max_length=QUALITY_MAX_LEN, batch_size=128, device=device)
            sb = CE.predict_net(net, tok, [q["instruction"] for q in val_pairs], [q["b"] for q in val_pairs],
                                max_length=QUALITY_MAX_LEN, batch_size=128, device=device)
            parts.append(2 * (pair_report(val_pairs, sa, sb)["all"]["scorer"] - 0.5))
        for _src, rows in val_single.items():
            if len(rows) > 3:
                raw = CE.predict_net(net, tok, [r["instruction"] for r in rows], [r["response"] for r in rows],
                                     max_length=QUALITY_MAX_LEN, batch_size=128, device=device)
                parts.append(spearman([r["label"] for r in rows], raw))
        return float(np.nanmean(parts))

    t0 = time.time()
    info = CE.train_net(net, tok, points=points, pairs=prs, max_length=QUALITY_MAX_LEN,
                        epochs=args.epochs if not args.tiny else 0.5, batch_size=32 if not args.tiny else 8,
                        lr=args.lr, device=device, evaluate=evaluate, amp_dtype=amp(device),
                        eval_every=max(20, int(len(prs) / 32 / 4)) if not args.tiny else 3, log=log)
    info.update({"seconds": time.time() - t0, "n_points": len(points), "n_pairs": len(prs)})
    return net, tok, info


def predict_rows(net, tok, rows, device, key="response"):
    return CE.predict_net(net, tok, [r["instruction"] for r in rows], [r[key] for r in rows],
                          max_length=QUALITY_MAX_LEN, batch_size=128, device=device)


def quality_reports(net, tok, pairs, singles, device, test_sources, split="test"):
    rep, raw_all = {}, {}
    cal_rows = [r for s in ("mtbench", "autoj") for r in singles[s] if r["split"] == "train"]
    cal_raw = predict_rows(net, tok, cal_rows, device)
    cal = MAP.quantile_map(cal_raw, to6([r["label"] for r in cal_rows]))
    for s in ("mtbench", "autoj"):
        if s in test_sources:
            rows = [r for r in singles[s] if split == "all" or r["split"] == split]
            raw = predict_rows(net, tok, rows, device)
            rep[s] = point_report(rows, raw, cal, [r for r in singles[s] if r["split"] == "train"] or rows)
            raw_all[s] = raw
    if "alpaca_eval" in test_sources:
        ps = [q for q in pairs if split == "all" or q["split"] == split]
        sa = CE.predict_net(net, tok, [q["instruction"] for q in ps], [q["a"] for q in ps], max_length=QUALITY_MAX_LEN,
                            batch_size=128, device=device)
        sb = CE.predict_net(net, tok, [q["instruction"] for q in ps], [q["b"] for q in ps], max_length=QUALITY_MAX_LEN,
                            batch_size=128, device=device)
        rep["alpaca_eval"] = pair_report(ps, sa, sb)
    return rep, cal


# -- complexity -------------------------------------------------------------------------------------------
def complexity_run(args, device, log, recipe: str = "appended"):
    """FLASK levels (pointwise) + constraint chains of the training families (pairwise). ``appended``: the
    append-only chains the former default complexity_ce learnt from (all short seeds of each split); ``rewritten``:
    the length-neutral chains, with filler-padded twins as ties (P = 0.5), from the same chain sets as
    evals/train_default_scorers.py. Both are tested on FLASK test instructions and on both held-out chain
    styles of ``D.complexity_chain_sets`` (the ridge's test chains), plus the filler-twin bias."""
    from transformers import AutoTokenizer

    flask = D.flask_levels(args.data)
    if args.tiny:
        flask = random.Random(0).sample(flask, 120)
    refit = args.complexity_refit_at is not None  # train + val, stopped at an earlier run's best step
    if refit and recipe != "mixed":
        raise SystemExit(f"--complexity-refit-at refits the mixed recipe (its val chains and twins join); "
                         f"not {recipe!r}")
    fit_splits = ("train", "val") if refit else ("train",)
    tr = [r for r in flask if r["split"] in fit_splits]
    sets = D.complexity_chain_sets(flask)
    if recipe == "rewritten":
        train_chains, val_chains = sets["rewritten"]["train"], sets["rewritten"]["val"]
        pairs = [(None, h, e, 1.0) for h, e in CONS.chain_pairs(train_chains)]
        pairs += [(None, padded, plain, 0.5) for padded, plain in sets["twins"]["train"]]
    elif recipe == "mixed":  # both styles of the training families, and the filler twins as ties
        train_chains = (CONS.constraint_chains(D.chain_seeds(flask, "train"), CONS.TRAIN_FAMILIES, seed=1)
                        + sets["rewritten"]["train"])
        val_chains = sets["appended"]["val"] + sets["rewritten"]["val"]
        twins = sets["twins"]["train"]
        if refit:  # the val seeds' chains (training families) and twins join
            train_chains, twins = train_chains + val_chains, twins + sets["twins"]["val"]
        pairs = [(None, h, e, 1.0) for h, e in CONS.chain_pairs(train_chains)]
        pairs += [(None, padded, plain, 0.5) for padded, plain in twins]
    else:
        train_chains = CONS.constraint_chains(D.chain_seeds(flask, "train"), CONS.TRAIN_FAMILIES, seed=1)
        val_chains = CONS.constraint_chains(D.chain_seeds(flask, "val"), CONS.TRAIN_FAMILIES, seed=2)
        pairs = [(None, h, e, 1.0) for h, e in CONS.chain_pairs(train_chains)]
    if args.tiny:  # a smoke test: a few steps and a small val set (all chains' pairs made ~135 steps of 45 evals)
        rng = random.Random(0)
        pairs, val_chains = rng.sample(pairs, min(len(pairs), 48)), val_chains[:8]
    points = [(r["instruction"], None, float(z)) for r, z in zip(tr, zscore(tr), strict=True)]
    n_pseudo = 0
    if args.complexity_pseudo is not None:  # a teacher's raw scores of pool instructions join the point stream
        texts = D.read_pool_texts(args.pool_texts)
        raw = np.load(args.complexity_pseudo)
        if len(raw) != len(texts):
            raise SystemExit(f"--complexity-pseudo has {len(raw)} scores for {len(texts)} --pool-texts")
        # standardised: over the pool; raw: as the teacher gave them, on the scale it learnt (FLASK train's z levels)
        z = raw if args.complexity_pseudo_scale == "raw" else (raw - raw.mean()) / max(float(raw.std()), 1e-6)
        pseudo = [(t, None, float(v)) for t, v in zip(texts, z, strict=True)]
        share = args.complexity_pseudo_share
        # FLASK rows are repeated so that they stay (1 - share) of the pointwise draws
        reps = max(1, round((1 - share) / share * len(pseudo) / len(points)))
        points, n_pseudo = points * reps + pseudo, len(pseudo)
    tok = AutoTokenizer.from_pretrained(args.tok)
    net = CE.build_net(args.base).to(device)
    val = [r for r in flask if r["split"] == "val"]

    def predict(texts):
        return CE.predict_net(net, tok, texts, None, max_length=COMPLEXITY_MAX_LEN, batch_size=256, device=device)

    def score_chains(chains):
        s = predict([t for c in chains for t in c])
        out, k = [], 0
        for c in chains:
            out.append(s[k:k + len(c)].tolist())
            k += len(c)
        return out

    def evaluate():
        raw = predict([r["instruction"] for r in val])
        return 0.5 * spearman([r["label"] for r in val], raw) + 0.5 * (2 * CONS.order_accuracy(val_chains, score_chains(val_chains)) - 1)

    t0 = time.time()
    info = CE.train_net(net, tok, points=points, pairs=pairs, max_length=COMPLEXITY_MAX_LEN,
                        epochs=args.complexity_epochs if not args.tiny else 0.5,
                        batch_size=32 if not args.tiny else 8, lr=args.lr, pair_weight=0.5, device=device,
                        evaluate=None if refit else evaluate,
                        eval_every=args.complexity_eval_every if not args.tiny else 5, log=log, amp_dtype=amp(device),
                        schedule_steps=args.complexity_schedule_steps, stop_at=args.complexity_refit_at,
                        seed=args.seed, point_rank_weight=args.complexity_point_rank_weight)
    info.update({"seconds": time.time() - t0, "recipe": recipe, "n_points": len(points), "n_pairs": len(pairs),
                 "n_pseudo_points": n_pseudo, "trained_on_splits": list(fit_splits)})
    def chain_report(ch):
        return {"scorer": CONS.order_accuracy(ch, score_chains(ch)),
                "instruction_length": CONS.order_accuracy(ch, [[len(t) for t in c] for c in ch]), "chains": len(ch)}

    cal = MAP.quantile_map(predict([r["instruction"] for r in tr]), D.flask_to6(tr))
    test = [r for r in flask if r["split"] == "test"]
    raw = predict([r["instruction"] for r in test])
    ln = np.log1p([len(r["instruction"]) for r in test])
    len_map = MAP.quantile_map(np.log1p([len(r["instruction"]) for r in tr]), D.flask_to6(tr))
    rep = {"flask_test": {"scorer": agreement(D.flask_to6(test), MAP.apply_map(raw, *cal)),
                          "instruction_length": agreement(D.flask_to6(test), MAP.apply_map(ln, *len_map))}}
    if recipe == "appended":  # the figure the former default complexity_ce was reported with
        rep["chains_heldout_families"] = chain_report(
            CONS.constraint_chains(D.chain_seeds(flask, "test"), CONS.EVAL_FAMILIES, seed=3))
    for style in ("appended", "rewritten"):
        rep[f"chains_{style}"] = chain_report(sets[style]["test"])
    # the val figures a recipe is chosen by (training families, val seeds): FLASK val and both chain styles
    # (after a refit the val groups were trained on: the figures are kept, under another name)
    rep["val_trained_on" if refit else "val"] = {"flask": spearman([r["label"] for r in val], predict([r["instruction"] for r in val])),
                  **{f"chains_{style}": CONS.order_accuracy(sets[style]["val"], score_chains(sets[style]["val"]))
                     for style in ("appended", "rewritten")}}
    tw = sets["twins"]["test"]
    d = predict([a for a, _ in tw]) - predict([b for _, b in tw])
    rep["filler_twins"] = {"scorer_padded_higher": float(np.mean(d > 0)), "n": len(tw)}
    if args.predict_pool:  # this run as a teacher: raw scores of the pool instructions, in --pool-texts order
        rep["pool_scores"] = predict(D.read_pool_texts(args.pool_texts))
    return net, cal, info, rep


def save_net(net, cal, path: Path, meta: dict) -> None:
    from safetensors.numpy import save_file

    tensors = CE.trainable_tensors(net)
    tensors["calibration.x"] = np.asarray(cal[0], np.float64)
    tensors["calibration.y"] = np.asarray(cal[1], np.float64)
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})


def cli(name: str, doc: str, argv=None, **defaults) -> None:
    """Parse the command line, then :func:`run`; ``name`` tags the outputs (``ce``: MiniLM, ``lm``: SmolLM2)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--base", required=True, help="the reader's Hugging Face folder (MiniLM, SmolLM2, or another causal LM: evals/gguf_to_hf.py)")
    ap.add_argument("--tok", help="its tokenizer folder (default: --base)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--lm-head", choices=("score", "digits"), default="score",
                    help="a causal LM's head (evals/train_smallm_gpu.py): the score head, or DEITA's expected digit over "
                         "prompts/quality_reader.md (quality runs only; outputs named quality_NAME_digits)")
    ap.add_argument("--loso", action="store_true", help="also leave-one-source-out quality runs")
    ap.add_argument("--budget-s", type=float, default=380.0, help="skip the optional runs past this many seconds")
    ap.add_argument("--only", choices=("all", "quality", "complexity", "loso"), default="all",
                    help="loso: only the leave-one-source-out quality runs of --loso-sources")
    ap.add_argument("--complexity-chains", choices=("appended", "rewritten", "mixed"), default="mixed",
                    help="mixed (the shipped default): appended + rewritten chains + filler ties; appended: the former "
                         "default; rewritten: length-neutral chains + filler ties")
    ap.add_argument("--complexity-epochs", type=float, default=3.0)
    ap.add_argument("--complexity-eval-every", type=int, default=40)
    ap.add_argument("--complexity-refit-at", type=int, help="refit on train + val groups, no early stopping: stop at "
                    "this step (an earlier run's best_step) of --complexity-schedule-steps (its steps)")
    ap.add_argument("--complexity-point-rank-weight", type=float, default=0.0,
                    help="also a Bradley-Terry loss over each FLASK batch's pairs of unequal levels, this weight")
    ap.add_argument("--seed", type=int, default=0, help="the complexity run's seed: batch draws and dropout (the LoRA init is built before it)")
    ap.add_argument("--complexity-schedule-steps", type=int, help="learning-rate schedule length (default: from "
                    "--complexity-epochs)")
    ap.add_argument("--pool-texts", type=Path, help="unlabelled pool instructions (evals/scorer_label_data.py "
                    "pool-texts): what --predict-pool scores and --complexity-pseudo labels")
    ap.add_argument("--predict-pool", action="store_true", help="after the complexity run, save its raw scores of "
                    "--pool-texts as OUT/KEY_pool.npy (a teacher for --complexity-pseudo)")
    ap.add_argument("--complexity-pseudo", type=Path, help="a teacher's OUT/KEY_pool.npy: its standardised scores of "
                    "--pool-texts join FLASK's pointwise labels")
    ap.add_argument("--complexity-pseudo-scale", choices=("standardised", "raw"), default="standardised",
                    help="the teacher's scores standardised over the pool, or raw (the scale it was fitted on)")
    ap.add_argument("--complexity-pseudo-share", type=float, default=0.5,
                    help="the pseudo-labels' share of the pointwise draws (FLASK rows are repeated to keep the rest)")
    ap.add_argument("--loso-sources", default="autoj,mtbench,alpaca_eval", help="sources to leave out, in order")
    ap.set_defaults(**defaults)
    args = ap.parse_args(argv)
    args.tok = args.tok or args.base
    if (args.predict_pool or args.complexity_pseudo is not None) and args.pool_texts is None:
        ap.error("--predict-pool and --complexity-pseudo need --pool-texts")
    if not 0 < args.complexity_pseudo_share < 1:
        ap.error("--complexity-pseudo-share is a share of the pointwise draws: above 0, below 1")
    if args.lm_head == "digits" and (name != "lm" or args.only not in ("quality", "loso")):
        ap.error("--lm-head digits: a causal LM's quality runs (evals/train_smallm_gpu.py --only quality|loso)")
    if args.complexity_pseudo_scale != "standardised" and args.complexity_pseudo is None:
        ap.error("--complexity-pseudo-scale sets how --complexity-pseudo's scores are read; give --complexity-pseudo")
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    logs: list[str] = []

    def log(msg):
        line = f"[{time.time() - t_start:6.1f}s] {msg}"
        print(line, flush=True)
        logs.append(line)

    metrics: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    name = name + ("_digits" if args.lm_head == "digits" else "")
    out_file = args.out / ("issue13_gpu_metrics.json" if name == "ce" else f"issue13_gpu_{name}_metrics.json")

    def dump():
        metrics["log"] = logs
        out_file.write_text(json.dumps(metrics, indent=1, default=float))

    run(args, log, metrics, dump, name)


def run(args, log, metrics: dict, dump, name: str = "ce") -> None:
    """The stages ``args.only`` picks: quality (all sources; test figures), complexity (``args.complexity_chains``),
    then, with ``args.loso``, leave-one-source-out quality runs while ``args.budget_s`` allows.
    Weights go to OUT/quality_{name}.safetensors and OUT/complexity_{name}[_rewritten].safetensors."""
    t_start = time.time()
    pairs, singles = quality_data(args.data, args.tiny)
    run_seconds = 0.0
    args.loso = args.loso or args.only == "loso"
    if args.only in ("all", "quality"):
        net, tok, info = train_quality(args, pairs, singles, {"alpaca_eval", "mtbench", "autoj"}, args.device, log)
        rep, cal = quality_reports(net, tok, pairs, singles, args.device, {"alpaca_eval", "mtbench", "autoj"})
        metrics[f"quality_{name}"] = {"train": info, "test": rep}
        save_net(net, cal, args.out / f"quality_{name}.safetensors", {"max_length": QUALITY_MAX_LEN, "best_step": info["best_step"]})
        log(f"quality done: {json.dumps(rep)[:600]}")
        dump()
        run_seconds = info["seconds"]
        del net
    if args.only in ("all", "complexity"):
        recipe = args.complexity_chains
        key = f"complexity_{name}" + ("" if recipe == "appended" else f"_{recipe}") + \
            ("_refit" if args.complexity_refit_at is not None else "") + \
            (f"_rank{args.complexity_point_rank_weight:g}" if args.complexity_point_rank_weight else "") + \
            ("_pseudo" if args.complexity_pseudo is not None else "") + \
            ("_raw" if args.complexity_pseudo is not None and args.complexity_pseudo_scale == "raw" else "") + \
            (f"_seed{args.seed}" if args.seed else "")
        cnet, ccal, cinfo, crep = complexity_run(args, args.device, log, recipe)
        if "pool_scores" in crep:
            np.save(args.out / f"{key}_pool.npy", np.asarray(crep.pop("pool_scores"), np.float32))
        metrics[key] = {"train": cinfo, "test": crep}
        save_net(cnet, ccal, args.out / f"{key}.safetensors", {"max_length": COMPLEXITY_MAX_LEN, "recipe": recipe,
                                                                "point_rank_weight": args.complexity_point_rank_weight})
        log(f"complexity done: {json.dumps(crep)[:600]}")
        dump()
        del cnet
    if args.loso:
        for held in args.loso_sources.split(","):
            if time.time() - t_start + run_seconds * 1.2 + 15 > args.budget_s:
                log(f"skipping leave-out-{held}: past the time budget")
                continue
            sources = {"alpaca_eval", "mtbench", "autoj"} - {held}
            lnet, ltok, linfo = train_quality(args, pairs, singles, sources, args.device, log)
            lrep, lcal = quality_reports(lnet, ltok, pairs, singles, args.device, {held}, split="all")
            metrics[f"quality_{name}_without_{held}"] = {"train": linfo, "zero_shot_all_rows": lrep}
            # a start for distilling the left-out source (evals/eval_distil_finetuned.py --init-weights)
            save_net(lnet, lcal, args.out / f"quality_{name}_without_{held}.safetensors",
                     {"max_length": QUALITY_MAX_LEN, "best_step": linfo["best_step"], "left_out": held})
            log(f"without {held}: {json.dumps(lrep)[:400]}")
            dump()
            run_seconds = max(run_seconds, linfo["seconds"])
            del lnet
    log("done")
    dump()


if __name__ == "__main__":
    cli("ce", __doc__)
