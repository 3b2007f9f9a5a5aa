"""QQT planner: the paper's utility with repetition decay; more compute -> keep more rows."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.errors import CurateError
from curate.train.planner import fit_utility, plan, predicted_loss, tier_utilities
from tests.conftest import write_jsonl


def test_keep_grows_with_compute():
    quality = np.random.default_rng(0).random(20_000)
    keeps = [plan(quality, epochs=e).keep_rows for e in (0.05, 0.2, 1, 5, 50)]
    assert keeps == sorted(keeps)                       # never filters more aggressively with more compute
    assert keeps[0] == 2_000 and keeps[-1] > keeps[0]   # a tenth at first, more tiers later
    # with utility that barely decays, the top tier keeps winning at any compute
    assert plan(quality, epochs=50, half_lives=1e9).keep_rows == 2_000


def test_repetition_decay_and_quality_order():
    # one tier: a fresh row helps more than a repeat (same samples, a bigger pool is better)
    fresh = predicted_loss(10_000, [10_000], [-0.16], [5.7])
    repeated = predicted_loss(10_000, [1_000], [-0.16], [5.7])
    assert fresh < repeated
    # without repetition, a better tier wins: utilities are best first
    b = tier_utilities(4)
    assert np.all(np.diff(b) > 0) and b[0] == pytest.approx(-0.16)
    p = plan(np.arange(4000.0), samples=300)
    assert p.keep_tiers == 1 and plan(np.arange(4000.0), samples=10).keep_tiers == 1  # below one unit: flat
    assert [c["tiers"] for c in p.curve] == list(range(1, 11))
    # the curve holds every candidate; the choice is its minimum
    assert p.curve[p.keep_tiers - 1]["loss"] == min(c["loss"] for c in p.curve)


def test_tokens_budget_and_nan_rows():
    q = np.r_[np.linspace(0, 1, 1000), [np.nan] * 10]
    tok = np.r_[np.full(1000, 100.0), np.full(10, 1.0)]
    p = plan(q, tokens=100 * 500, row_tokens=tok)
    assert p.curve[0]["samples"] == pytest.approx(500)
    assert p.curve[-1]["rows"] == 1000                   # NaN rows are not in any tier
    with pytest.raises(CurateError, match="exactly one"):
        plan(q, samples=10, epochs=1)
    with pytest.raises(CurateError, match="row_tokens"):
        plan(q, tokens=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 1, "half_lives": 0.0}, "half-lives must be positive"),
    ({"epochs": 1, "half_lives": -5.7}, "half-lives must be positive"),
    ({"epochs": 1, "buckets": 0}, "buckets must be a whole number >= 1"),
    ({"epochs": 1, "buckets": 2, "utilities": [0.1, -0.1]}, "utilities must be negative"),
    ({"epochs": 1, "buckets": 2, "utilities": {"a": -0.1}}, "utilities must be a list of numbers"),
    ({"epochs": 0}, "the epochs budget must be a positive number"),
    ({"samples": float("nan")}, "the samples budget must be a positive number"),
    ({"epochs": 1, "irreducible": -1.0}, "irreducible loss must be >= 0"),
])
def test_settings_the_law_cannot_use_are_refused_by_name(kwargs, message):
    with pytest.raises(CurateError, match=message):
        plan(np.arange(100.0), **kwargs)


def test_fit_utility_recovers_b():
    n = np.array([1e3, 3e3, 1e4, 3e4])
    loss = (n / 500) ** -0.12 + 0.1
    assert fit_utility(n, loss, rows_per_unit=500) == pytest.approx(-0.12, abs=1e-9)


def test_plan_cli_and_notebook(tmp_path):
    from curate.cli import app
    from curate.session import Workspace

    src = write_jsonl(tmp_path / "pool.jsonl",
                      [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(200)])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    ws.add_column("quality", list(np.linspace(0, 1, 200)), {"kind": "test"})
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["plan", str(tmp_path / "ws"), "--order-by", "quality", "--epochs", "0.05",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "keep 20 rows" in res.output and "<- keep" in res.output
    bars = [line.split("│")[-2].strip() for line in res.output.splitlines() if "#" in line]
    assert len(bars) == 10 and "…" not in res.output  # every bar whole at 80 columns: longer means a higher loss
    data = json.loads(out.read_text())
    assert data["keep_rows"] == 20 and len(data["curve"]) == 10
    from curate.train.planner import plan_workspace

    html = plan_workspace(ws, "quality", epochs=5)._repr_html_()
    assert "<svg" in html and "<polyline" in html
    res = CliRunner().invoke(app, ["plan", str(tmp_path / "ws"), "--order-by", "quality", "--epochs", "0.05",
                                   "--utilities", "-0.16,-0.1"])  # json's message named no option
    assert res.exit_code == 2 and "'--utilities': not a JSON list of numbers" in " ".join(res.output.split())


def test_a_budget_too_large_to_evaluate_names_its_option_and_range(tmp_path):
    """--samples 1e300 asked numpy for an array of 1e300 epochs: "Maximum allowed size exceeded", naming nothing."""
    from curate.cli import app
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)]))
    ws.add_column("quality", list(np.linspace(0, 1, 20)), {"kind": "test"})
    plan_cli = ["plan", str(ws.path), "--order-by", "quality", "--buckets", "2"]
    res = CliRunner().invoke(app, [*plan_cli, "--samples", "1e300"])  # the best tier: 10 rows, shown 1,000,000 times
    assert isinstance(res.exception, CurateError) and str(res.exception).startswith(
        "the samples budget (--samples) must be in (0, 10,000,000], got 1e+300: more shows the rows of the best tier")
    assert CliRunner().invoke(app, [*plan_cli, "--samples", "1e7"]).exit_code == 0  # the range's end is a plan
    res = CliRunner().invoke(app, [*plan_cli, "--epochs", "1e300"])
    assert str(res.exception).startswith("the epochs budget (--epochs) must be in (0, 500,000]")
    # a large budget of a usual pool is a plan (20,000 epochs of 1,000 rows in 10 tiers were refused at 100,000)
    from curate.train.planner import plan

    assert plan(np.random.default_rng(0).random(1000), epochs=20_000).keep_rows > 0


def test_a_model_folder_without_a_tokenizer_is_one_line_naming_the_option_and_folder(tmp_path):
    """--tokens --model /tmp gave transformers' five lines on a backend tokenizer it could not build, naming neither
    the option nor the folder; a missing folder, its Hub repo-id message."""
    from curate.cli import app
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)]))
    ws.add_column("quality", list(np.linspace(0, 1, 20)), {"kind": "test"})
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("no tokenizer here")
    for model, said in ((tmp_path / "folder", "not a tokenizer folder (none of tokenizer.json, tokenizer_config.json"),
                        (tmp_path / "gone", "no such folder")):
        res = CliRunner().invoke(app, ["plan", str(ws.path), "--order-by", "quality", "--buckets", "2", "--tokens",
                                       "1000", "--model", str(model)])
        message = str(res.exception)
        assert isinstance(res.exception, CurateError)
        assert message.startswith(f"model={str(model)!r} (CLI: --model): {said}")  # model= of plan_workspace too
        assert "\n" not in message
