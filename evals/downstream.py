"""The downstream proof (issue 15, item 7): does a curated subset of pool_30k train a better small model?

Selections of the same size (``DOWNSTREAM_SIZE`` rows, default 2,000) from pool_30k by random, DEITA (curate's
default selection: complexity x quality with the diversity filter, from a scored workspace), InsTag (tags
from evals/instag_pool.py on that workspace), IFD
(Cherry LLM: drop IFD >= 1, highest IFD first), LESS (curate.train.less, target = high-rated MT-bench answers
of other questions) and Dataset Cartography (ambiguous-first with a third easy rows; plus Data Diet EL2N from
the same run). Each trains the same model with the same settings (LoRA SFT, ``DOWNSTREAM_SEEDS`` seeds) and is
scored by its mean per-row response NLL on held-out high-quality reference answers: MT-bench turn-1 answers
GPT-4 rated 9-10 (question ids not divisible by 3) and Auto-J answers GPT-4 rated >= 7; pool rows whose instruction matches
any of these are removed from the candidates first. Lower is better.

Two modes:
  python3 evals/downstream.py prepare OUT_DIR   (here: reads ../shared/data, the scored pool_30k workspace
      and the H200 IFD run; writes small inputs: deita_uids.json, ifd.json.gz, refs.jsonl.gz)
  python3 evals/downstream.py run INPUT_DIR     (the training; CUDA when present). Sizes from env:
      DOWNSTREAM_POOL (jsonl[.gz] with uid/source/instruction/input/output), DOWNSTREAM_MODEL (HF folder;
      default the packaged SmolLM2-135M-Instruct), DOWNSTREAM_SIZE, DOWNSTREAM_SEEDS, DOWNSTREAM_EPOCHS,
      DOWNSTREAM_LR, DOWNSTREAM_RANK, DOWNSTREAM_BATCH, DOWNSTREAM_MAX_LENGTH, CARTO_CANDIDATES, CARTO_EPOCHS,
      LESS_CANDIDATES, LESS_EPOCHS, DOWNSTREAM_METHODS (a name outside these reads <name>_uids.json from
      INPUT_DIR: a selection made elsewhere, e.g. evals/mods_downstream.py), DOWNSTREAM_RUNS (method:seed,...), DOWNSTREAM_DEADLINE_S,
      DOWNSTREAM_WORK, OUT.
Results go to $OUT/downstream.json after every fine-tune (a timeout keeps what finished); the table and a
RESULT line are printed at the end. On the GPU machine, source evals/device_smollm2_setup.sh first; the
table across calls: evals/downstream_table.py (results in evals/results/issue15_downstream_h200/).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STARTED = time.time()
DATA = Path(os.environ.get("CURATE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ALL_METHODS = ("random", "deita", "instag", "ifd", "less", "cartography", "el2n")
INSTAG_NOTE = ("InsTag: no instag_uids.json among the inputs: tag the scored workspace first "
               "(evals/instag_pool.py WORKSPACE), then prepare again")


def env(name: str, default, cast=int):
    return cast(os.environ.get(name, default))


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def opener(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


# -- prepare (the dev box) -----------------------------------------------------------------------------
def prepare(out: Path, workspace: Path, ifd_json: Path) -> None:
    from curate.session import Workspace

    out.mkdir(parents=True, exist_ok=True)
    if workspace.exists():  # the scored pool (curate run): DEITA's selection, InsTag's if evals/instag_pool.py ran
        ws = Workspace.open(workspace)
        uid = dict(zip(ws.ids, ws.column("uid"), strict=True))
        for name in ("deita", "instag"):
            if name in ws.selections:
                how = {k: v for k, v in ws.selections[name].items() if k in ("params", "info")}
                (out / f"{name}_uids.json").write_text(json.dumps({"params": how.get("params"), "how": how,
                                                                   "uids": [uid[i] for i in ws.selection(name).ids]}))
    if ifd_json.exists():  # the GPU IFD run over the pool (a later run can reuse an ifd.json.gz already here)
        rows = json.load(open(ifd_json))["rows"]
        ifd = {r[0]: round(r[2], 6) for r in rows if r[2] is not None}
        with gzip.open(out / "ifd.json.gz", "wt") as fh:
            json.dump(ifd, fh)
    categories = {str(json.loads(line)["question_id"]): json.loads(line)["category"]
                  for line in open(DATA / "mt_bench_80_questions.jsonl")}
    refs = []
    for line in gzip.open(DATA / "mtbench_gpt4_single.jsonl.gz", "rt"):
        r = json.loads(line)
        if str(r["turn"]) == "1" and r["judge"] == "gpt-4" and float(r["label"]) in (9.0, 9.5, 10.0):
            role = "target" if int(r["question_id"]) % 3 == 0 else "eval"
            refs.append({"part": "mtbench", "role": role, "group": categories.get(str(r["question_id"]), "?"),
                         "instruction": r["instruction"], "response": r["response"]})
    for line in open(DATA / "autoj_960_gpt4_quality.jsonl"):
        r = json.loads(line)
        if float(r["gpt4_score"]) >= 7:
            refs.append({"part": "autoj", "role": "eval", "group": r["scenario"], "instruction": r["query"],
                         "response": r["response"]})
    with gzip.open(out / "refs.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in refs)
    print(f"prepared {out}: {sorted(p.name for p in out.iterdir())}, refs {len(refs)} "
          f"(eval {sum(r['role'] == 'eval' for r in refs)}, LESS target {sum(r['role'] == 'target' for r in refs)})")


# -- run (the GPU) -------------------------------------------------------------------------------------
def row(rid: str, instruction: str, response: str):
    from curate.rows import turns
    from curate.storage.step import RowInput

    conv = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    return RowInput(rid, conv, turns(conv))


def load_pool(path: Path) -> list[dict]:
    out = []
    for line in opener(path):
        r = json.loads(line)
        ins = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        if (r.get("output") or "").strip():
            out.append({"uid": r["uid"], "source": r["source"], "instruction": ins, "output": r["output"]})
    return out


class Runner:
    """Holds the settings, the pool, the references and the results; writes results after each fine-tune."""

    def __init__(self, inputs: Path):
        from curate.hardware import resolve_device
        from curate.signals.engine import default_model_dir

        self.inputs = inputs
        self.size = env("DOWNSTREAM_SIZE", 2000)
        self.seeds = list(range(env("DOWNSTREAM_SEEDS", 2)))
        self.deadline = env("DOWNSTREAM_DEADLINE_S", 510, float)
        self.methods = [m for m in os.environ.get("DOWNSTREAM_METHODS", ",".join(ALL_METHODS)).split(",") if m]
        # only these "method:seed" fine-tunes (default all): completes a table across calls without redoing runs
        self.runs = {r for r in os.environ.get("DOWNSTREAM_RUNS", "").split(",") if r}
        self.model = Path(os.environ.get("DOWNSTREAM_MODEL") or default_model_dir())
        self.device = resolve_device(os.environ.get("DOWNSTREAM_DEVICE") or None)
        self.work = Path(os.environ.get("DOWNSTREAM_WORK", "/tmp/downstream_work"))
        self.out = Path(os.environ.get("OUT", "/tmp/downstream_out"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_length = env("DOWNSTREAM_MAX_LENGTH", 1024)
        pool = load_pool(Path(os.environ.get("DOWNSTREAM_POOL", inputs / "pool.jsonl.gz")))
        refs = [json.loads(line) for line in opener(inputs / "refs.jsonl.gz")]
        held = {norm(r["instruction"]) for r in refs} | {norm(r["instruction"])[:80] for r in refs}
        self.pool = [p for p in pool if norm(p["instruction"]) not in held and norm(p["instruction"])[:80] not in held]
        self.by_uid = {p["uid"]: p for p in self.pool}
        self.eval_refs = [r for r in refs if r["role"] == "eval"]
        self.target = [r for r in refs if r["role"] == "target"]
        self.eval_rows = [row(f"ref{i}", r["instruction"], r["response"]) for i, r in enumerate(self.eval_refs)]
        self.selections: dict[str, list[str]] = {}
        self.notes: dict[str, str] = {}
        self.results: dict = {"settings": {}, "selections": {}, "losses": {}, "notes": self.notes, "timings": {}}
        self.results["settings"] = {
            "model": str(self.model), "device": self.device, "size": self.size, "seeds": self.seeds,
            "pool_rows": len(pool), "candidates": len(self.pool), "removed_as_held_out": len(pool) - len(self.pool),
            "eval_rows": len(self.eval_rows), "eval_parts": {p: sum(r["part"] == p for r in self.eval_refs)
                                                             for p in ("mtbench", "autoj")},
            "less_target_rows": len(self.target), "sft": self.sft_config(0).__dict__}
        self.sft_seconds: list[float] = []

    def left(self) -> float:
        return self.deadline - (time.time() - STARTED)

    def sft_config(self, seed: int):
        from curate.train.harness import TrainConfig

        return TrainConfig(epochs=env("DOWNSTREAM_EPOCHS", 2), learning_rate=env("DOWNSTREAM_LR", 3e-4, float),
                           batch_size=env("DOWNSTREAM_BATCH", 16), max_length=self.max_length,
                           lora_rank=env("DOWNSTREAM_RANK", 16), lora_alpha=2.0 * env("DOWNSTREAM_RANK", 16),
                           seed=seed, warmup_ratio=0.05, record=False)

    def rows_of(self, uids: list[str]) -> list:
        return [row(u, self.by_uid[u]["instruction"], self.by_uid[u]["output"]) for u in uids]

    def save(self) -> None:
        self.results["timings"]["elapsed_s"] = round(time.time() - STARTED, 1)
        (self.out / "downstream.json").write_text(json.dumps(self.results, indent=1))

    def log(self, msg: str) -> None:
        print(f"[{time.time() - STARTED:6.1f}s] {msg}", flush=True)

    # -- selections --------------------------------------------------------------------------------------
    def add_selection(self, name: str, uids: list[str], note: str) -> None:
        uids = uids[:self.size]
        if len(uids) < self.size:
            self.notes[name] = f"only {len(uids)} rows available; " + note
        from collections import Counter

        src = Counter(self.by_uid[u]["source"] for u in uids)
        self.selections[name] = uids
        self.results["selections"][name] = {"rows": len(uids), "how": note,
                                            "sources": {k: round(v / len(uids), 3) for k, v in src.most_common()}}
        (self.out / f"selection_{name}.json").write_text(json.dumps(uids))
        self.log(f"selection {name}: {len(uids)} rows; top sources {src.most_common(3)}")

    def precomputed(self) -> None:
        uids = sorted(self.by_uid)
        if "random" in self.methods:
            pick = np.random.default_rng(0).permutation(len(uids))[:self.size]
            self.add_selection("random", [uids[i] for i in sorted(pick)], "uniform without replacement, seed 0")
        if "deita" in self.methods:
            d = json.loads((self.inputs / "deita_uids.json").read_text())
            self.add_selection("deita", [u for u in d["uids"] if u in self.by_uid],
                               f"curate's DEITA selection of the scored pool (rank order), first {self.size}: "
                               f"{d.get('params')}")
        if "ifd" in self.methods:
            with gzip.open(self.inputs / "ifd.json.gz", "rt") as fh:
                ifd = {u: v for u, v in json.load(fh).items() if u in self.by_uid and v < 1.0}
            self.add_selection("ifd", sorted(ifd, key=lambda u: (-ifd[u], u)),
                               "Cherry LLM: IFD < 1, highest IFD first (SmolLM2-135M-Instruct IFD, H200 run)")
        if "instag" in self.methods:
            path = self.inputs / "instag_uids.json"
            if path.exists():
                d = json.loads(path.read_text())
                self.add_selection("instag", [u for u in d["uids"] if u in self.by_uid],
                                   f"InsTag complexity-first diverse sampling on predicted tags ({d.get('how')})")
            else:
                self.notes["instag"] = INSTAG_NOTE
        for m in self.other_methods():  # a selection made elsewhere (evals/mods_downstream.py): <name>_uids.json
            d = json.loads((self.inputs / f"{m}_uids.json").read_text())
            self.add_selection(m, [u for u in d["uids"] if u in self.by_uid], d.get("how", "made elsewhere"))

    def other_methods(self) -> list[str]:
        """Methods outside ALL_METHODS, each read from ``<name>_uids.json`` among the inputs."""
        return [m for m in self.methods if m not in ALL_METHODS]

    def candidates(self, n: int, seed: int = 0) -> list[str]:
        uids = sorted(self.by_uid)
        return [uids[i] for i in sorted(np.random.default_rng(1000 + seed).permutation(len(uids))[:n])]

    def cartography(self) -> None:
        from curate.defaults import TRAIN
        from curate.train.cartography import ambiguous_first, data_map, regions
        from curate.train.diet import diet_scores, prune_easiest
        from curate.train.harness import finetune

        cfg = self.sft_config(0).__class__(**{**self.sft_config(0).__dict__, "epochs": env("CARTO_EPOCHS", 3),
                                              "record": True})
        n = env("CARTO_CANDIDATES", 6000)
        if self.sft_seconds:  # fit the run into a share of the time left (rows x epochs scale the SFT runs' time)
            per_row_epoch = float(np.median(self.sft_seconds)) / (self.size * self.sft_config(0).epochs)
            fit = int(env("CARTO_TIME_SHARE", 0.3, float) * self.left() / (1.2 * per_row_epoch * cfg.epochs))
            if fit < n:
                self.notes["cartography_candidates"] = f"{fit} candidates instead of {n} (time left {self.left():.0f} s)"
                n = max(fit, self.size)
        cand = self.candidates(n)
        t = time.time()
        run = finetune(self.model, self.rows_of(cand), self.work / "cartography", cfg, device=self.device)
        rec = run.all_records()
        self.results["timings"]["cartography_train_s"] = round(time.time() - t, 1)
        self.results["timings"]["cartography_epochs"] = run.info["epoch_stats"]
        dm = data_map(rec["gold_prob"], rec["token_accuracy"])
        counts = {r: int((regions(dm["confidence"], dm["variability"]) == r).sum()) for r in ("easy", "ambiguous", "hard")}
        picked, why = ambiguous_first(dm["confidence"], dm["variability"], self.size, TRAIN.easy_share)
        if "cartography" in self.methods:
            self.add_selection("cartography", [run.ids[i] for i in picked],
                               f"ambiguous-first + {TRAIN.easy_share:.2f} easy, from {len(cand)} random candidates "
                               f"trained {cfg.epochs} epochs; regions {counts}")
        if "el2n" in self.methods:
            scores = diet_scores(rec, min(TRAIN.early_epoch, run.epochs_done))["el2n"]
            kept, _, _ = prune_easiest(scores, self.size)
            self.add_selection("el2n", [run.ids[i] for i in kept],
                               f"Data Diet EL2N at epoch {min(TRAIN.early_epoch, run.epochs_done)} of the same run, "
                               f"easiest pruned, from {len(cand)} random candidates")

    def less(self) -> None:
        try:
            from curate.train.less import LessConfig, select_less
        except ImportError as exc:
            self.notes["less"] = f"LESS not available here ({exc}); slot left empty"
            return
        cand = self.candidates(env("LESS_CANDIDATES", 4000))
        target = [row(f"t{i}", r["instruction"], r["response"]) for i, r in enumerate(self.target)]
        t = time.time()
        config = LessConfig(epochs=env("LESS_EPOCHS", 2), max_length=self.max_length)
        ids, _ = select_less(self.model, self.rows_of(cand), target, self.size, self.work / "less", config=config,
                             groups=[r["group"] for r in self.target], device=self.device)
        self.results["timings"]["less_s"] = round(time.time() - t, 1)
        self.add_selection("less", ids, f"LESS from {len(cand)} random candidates, target: {len(target)} MT-bench "
                           f"turn-1 answers rated 9-10 (question ids divisible by 3, disjoint from the eval), "
                           f"{config.epochs} warm-up epochs, projection {config.projection_dim}")

    # -- training and evaluation -------------------------------------------------------------------------
    def evaluate(self, model, tok) -> dict:
        from curate.train.losses import eval_loss

        per = eval_loss(model, tok, self.eval_rows, device=self.device, max_length=self.max_length)
        parts = {p: float(np.nanmean([v for v, r in zip(per, self.eval_refs, strict=True) if r["part"] == p]))
                 for p in ("mtbench", "autoj")}
        return {"loss": float(np.nanmean(per)), **parts}

    def base(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(self.model), dtype=torch.float32).to(self.device)
        self.results["losses"]["base (no fine-tune)"] = [self.evaluate(model, AutoTokenizer.from_pretrained(str(self.model)))]
        self.log(f"base model held-out loss {self.results['losses']['base (no fine-tune)'][0]}")
        self.save()

    def sft(self, method: str, seed: int) -> None:
        from curate.train.harness import finetune

        if self.runs and f"{method}:{seed}" not in self.runs:
            return
        est = np.median(self.sft_seconds) if self.sft_seconds else 0.0
        if est > self.left():
            self.notes[f"{method} seed {seed}"] = f"skipped: ~{est:.0f} s needed, {self.left():.0f} s left"
            self.log(self.notes[f"{method} seed {seed}"])
            return
        t = time.time()
        run = finetune(self.model, self.rows_of(self.selections[method]), self.work / f"sft-{method}-{seed}",
                       self.sft_config(seed), device=self.device)
        model, tok = run.load_model(device=self.device)
        got = {"seed": seed, **self.evaluate(model, tok), "train_loss_last_epoch": run.info["epoch_stats"][-1]["mean_loss"],
               "seconds": round(time.time() - t, 1)}
        self.sft_seconds.append(time.time() - t)
        self.results["losses"].setdefault(method, []).append(got)
        self.log(f"sft {method} seed {seed}: held-out loss {got['loss']:.4f} ({got['seconds']} s)")
        self.save()

    def table(self) -> str:
        losses = self.results["losses"]
        ref = [r["loss"] for r in losses.get("random", [])]
        lines = [f"{'selection':<22}{'rows':>6}{'seeds':>6}{'loss mean':>11}{'std':>8}{'min':>8}{'max':>8}"
                 f"{'vs random':>11}{'mtbench':>9}{'autoj':>8}"]
        for name, runs in losses.items():
            v = np.array([r["loss"] for r in runs])
            delta = f"{v.mean() - np.mean(ref):+.4f}" if ref and name != "random" else ""
            rows = self.results["selections"].get(name, {}).get("rows", "")
            lines.append(f"{name:<22}{rows!s:>6}{len(v):>6}{v.mean():>11.4f}{v.std(ddof=1) if len(v) > 1 else 0:>8.4f}"
                         f"{v.min():>8.4f}{v.max():>8.4f}{delta:>11}{np.mean([r['mtbench'] for r in runs]):>9.4f}"
                         f"{np.mean([r['autoj'] for r in runs]):>8.4f}")
        return "\n".join(lines)

    def main(self) -> None:
        """Most important first, so a deadline cuts the least: random and DEITA on every seed, then IFD,
        Cartography and EL2N, then LESS (its warm-up and gradient features cost the most)."""
        self.log(f"settings {json.dumps(self.results['settings'])}")
        self.base()
        self.precomputed()
        for seed in self.seeds[:2]:
            for m in ("random", "deita", *self.other_methods()):
                if m in self.selections:
                    self.sft(m, seed)
        if {"cartography", "el2n"} & set(self.methods):
            self.cartography()
        for seed in self.seeds[:2]:
            for m in ("instag", "ifd", "cartography", "el2n"):
                if m in self.selections:
                    self.sft(m, seed)
        if "less" in self.methods:
            if self.left() > env("LESS_MIN_S", 150, float):
                self.less()
                for seed in self.seeds[:2]:
                    if "less" in self.selections:
                        self.sft("less", seed)
            else:
                self.notes["less"] = f"skipped: {self.left():.0f} s left (LESS_MIN_S={os.environ.get('LESS_MIN_S', 150)})"
        for seed in self.seeds[2:]:
            for m in self.selections:
                self.sft(m, seed)
        self.finish()

    def finish(self, partial: bool = False) -> None:
        """Save, print the table, the notes and the RESULT line (also on SIGTERM: a timeout keeps the table)."""
        self.save()
        print(self.table())
        for k, v in self.notes.items():
            print(f"note {k}: {v}")
        losses = self.results["losses"]
        if "random" in losses:
            ref = np.mean([r["loss"] for r in losses["random"]])
            parts = [f"{m}_minus_random={np.mean([r['loss'] for r in losses[m]]) - ref:+.4f}"
                     for m in losses if m not in ("random", "base (no fine-tune)")]
            spread = np.std([r["loss"] for r in losses["random"]], ddof=1) if len(losses["random"]) > 1 else float("nan")
            print(f"RESULT downstream random_loss={ref:.4f} random_seed_std={spread:.4f} " + " ".join(parts)
                  + f" seeds={len(self.seeds)} size={self.size} elapsed_s={time.time() - STARTED:.0f}"
                  + (" partial=1" if partial else ""), flush=True)


def on_term(runner: Runner):
    def handler(signum, frame):
        runner.log("terminated: results so far")
        runner.finish(partial=True)
        os._exit(124)
    return handler


if __name__ == "__main__":
    if os.environ.get("DOWNSTREAM_BLOCK_IMPORTS"):  # a dev-box rehearsal of the GPU machine's missing packages
        for name in ("datasets", "ray", "hnswlib", "vllm"):
            sys.modules[name] = None  # type: ignore[assignment]
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), Path(os.environ.get("DOWNSTREAM_WORKSPACE", "/work/runs/new30k/workspace")),
                Path(os.environ.get("DOWNSTREAM_IFD_JSON", "/work/.device/3/ifd_pool30k.json")))
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a dozen model loads would fill the log's tail
        hf_logging.set_verbosity_error()
        import signal

        runner = Runner(Path(sys.argv[2]))
        signal.signal(signal.SIGTERM, on_term(runner))
        runner.main()
    else:
        sys.exit(__doc__)
