"""embed and select end to end: the embedding cache, the CLI commands, export of a selection."""

import json
import os

from typer.testing import CliRunner

from curate.cli import app
from curate.session import Workspace
from tests.conftest import write_jsonl


def test_embed_cache_and_cli_select_export(tmp_path):
    recs = [{"instruction": f"Write a short poem about the number {i}.", "output": f"{i} is fine."} for i in range(12)]
    recs += [{"instruction": "Write a short poem about the number 3.", "input": "", "output": "another answer"}]
    src = write_jsonl(tmp_path / "p.jsonl", recs)
    ws_path = tmp_path / "ws"
    ws = Workspace(ws_path)
    ws.load(src)
    first = ws.embed(device="cpu", progress=False)
    assert first["encoded"] == 12  # two rows share an instruction
    x = ws.embeddings()
    assert x.shape == (13, 384) and abs(float((x[0] ** 2).sum()) - 1) < 1e-4
    again = ws.embed(device="cpu", progress=False)
    assert again["encoded"] == 0 and again["reused"] == 13
    ws.load(write_jsonl(tmp_path / "q.jsonl", [{"instruction": "A brand new question?", "output": "yes"}]))
    assert ws.embed(device="cpu", progress=False)["encoded"] == 1
    ws.embed(text="response", name="resp", device="cpu", progress=False)
    assert ws.embedding_sets["resp"]["text"] == "response"

    ws.add_column("complexity", [float(i % 5) for i in range(len(ws))], {"kind": "test"})
    ws.add_column("quality", [2.0] * len(ws), {"kind": "test"})
    runner = CliRunner()
    out = runner.invoke(app, ["embed", str(ws_path), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert "0 encoded" in out.output
    out = runner.invoke(app, ["select", str(ws_path), "--method", "deita", "--budget", "5", "--name", "best",
                              "--max-cosine-similarity", "0.9", "--sort-by", "complexity*quality"])
    assert out.exit_code == 0, out.output
    assert len(Workspace.open(ws_path).selection("best").ids) == 5
    out = runner.invoke(app, ["select", str(ws_path), "--method", "exact", "--name", "dedup", "--param", "text=\"instruction\""])
    assert out.exit_code == 0, out.output
    assert "exact duplicate of a kept row" in out.output  # the summary, in words, from the reason codes
    out = runner.invoke(app, ["select", str(ws_path), "--method", "semantic", "--name", "sem",
                              "--duplicate-similarity", "0.999"])
    assert out.exit_code == 0, out.output
    sem = Workspace.open(ws_path).selection("sem")
    assert sem.provenance["params"] == {"duplicate_similarity": 0.999}
    assert sem.decisions()["duplicate"] == 1  # the two rows with the same instruction share an embedding
    out = runner.invoke(app, ["select", str(ws_path), "--method", "threshold", "--name", "upper", "--sort-by", "complexity",
                              "--quantile", "0.5"])
    assert out.exit_code == 0, out.output
    upper = Workspace.open(ws_path).selection("upper")
    assert upper.provenance["params"] == {"sort_by": "complexity", "quantile": 0.5}
    assert len(upper.ids) == sum(i % 5 >= 2 for i in range(len(ws)))  # complexity's median over 14 rows is 2
    out = runner.invoke(app, ["select", str(ws_path), "--method", "random", "--budget", "3", "--param", "budget=5",
                              "--name", "twice"])
    assert out.exit_code != 0 and "--budget 3 and --param budget=5: give it once" in out.output
    assert "twice" not in Workspace.open(ws_path).selections
    out = runner.invoke(app, ["select", str(ws_path), "--method", "top_k", "--budget", "3", "--name", "top", "--from", "dedup"])
    assert out.exit_code == 0, out.output
    dest = tmp_path / "out.jsonl"
    out = runner.invoke(app, ["export", str(ws_path), "--selection", "top", "--out", str(dest)])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert len(rows) == 3 and all("complexity" in r for r in rows)
    assert os.path.exists(ws_path / "cache" / "embeddings")


def test_the_long_walks_show_progress_on_the_command_line_and_not_in_the_api(tmp_path, capfd):
    """`curate select --method minhash` on 1M rows ran 22 minutes without a word; the Python API stays quiet."""
    from tests.cli_in_process import curate_in_process

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Tell me about topic number {i} in a few words.",
                                                "output": "ok"} for i in range(40)]))
    ws.select(method="minhash", name="quiet")
    assert "minhash" not in capfd.readouterr().err
    r = curate_in_process("select", ws.path, "--method", "minhash", "--name", "shown")
    assert r.returncode == 0, r.stderr
    assert "minhash: 100%" in r.stderr and "40/40" in r.stderr


def test_kmeans_shows_its_iterations_when_progress_is_shown_and_selects_the_same_rows(tmp_path, capfd):
    """`curate select --method kmeans` fitted K-means without a word (6 minutes on 100,000 rows); minhash and
    k-center showed a bar. The bar counts the fit's iterations, ends full where it converged, and changes nothing."""
    import re

    import numpy as np

    from curate.select.progress import showing_progress

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Topic {i}.", "output": "ok"} for i in range(200)]))
    x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    ws.add_embeddings("default", x / np.linalg.norm(x, axis=1, keepdims=True), {"kind": "test"})
    quiet = ws.select(method="kmeans", name="quiet", budget=20, n_clusters=8)
    assert "kmeans" not in capfd.readouterr().err  # the Python API stays quiet
    with showing_progress():
        shown = ws.select(method="kmeans", name="shown", budget=20, n_clusters=8)
    out, err = capfd.readouterr()
    assert "Iteration" not in out  # scikit-learn's lines go to the bar alone
    ends = re.findall(r"kmeans \(up to 300 iterations\): 100%\|[^\r\n]*\| (\d+)/(\d+) [^\r\n]*iteration", err)
    assert ends and ends[-1][0] == ends[-1][1] and int(ends[-1][0]) >= 2, err[-500:]
    assert "/300" not in err, err[-500:]  # the cap is no total: the bar showed 0/300, then 24/24
    assert shown.table.select(["id", "decision", "detail"]) == quiet.table.select(["id", "decision", "detail"])


def test_select_help_lists_every_registered_selector_and_those_taking_a_budget():
    """--method's help left out ifd, perplexity, learnability, cartography, el2n and grand, and --budget's left out
    necessity, less, mining, cartography, el2n, grand, ifd and learnability: hand-written lists. Both come from the
    selector registry now, and a selector registered later is listed too."""
    import re

    from curate.select.registry import SELECTORS, register, selector_parameters

    @register("zz_first_rows")
    def first_rows(ws, rows, budget: int):  # a user's selector: listed as every other one
        raise AssertionError("never run here")

    try:
        shown = CliRunner().invoke(app, ["select", "--help"], terminal_width=400, env={"COLUMNS": "400"})
    finally:
        SELECTORS.pop("zz_first_rows")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.replace("│", " ").split())
    method = set(re.findall(r"\w+", text[text.index("--method"):text.index("--name")]))
    budget = set(re.findall(r"\w+", text[text.index("--budget"):text.index("--max-cosine-similarity")]))
    assert {"ifd", "perplexity", "learnability", "cartography", "el2n", "grand", "zz_first_rows"} <= method
    assert {"necessity", "less", "mining", "cartography", "el2n", "grand", "ifd", "learnability", "zz_first_rows"} \
        <= budget
    from curate.session import registered_selectors

    names = set(registered_selectors())
    budgeted = {n for n in names if "budget" in selector_parameters(n)[0]}
    assert names <= method and budgeted <= budget and not (names - budgeted) & budget  # perplexity takes none
