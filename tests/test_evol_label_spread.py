"""Evol label spread: a run states its labels' scores, and warns when they are nearly constant (an audit's SmolLM2
runs printed 34 labels, 31 of them score 1, as a plain success); an unusable rank reply is a failure, never a score."""

import json

import pytest

from tests.conftest import ScriptedBackend
from tests.test_evol_degenerate import SEEDS, looping_reply


def test_nearly_constant_labels_are_stated_and_warned_of(tmp_path, capsys):
    """The scripted judge scores every version 1, as SmolLM2-135M did for 7 of the audit's 10 sets."""
    from curate.cli.evol import print_run_summary
    from curate.evol import build_labels
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    labels = build_labels(SEEDS, ScriptedBackend(looping_reply), kind="complexity", steps=2, seed=0, workspace=ws,
                          name="cx")
    p = ws.label_sets["cx"]
    assert len(labels) == 6 and p["score_distribution"] == {"1": 6} and p["tied_sets"] == 2
    assert "nearly constant labels: 6 of 6 (100%) score 1" in p["label_warning"]
    assert "a scorer cannot learn from them" in p["label_warning"]
    print_run_summary(p)
    out, err = capsys.readouterr()
    assert "6 labels: score 1 ×6; 2 of 2 variant sets got one score for every variant" in out
    assert "warning: nearly constant labels" in " ".join(err.split())


def test_spread_labels_carry_no_warning(tmp_path):
    """The scripted judge scores the shown versions 1, 2, 3: a spread a scorer can learn from."""
    from curate.evol import run_evol
    from curate.session import Workspace
    from tests.test_evol import _evol_reply

    ws = Workspace(tmp_path / "ws")
    run = run_evol(SEEDS[1:], ScriptedBackend(_evol_reply), kind="complexity", steps=2, seed=0,
                   cache_path=ws.cache_dir, progress=False)
    summary = run.summary()
    assert summary["label_spread"] == "6 labels: score 1 ×2, 2 ×2, 3 ×2"
    assert summary["label_warning"] is None and summary["tied_sets"] == 0
    assert "label_spread='6 labels: score 1 ×2, 2 ×2, 3 ×2'" in repr(run) and "label_warning" not in repr(run)


@pytest.mark.parametrize("reply", ['{"scores": "one, two"}', "Version 2 is the hardest.", '{"scores": [1]}'])
def test_an_unusable_rank_reply_is_a_rank_failure_never_a_default_score(tmp_path, reply):
    from curate.evol import RankFailure, run_evol
    from curate.session import Workspace

    def answer(req):
        ranking = any("[Version " in m["content"] for m in req.messages)  # a re-ask's last message is the error
        return reply if ranking else looping_reply(req)

    ws = Workspace(tmp_path / "ws")
    run = run_evol(SEEDS[1:2], ScriptedBackend(answer), kind="complexity", steps=2, seed=0, cache_path=ws.cache_dir,
                   progress=False)
    (vs,) = run.sets
    assert vs.scores is None and vs.failure == RankFailure.JUDGE_FAILED, vs.failure_detail
    assert vs.failure_detail.startswith("invalid_output") and vs.raw == reply
    assert len(run.labels) == 0 and run.provenance["label_warning"] is None
    assert json.loads(json.dumps(run.provenance["rank_failures_by_reason"])) == {"judge_failed": 1}
