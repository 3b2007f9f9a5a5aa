"""`curate evol` on the batch backends: one call (one batch, one vLLM launch) per evol step for all its operations,
one for the rank calls of every set size, one per round of re-asks; the same chains and labels as the online backend.
Real runs against tests/fault_server.py's Batch API on loopback."""

from curate.defaults import JUDGE
from curate.evol import run_evol
from curate.llm.backends import OpenAIBackend
from curate.llm.batch import OpenAIBatchBackend
from curate.session import Workspace
from tests.fault_server import FaultServer

MODEL = "gpt-4o-mini"
STEPS = 3


def _seeds(n: int) -> list[dict[str, str]]:
    """Seeds the fault server ranks ([rank]); every other one's rank answer never validates ([badrank]: re-asks);
    every third one is rewritten once, then given back unchanged ([rewrites:1]: no_change), so set sizes differ."""
    return [{"id": f"s{i}", "instruction": f"[rank] Describe item {i} in detail, with one example"
             + (" [rewrites:1]" if i % 3 == 0 else "") + (" [badrank]." if i % 2 else ".")} for i in range(n)]


def _outcome(run) -> list[tuple]:
    return [(vs.seed_id, [(v.step, v.operation, v.text) for v in vs.variants],
             [(v.step, v.operation, str(v.eliminated)) for v in vs.eliminated], vs.scores, str(vs.failure))
            for vs in run.sets]


def test_an_evol_run_sends_one_batch_per_step_rank_and_reask_round(tmp_path):
    """10 seeds x 3 steps made a batch per operation of each step, per rank set size and per re-ask round of each
    (16 batches for 40 requests in the audit): now one per step, one for the ranks, one per re-ask round."""
    seeds = _seeds(10)
    with FaultServer() as srv:
        online = run_evol(seeds, OpenAIBackend(srv.base_url, MODEL, api_key="k", max_retries=0), steps=STEPS,
                          seed=0, cache_path=tmp_path / "online-cache")
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv:
        backend = OpenAIBatchBackend(srv.base_url, MODEL, workspace=ws, api_key="k", poll_s=0.05, poll_max_s=0.2)
        run = run_evol(seeds, backend, steps=STEPS, seed=0, cache_path=ws.cache_dir)
        made = srv.batches_created
        sizes = {len(vs.variants) for vs in run.sets if vs.order is not None}
        assert len(sizes) >= 2 and run.labels.num_rows and run.provenance["rank_failures_by_reason"]  # set sizes differ
        assert made == STEPS + 1 + JUDGE.validation_retries, made
        assert _outcome(run) == _outcome(online) and run.labels.to_list() == online.labels.to_list()
        for key in ("requests", "cached", "repeated", "rewrites", "eliminated", "score_distribution"):
            assert run.provenance[key] == online.provenance[key], key
        run.recorded()
        again = run_evol(seeds, backend, steps=STEPS, seed=0, cache_path=ws.cache_dir)  # all from the cache
        assert srv.batches_created == made and _outcome(again) == _outcome(run)


def test_cli_evol_takes_poll_interval_and_says_what_it_sent_per_backend(tmp_path):
    """`curate evol --backend openai-batch` had no --poll-interval (README lists it for openai-batch), and its summary
    called batch lines "HTTP" requests; it now polls at the given interval and counts lines and batches."""
    from typer.testing import CliRunner

    from curate.cli import app
    from tests.conftest import write_jsonl

    records = [{"instruction": f"[rank] Describe item {i} in detail.", "output": "An item."} for i in range(4)]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    args = ["evol", str(tmp_path / "ws"), "--seeds", "4", "--steps", "2", "--model", MODEL, "--api-key-env", "HOME"]
    with FaultServer() as srv:
        res = CliRunner().invoke(app, [*args, "--backend", "openai-batch", "--base-url", srv.base_url,
                                       "--poll-interval", "0.05"])
        made = srv.batches_created
    assert res.exit_code == 0, res.output
    line = " ".join(res.output.split())
    assert made == 3 and f"sent as batch lines in {made} batches)" in line and "HTTP" not in line, line
    with FaultServer() as srv:
        res = CliRunner().invoke(app, [*args, "--backend", "openai", "--base-url", srv.base_url, "--name", "online"])
    assert res.exit_code == 0, res.output
    assert f"({srv.total} sent over HTTP)" in " ".join(res.output.split())
    res = CliRunner().invoke(app, [*args, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                                   "--poll-interval", "1"])
    assert res.exit_code != 0 and "--poll-interval" in " ".join(str(res.exception or res.output).split())


def test_evol_dry_run_sends_nothing_and_bounds_what_the_run_sends(tmp_path):
    """`curate evol` had no --dry-run (README: the options of run, tag and evol are the same): it now says, sending
    nothing, at most how many requests (rewrites, ranks, re-asks), tokens, dollars and batches a run takes."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.evol.dryrun import estimate_evol
    from tests.conftest import write_jsonl

    seeds = _seeds(4)
    records = [{"id": s["id"], "instruction": s["instruction"], "output": "An item."} for s in seeds]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", records))
    args = ["evol", str(tmp_path / "ws"), "--seeds", "4", "--steps", "2", "--model", MODEL, "--api-key-env", "HOME",
            "--backend", "openai-batch"]
    with FaultServer() as srv:
        res = CliRunner().invoke(app, [*args, "--base-url", srv.base_url, "--dry-run"])
        assert (srv.total, srv.uploads, srv.batches_created) == (0, 0, 0)
    assert res.exit_code == 0, res.output
    line = " ".join(res.output.split())
    assert "requests: at most 20: 8 rewrites" in line and "4 rank calls, 8 re-asks" in line, line
    assert "batches: at most 5" in line and "with the batch API: at most $" in line and ws.label_sets == {}
    with FaultServer() as srv:
        backend = OpenAIBatchBackend(srv.base_url, MODEL, workspace=ws, api_key="k", poll_s=0.05, poll_max_s=0.2)
        before = estimate_evol(seeds, backend, steps=2, seed=0, cache_path=ws.cache_dir)
        run = run_evol(seeds, backend, steps=2, seed=0, cache_path=ws.cache_dir)
        after = estimate_evol(seeds, backend, steps=2, seed=0, cache_path=ws.cache_dir)
        made = srv.batches_created
    p = run.provenance
    assert p["rank_failures_by_reason"] and p["requests"] <= p["backend_requests_sent"] <= before.requests
    assert made <= before.batches and p["prompt_tokens"] <= before.prompt_tokens
    assert p["completion_tokens"] <= before.output_tokens and p["cost_usd"] <= before.usd_batch
    # the whole chain is now in the cache, and the rank calls' replies and re-asks: the re-run sends nothing
    assert (before.rewrites_cached, after.rewrites_cached, after.requests, after.prompt_tokens) == (0, 8, 0, 0)


def test_evol_dry_run_bounds_a_later_step_that_rewrites_a_long_seed_again(tmp_path):
    """A rewrite eliminated (a long seed's reply cut off at max_tokens) leaves the parent the seed, rewritten again at
    the next step: the bound counted every later parent at the reply's max_tokens, a fraction of a long seed."""
    from curate.evol.dryrun import estimate_evol

    short = [{"id": "s", "instruction": "List three fruits."}]
    long = [{"id": "s", "instruction": "List three fruits. " + "Keep each one in mind. " * 400}]
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv:
        backend = OpenAIBatchBackend(srv.base_url, MODEL, workspace=ws, api_key="k")
        one, three = (estimate_evol(long, backend, steps=n, seed=0, cache_path=ws.cache_dir) for n in (1, 3))
        short_one, short_three = (estimate_evol(short, backend, steps=n, seed=0, cache_path=ws.cache_dir)
                                  for n in (1, 3))
    # steps 2 and 3 may each rewrite the whole seed again (2,000 words and more): more than the short seed's steps
    assert (three.prompt_tokens - one.prompt_tokens) - (short_three.prompt_tokens - short_one.prompt_tokens) >= 2 * 2000
