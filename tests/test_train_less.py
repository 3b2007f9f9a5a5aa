"""LESS: per-row LoRA gradient features (exact, cached, resumable), and target-like rows ranked first."""

import dataclasses
import json

import numpy as np
import pytest

from curate.train.gradfeatures import FeatureStore, Projector, gradient_features, head_nll, lora_linears
from curate.train.less import LessConfig, checkpoint_weights, less_scores, select_less, warmup
from tests.train_fixtures import conversation, learnable_rows, row_inputs, tiny_lm  # noqa: F401  (the session fixture, used through request.getfixturevalue)

CONFIG = LessConfig(warmup_fraction=0.25, epochs=2, projection_dim=256, learning_rate=1e-2)
CITY = "The city you mean is Paris in France."


def target_rows():
    return row_inputs([conversation("Which city do you mean?", CITY),
                       conversation("Name the city please.", CITY)], prefix="t")


@pytest.fixture(scope="module")
def less_run(request, tmp_path_factory):
    """One LESS run on a 16-row pool of four topics (rows 3, 7, 11, ... answer the city question)."""
    lm = request.getfixturevalue("tiny_lm")
    cache = tmp_path_factory.mktemp("less")
    pool = row_inputs(learnable_rows(16))
    ids, scores = select_less(lm, pool, target_rows(), 4, cache, config=CONFIG, device="cpu")
    return cache, pool, ids, scores


def test_less_picks_target_like_rows(less_run):
    _, _, ids, scores = less_run
    city = {f"r{i}" for i in range(3, 16, 4)}
    assert set(ids) == city
    # the margin is real: every city row beats every other row
    assert min(scores[i] for i in city) > max(v for k, v in scores.items() if k not in city)


def test_per_row_features_equal_single_row_autograd(request, less_run):
    lm = request.getfixturevalue("tiny_lm")
    import torch

    from curate.signals.template import Prompter
    from curate.train.examples import collate, encode_rows

    cache, pool, _, _ = less_run
    run = warmup(lm, pool, cache / "train" / "less", CONFIG, device="cpu")   # the cached run
    model, tok = run.load_model(1, "cpu", trainable=True)
    examples, _ = encode_rows(Prompter(tok, CONFIG.max_length), pool[:8])
    linears = lora_linears(model)
    numels = [lin.weight.numel() for lin in linears]
    proj = Projector(numels, 64, 0, "cpu", block=100, cache_bytes=0)   # tiny blocks, nothing cached
    batched = gradient_features(model, examples, FeatureStore(cache / "check"), proj, pad_id=tok.pad_token_id,
                                device="cpu", batch_tokens=4096)
    for k in (0, 5):   # reference: autograd on one row alone, the same projection
        model.zero_grad()
        batch = collate(examples, [k], tok.pad_token_id, "cpu")
        head_nll(model, batch).mean().backward()
        ref = proj.project([lin.weight.grad.reshape(1, -1) for lin in linears])
        ref = torch.nn.functional.normalize(ref, dim=1)[0].numpy()
        assert float(batched[k] @ ref) > 0.999


class CountingProjector(Projector):
    """A Projector that counts the projection blocks it generates (nothing cached: each is generated anew)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made = []          # list.append: safe from the generating threads

    @property
    def generated(self):
        return len(self.made)

    def _block(self, j, start, rows):
        self.made.append((j, start))
        return super()._block(j, start, rows)


def test_rows_of_many_batches_are_projected_as_one_row_at_a_time(request, less_run, tmp_path):
    """The projection matrix is generated once for all rows of a group (it costs ~40 s per pass on SmolLM2),
    and every row gets the features it gets when projected alone."""
    lm = request.getfixturevalue("tiny_lm")
    from curate.signals.template import Prompter
    from curate.train.examples import encode_rows
    from curate.train.gradfeatures import adam_moments
    from curate.train.harness import OPTIMIZER_FILE

    cache, pool, _, _ = less_run
    run = warmup(lm, pool, cache / "train" / "less", CONFIG, device="cpu")   # the cached run
    model, tok = run.load_model(1, "cpu", trainable=True)
    examples, _ = encode_rows(Prompter(tok, CONFIG.max_length), pool[:10])
    numels = [lin.weight.numel() for lin in lora_linears(model)]
    adam = adam_moments(run.checkpoint(1) / OPTIMIZER_FILE, numels, "cpu")
    blocks = sum(-(-n // 100) for n in numels)

    def features(folder, batch_tokens, group_rows=None):
        proj = CountingProjector(numels, 64, 0, "cpu", block=100, cache_bytes=0)
        got = gradient_features(model, examples, FeatureStore(tmp_path / folder), proj, pad_id=tok.pad_token_id,
                                device="cpu", batch_tokens=batch_tokens, adam=adam,
                                **({} if group_rows is None else {"group_rows": group_rows}))
        return got, proj.generated, sorted((tmp_path / folder).glob("part-*.npz"))

    grouped, grouped_blocks, grouped_parts = features("grouped", batch_tokens=64)      # several batches, one group
    assert grouped_blocks == blocks and len(grouped_parts) == 1
    alone, alone_blocks, alone_parts = features("alone", batch_tokens=1, group_rows=1)   # one row per pass
    assert alone_blocks == len(examples) * blocks and len(alone_parts) == len(examples)
    assert np.abs(grouped - alone).max() < 2e-3          # float16 storage; rows in the same order
    cosines = grouped @ alone.T
    assert (np.diag(cosines) > 0.999).all() and (cosines[~np.eye(len(examples), dtype=bool)] < 0.99).all()  # no swap
    three, three_blocks, three_parts = features("three", batch_tokens=1, group_rows=3)   # bounded groups
    assert three_blocks == 4 * blocks and len(three_parts) == 4 and np.abs(three - alone).max() < 2e-3


def test_features_are_cached_and_resume(request, less_run):
    lm = request.getfixturevalue("tiny_lm")
    cache, pool, ids, first = less_run
    parts = sorted((cache / "train" / "less" / "features").rglob("part-*.npz"))
    assert parts and len(FeatureStore(parts[-1].parent).rows) > 0
    parts[-1].unlink()          # a run killed before its last batch was stored
    again_ids, again = select_less(lm, pool, target_rows(), 4, cache, config=CONFIG, device="cpu")
    assert again.keys() == first.keys() and again_ids == ids
    assert np.allclose([again[k] for k in first], list(first.values()), atol=2e-3)  # float16 storage
    assert len(list((cache / "train" / "less" / "features").rglob("part-*.npz"))) == len(parts)  # one redone


def test_scores_rule_and_checkpoint_weights(request, less_run):
    lm = request.getfixturevalue("tiny_lm")
    t = [np.eye(3)[:2]]          # two training rows
    v = [np.eye(3)]              # three target rows
    assert less_scores(t, v, [1.0]).tolist() == [1.0, 1.0]
    # groups: mean within a group, max over groups (the paper's subtasks)
    assert less_scores(t, v, [1.0], groups=["a", "a", "b"]).tolist() == [0.5, 0.5]
    cache, pool, _, _ = less_run
    w = checkpoint_weights(warmup(lm, pool, cache / "train" / "less", CONFIG, device="cpu"))
    assert len(w) == 2 and sum(w) == pytest.approx(1.0) and w[0] > w[1]   # linear decay: epoch 1 has more lr


# CliRunner calls the app without main()'s filter of CurateWarning: the real command line prints its note alone
@pytest.mark.filterwarnings("ignore::curate.errors.CurateWarning")
def test_less_selector_from_the_cli(request, tmp_path):
    lm = request.getfixturevalue("tiny_lm")
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    convs = learnable_rows(16)
    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": c[0]["content"], "output": c[1]["content"]}
                                               for c in convs])
    # record 3 has no answer: left out of the matching (no gradient), and said so, not in silence
    target = write_jsonl(tmp_path / "target.jsonl", [{"instruction": "Which city do you mean?", "output": CITY},
                                                    {"instruction": "Name the city please.", "output": CITY},
                                                    {"instruction": "And which river?"}])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    res = CliRunner().invoke(app, ["select", str(tmp_path / "ws"), "--method", "less", "--name", "less4",
                                   "--target", str(target), "--budget", "4", "--param", f"model={lm}",
                                   "--param", "warmup_fraction=0.25", "--param", "epochs=2",
                                   "--param", "projection_dim=256", "--param", "device=cpu",
                                   "--param", "learning_rate=0.01"])
    assert res.exit_code == 0, res.output
    # minutes of warm-up and gradient passes were shown by nothing: each pass has its bar now
    assert "train: 100%" in res.output  # the warm-up fine-tune
    for what, epoch in (("target", 1), ("pool", 1), ("target", 2), ("pool", 2)):
        assert f"LESS {what} gradients, checkpoint {epoch}/2: 100%" in res.output
    sel = Workspace.open(tmp_path / "ws").selection("less4")
    kept = {ws.conversations([i])[0][0]["content"] for i in sel.ids}
    assert len(kept) == 4 and all("city" in q for q in kept)
    prov = ws.column_provenance("less")
    assert prov["kind"] == "less" and prov["projection_dim"] == 256 and prov["target_rows"] == 3
    assert prov["target_rows_used"] == 2
    assert prov["target_left_out"] == {"rows": 1, "codes": {"no_response": 1}, "records": [3]}
    said = " ".join(res.output.split())
    assert "note: 1 target record(s) have no gradient and were left out (no_response 1; record 3)" in said
    assert json.dumps(prov)  # provenance is plain data


@pytest.mark.parametrize("setting", [{"warmup_fraction": 0.0}, {"warmup_fraction": 1.5}, {"projection_dim": 0},
                                     {"epochs": 0}, {"learning_rate": -1.0}])
def test_a_less_setting_out_of_range_is_refused_by_name(setting):
    from curate.errors import CurateError

    (name, _), = setting.items()
    with pytest.raises(CurateError, match=name):
        LessConfig(**setting)


def test_a_bad_less_budget_is_refused_before_the_warm_up(request, tmp_path):
    lm = request.getfixturevalue("tiny_lm")
    from curate.errors import CurateError
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"question {i}", "output": "answer"} for i in range(4)])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    with pytest.raises(CurateError, match="fraction must be in"):
        ws.select("less", name="bad", target=str(src), fraction=2.0, model=str(lm), device="cpu")
    assert not (ws.cache_dir / "train").exists()  # no warm-up run was started


def test_a_target_file_without_answers_is_refused_before_the_warm_up(request, tmp_path):
    """A target whose examples have no response was refused only after the warm-up fine-tune (minutes)."""
    lm = request.getfixturevalue("tiny_lm")
    from curate.errors import CurateError
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"question {i}", "output": "answer"} for i in range(4)])
    target = write_jsonl(tmp_path / "questions.jsonl", [{"instruction": "Which city?"}, {"instruction": "Why?"}])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    with pytest.raises(CurateError, match=r"questions\.jsonl: records 1-2: none of the 2 target examples has an answered turn"):
        ws.select("less", name="bad", target=str(target), budget=2, model=str(lm), device="cpu")
    assert not (ws.cache_dir / "train").exists()  # no warm-up run was started


def test_ws_select_warns_of_target_records_left_out_as_curate_select_notes_them(request, tmp_path):
    """A target record without an answer has no gradient: `curate select` printed a note, while ws.select in a
    notebook matched the pool to the other records in silence (the counts only in the column's provenance)."""
    lm = request.getfixturevalue("tiny_lm")
    from curate.errors import CurateWarning
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": c[0]["content"], "output": c[1]["content"]}
                                               for c in learnable_rows(8)])
    target = write_jsonl(tmp_path / "target.jsonl", [{"instruction": "Which city do you mean?", "output": CITY},
                                                    {"instruction": "And which river?"}])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    with pytest.warns(CurateWarning, match=r"target\.jsonl: 1 target record\(s\) have no gradient and were left out "
                                           r"\(no_response 1; record 2\)"):
        sel = ws.select("less", name="less", target=str(target), budget=2, model=str(lm), device="cpu",
                        warmup_fraction=0.25, epochs=1, projection_dim=64)
    assert len(sel.ids) == 2


def test_one_projection_pass_serves_every_checkpoint_and_the_target(request, less_run, monkeypatch):
    """The projection matrix is the same at every checkpoint, and a pass over it costs ~40 s on SmolLM2 (2 CPU
    cores): each checkpoint's target and pool rows had a pass of their own, 4 passes here (2 checkpoints x 2) and
    8 for a 100-row pool; a re-run against a new target (the pool's features cached) made one per checkpoint.
    Now the rows of every checkpoint and part share a pass, and the scores are those of the cached run."""
    lm = request.getfixturevalue("tiny_lm")
    passes = []
    project_parts = Projector.project_parts

    def counted(self, parts):
        passes.append(sum(p[0].shape[0] for p in parts))
        return project_parts(self, parts)

    monkeypatch.setattr(Projector, "project_parts", counted)
    cache, pool, _, _ = less_run
    config = dataclasses.replace(CONFIG, projection_dim=128)  # the cached warm-up, features not yet made
    ids, _ = select_less(lm, pool, target_rows(), 4, cache, config=config, device="cpu")
    assert passes == [2 * (16 + 2)]  # both checkpoints' pool and target rows, one pass
    assert set(ids) == {f"r{i}" for i in range(3, 16, 4)}  # the city rows, as test_less_picks_target_like_rows
    passes.clear()
    other = row_inputs([conversation("Tell me the colour.", "The colour is a bright and cheerful red.")], prefix="c")
    colour_ids, _ = select_less(lm, pool, other, 4, cache, config=config, device="cpu")
    assert passes == [2 * 1]  # a new target: its rows at both checkpoints, one pass; the pool's are cached
    assert set(colour_ids) == {f"r{i}" for i in range(0, 16, 4)}
