"""`curate evol --dry-run`: the local server note as the judges' dry run words it, and bounds that walk the
cached chain (against the project's fault-injecting server)."""

from typer.testing import CliRunner

from curate.cli import app
from curate.session import Workspace
from tests.conftest import write_jsonl


def test_a_local_dry_run_says_a_running_serve_local_is_reused(tmp_path):
    """The old note said only that the server 'starts', even while `curate serve-local` runs (it is reused)."""
    records = [{"instruction": f"Describe item {i} in detail.", "output": "x"} for i in range(2)]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    res = CliRunner().invoke(app, ["evol", str(tmp_path / "ws"), "--seeds", "2", "--steps", "2", "--backend", "local",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "a running `curate serve-local` is reused" in " ".join(res.output.split()), res.output


def _seeds(n):
    return [{"id": f"s{i}", "instruction": f"[rank] Describe item {i} in detail."} for i in range(n)]


def test_a_dry_run_walks_the_cached_chain_and_counts_only_what_is_missing(tmp_path):
    """Only the first step was looked up in the cache: after a full run the old dry run said 'at most 20' requests
    (4 seeds x 2 steps: 8 rewrites, 4 ranks, 8 re-asks) where the re-run sends 0; a longer chain is now counted
    from where the cache stops (the cached steps 1-2 give step 3's prompts, rendered exactly)."""
    from curate.evol import run_evol
    from curate.evol.dryrun import estimate_evol
    from curate.llm.backends import OpenAIBackend
    from curate.llm.dryrun import LOCAL_SERVER_NOTE
    from curate.llm.local import LocalBackend
    from tests.fault_server import FaultServer

    seeds, cache = _seeds(4), tmp_path / "cache"
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0)
        before = estimate_evol(seeds, backend, steps=2, cache_path=cache)
        run = run_evol(seeds, backend, steps=2, cache_path=cache)
        run.recorded()  # its answers are paid for: cache hits from now on
        full = estimate_evol(seeds, backend, steps=2, cache_path=cache)
        longer = estimate_evol(seeds, backend, steps=3, cache_path=cache)
        sent = srv.total
        run3 = run_evol(seeds, backend, steps=3, cache_path=cache)
        sent3 = srv.total - sent
        local = LocalBackend(srv.base_url, None, max_retries=0)  # the client of a running `curate serve-local`
        local_before = estimate_evol(seeds, local, steps=1, cache_path=cache)
        run_evol(seeds, local, steps=1, cache_path=cache)
        local_after = estimate_evol(seeds, local, steps=1, cache_path=cache)
    assert run.provenance["sets_scored"] == 4 and sent == run.provenance["requests"] == before.requests - 8  # no re-ask
    assert (full.requests, full.rewrites_cached, full.ranks, full.reasks, full.backend_calls) == (0, 8, 0, 0, 0)
    assert (full.prompt_tokens, full.output_tokens) == (0, 0)
    assert (longer.rewrites_cached, longer.ranks) == (8, 4) and longer.requests == 4 + 4 + 8 < before.requests + 8
    assert sent3 == run3.provenance["requests"] <= longer.requests
    assert run3.provenance["prompt_tokens"] <= longer.prompt_tokens
    assert LOCAL_SERVER_NOTE in local_before.notes and local_before.requests
    assert local_after.requests == 0 and LOCAL_SERVER_NOTE not in local_after.notes  # nothing to send: no server


def test_a_dry_run_does_not_count_requests_that_failed_for_good(tmp_path):
    """A finished run whose rewrites failed with HTTP 400: the re-run sends nothing, and so says the dry run."""
    records = [{"instruction": "[rank] Describe item one in detail.", "output": "x"},
               {"instruction": "[always400] Describe item two.", "output": "x"}]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    from tests.fault_server import FaultServer

    args = ["evol", str(tmp_path / "ws"), "--seeds", "2", "--steps", "2", "--model", "fault", "--api-key-env", "HOME",
            "--max-retries", "0"]
    with FaultServer() as srv:
        assert CliRunner().invoke(app, [*args, "--base-url", srv.base_url]).exit_code == 0
        sent = srv.total
        dry = CliRunner().invoke(app, [*args, "--base-url", srv.base_url, "--dry-run"])
        assert srv.total == sent
    assert dry.exit_code == 0 and "requests: at most 0:" in " ".join(dry.output.split()), dry.output


def _tree(folder) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dry_run_writes_nothing_to_the_workspace(tmp_path):
    """The old dry run created the response cache of a workspace that had none, and stored an alias for each request
    it found by key (here 9, after an online run, looked up through openai-batch: the alias names the backend):
    cache/responses.sqlite changed. Each CLI call is a process of its own, as a user's is (its SQLite files closed)."""
    import subprocess
    import sys

    from tests.fault_server import FaultServer

    records = [{"instruction": f"[rank] Describe item {i} in detail.", "output": "x"} for i in range(3)]
    ws = tmp_path / "ws"
    Workspace(ws).load(write_jsonl(tmp_path / "p.jsonl", records))

    def evol(*extra):
        args = ["evol", str(ws), "--seeds", "3", "--steps", "2", "--model", "gpt-4o-mini", "--api-key-env", "HOME",
                "--base-url", srv.base_url, *extra]
        done = subprocess.run([sys.executable, "-c", "from curate.cli import main; main()", *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return " ".join(done.stdout.split())

    with FaultServer() as srv:
        fresh = _tree(ws)
        assert "requests: at most 15:" in evol("--dry-run")  # 6 rewrites, 3 ranks, 2 re-asks each (bounded)
        assert _tree(ws) == fresh
        evol("--max-retries", "0")
        run = _tree(ws)
        assert "requests: at most 0:" in evol("--backend", "openai-batch", "--dry-run")
        assert _tree(ws) == run and srv.total == 9 + 0
