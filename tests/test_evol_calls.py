"""How an Evol run calls the LLM (curate/evol/calls.py): each item's prompt is rendered once, against the project's
fault-injecting server on loopback (tests/fault_server.py)."""

import dataclasses

from curate.evol.calls import LLMCalls, Usage
from curate.evol.run import plan_evol, run_chains
from curate.llm.backends import OpenAIBackend
from curate.llm.cache import response_cache
from curate.llm.prompts import Prompt


@dataclasses.dataclass(frozen=True)
class CountingPrompt(Prompt):
    """A prompt that counts its renders (in ``renders``, shared by every CountingPrompt)."""

    renders = [0]

    def render(self, **variables):
        CountingPrompt.renders[0] += 1
        return super().render(**variables)


def _counting(prompt: Prompt) -> CountingPrompt:
    return CountingPrompt(**{f.name: getattr(prompt, f.name) for f in dataclasses.fields(prompt)})


def _walk(backend, cache, seeds) -> tuple[int, int, Usage]:
    """(prompt renders, items sent through LLMCalls.run, usage) of one run of the chains and their rank calls."""
    plan = plan_evol(seeds, kind="complexity", steps=2, seed=0, operations=None, rules=None, rewrite_params=None,
                     rank_params=None, prompt_dirs=None)
    plan.prompts = {op: _counting(p) for op, p in plan.prompts.items()}
    plan.rank_prompt = _counting(plan.rank_prompt)
    items = [0]
    ctx = LLMCalls(backend, cache, Usage(), False, after_call=lambda desc, keys: items.__setitem__(0, items[0] + len(keys)))
    CountingPrompt.renders[0] = 0
    run_chains(ctx, plan)
    texts = len(plan.prompts)  # run_chains renders each rewrite prompt once with empty inputs (the copy rule)
    return CountingPrompt.renders[0] - texts, items[0], ctx.usage


def test_each_item_of_an_evol_call_is_rendered_once(fault_server, tmp_path):
    """LLMCalls.run built every item's request to find its key, then run_prompts built it again: 2 renders per item
    on a first run (here 24 for 12 items: 4 seeds x 2 steps and 4 rank calls); now 1."""
    seeds = [{"id": f"s{i}", "instruction": f"[rank] Describe item {i} in detail."} for i in range(4)]
    backend = OpenAIBackend(fault_server.base_url, "fault", api_key="k", max_retries=0)
    cache = response_cache(tmp_path / "cache")
    renders, items, usage = _walk(backend, cache, seeds)
    assert items == 12 and usage.requests > 0
    assert renders == items, (renders, items)
    cache.mark_recorded(usage.billed_keys)  # as a stored run does: its answers are cache hits from now on
    sent = fault_server.total
    again, items_again, usage_again = _walk(backend, cache, seeds)  # from the cache: the same requests, found
    assert fault_server.total == sent and usage_again.requests == 0 and items_again == items
    assert again == items_again


@dataclasses.dataclass(frozen=True)
class RefusedRankPrompt(Prompt):
    """The rank prompt, marked so the fault server answers it HTTP 400 (a permanent failure with no reply)."""

    def render(self, **variables):
        messages = super().render(**variables)
        return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + " [always400]"}]


def test_a_replayed_http_failure_of_a_rank_call_keeps_the_raw_it_had(fault_server, tmp_path):
    """A rank call that failed over HTTP stored '{"failure": ..., "reason_code": ...}' as its set's raw; a re-run that
    replayed the failure stored '{}' (review of the raw-reply fix, which covered validation failures only)."""
    from curate.codes import Failure

    seeds = [{"id": f"s{i}", "instruction": f"Describe item {i} in detail."} for i in range(3)]
    backend = OpenAIBackend(fault_server.base_url, "fault", api_key="k", max_retries=0)
    cache = response_cache(tmp_path / "cache")
    raws, known = [], {}
    for _ in range(2):
        plan = plan_evol(seeds, kind="complexity", steps=1, seed=0, operations=None, rules=None, rewrite_params=None,
                         rank_params=None, prompt_dirs=None)
        plan.rank_prompt = RefusedRankPrompt(**{f.name: getattr(plan.rank_prompt, f.name)
                                                for f in dataclasses.fields(plan.rank_prompt)})
        ctx = LLMCalls(backend, cache, Usage(), False, known_failures=known)
        raws.append([vs.raw for vs in run_chains(ctx, plan)])
        known = {key: Failure.from_dict(f) for key, f in ctx.failures.items()}
        cache.mark_recorded(ctx.usage.billed_keys)
    assert all('"reason_code": "http_error"' in raw for raw in raws[0]), raws[0]
    assert raws[1] == raws[0]  # was '{}' each
