"""Dry runs: what applying an LLM step would send and cost, without sending anything.

``estimate(ws, step, ids)`` finds the rows ``ws.apply`` would run the step on (not yet computed under
its fingerprint, plus rows whose last failure was transient), renders their requests exactly as the
runner would, looks them up in the response cache, counts the prompt tokens of the requests still to
send with the model's own tokenizer (``curate.llm.tokens``), takes the expected output tokens from each
request's ``max_tokens``, and prices both at the online and at the batch price. Nothing is sent and no
server is started; the returned :class:`DryRunEstimate` is data (the CLI prints it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from curate.defaults import JUDGE
from curate.llm.base import Backend, Request, batch_price_of, cost_usd, price_of, reply_token_limit
from curate.llm.cache import LookupOnlyCache, ResponseCache
from curate.llm.openai_backend import _max_tokens
from curate.llm.runner import _variable_aliases, build_requests
from curate.llm.tokens import LOCAL_KINDS, token_counter

LOCAL_SERVER_NOTE = ("the local vLLM server starts on the first request the cache does not answer (about a minute "
                     "on a small CPU; a running `curate serve-local` is reused)")  # a dry run with requests to send


class PricedTokens:
    """The cost of an estimate's ``prompt_tokens`` and ``output_tokens`` at its online and batch prices (a mixin of the
    estimate dataclasses; None where the price is unknown)."""

    price_online: tuple[float, float] | None
    price_batch: tuple[float, float] | None
    prompt_tokens: int
    output_tokens: int

    @property
    def usd_online(self) -> float | None:
        return cost_usd(self.price_online, self.prompt_tokens, self.output_tokens)

    @property
    def usd_batch(self) -> float | None:
        return cost_usd(self.price_batch, self.prompt_tokens, self.output_tokens)


@dataclass
class DryRunEstimate(PricedTokens):
    """What one step would send: rows, requests (cached or not), tokens, and USD online and through a batch API."""

    column: str
    backend: str
    model: str
    rows: int                  # rows asked for
    rows_to_run: int           # of which the step would run on (others are done under the same fingerprint)
    requests: int              # calls those rows need (one per judged turn)
    cached: int                # of which the on-disk response cache already answers
    repeated: int              # of which repeat another request of this step (same prompt): sent once, shared
    to_send: int               # distinct requests still to send: requests - cached - repeated - in_open_batches
    prompt_tokens: int         # of the requests still to send, counted by ``tokenizer``
    output_tokens: int         # expected at most: the requests' max_tokens
    tokenizer: str
    tokens_exact: bool         # counted by the model's own tokenizer (else a high estimate)
    price_online: tuple[float, float] | None = None   # USD per 1M input / output tokens; None: unknown
    price_batch: tuple[float, float] | None = None    # None: unknown, or no batch API for this model
    notes: list[str] = field(default_factory=list)
    in_open_batches: int = 0   # of the requests, those already in a batch still open (openai-batch): paid with it
    output_tokens_assumed: int = 0  # of those to send, requests setting no max_tokens: counted at the assumed worst case

    def output_tokens_text(self) -> str:
        """``at most 300 (max_tokens of each request)``, or, where requests set no max_tokens (none is sent), that
        their figure is an assumption (``BACKEND.worst_case_max_tokens`` a request), not a limit."""
        return output_tokens_text(self.output_tokens, self.output_tokens_assumed, self.to_send)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usd_online": self.usd_online, "usd_batch": self.usd_batch}

    def _repr_html_(self) -> str:
        import html

        from curate.llm.base import format_usd

        def usd(v: float | None) -> str:
            return "unknown" if v is None else format_usd(v)

        return (f"<div><b>dry run {html.escape(self.column)}</b> ({html.escape(self.backend)} "
                f"{html.escape(self.model)}): {self.rows_to_run:,} of {self.rows:,} rows to run, "
                f"{self.to_send:,} of {self.requests:,} requests to send ({self.cached:,} answered by the on-disk "
                f"cache, {self.repeated:,} repeat another of this step"
                + (f", {self.in_open_batches:,} already in open batches" if self.in_open_batches else "")
                + f"); {self.prompt_tokens:,} prompt tokens "
                f"({html.escape(self.tokenizer)}), output tokens {html.escape(self.output_tokens_text())}; "
                + (f"{usd(self.usd_online)} (a local model)</div>" if self.backend in LOCAL_KINDS else
                   f"{usd(self.usd_online)} online, {usd(self.usd_batch)} batch</div>"))


def output_tokens_text(output_tokens: int, assumed: int, to_send: int) -> str:
    """How far ``output_tokens`` is a limit: ``assumed`` of the ``to_send`` requests set no max_tokens, so no limit
    is sent for them and ``BACKEND.worst_case_max_tokens`` each is the assumed worst case (as --max-cost reserves)."""
    from curate.defaults import BACKEND

    if not assumed:
        return f"at most {output_tokens:,} (max_tokens of each request)"
    some = "the prompt sets" if assumed == to_send else f"{assumed:,} of the {to_send:,} requests set"
    return (f"{output_tokens:,}, assumed: at most {BACKEND.worst_case_max_tokens:,} a request where {some} no "
            "max_tokens (none is sent, so a reply may be longer; --max-cost reserves the same assumption)")


def prices(backend: Backend) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(online, batch) prices of ``backend``'s model; local models are free both ways."""
    if backend.kind in LOCAL_KINDS:
        free = getattr(backend, "price", None) or (0.0, 0.0)
        return free, free
    online = getattr(backend, "price", None) if backend.kind == "openai" else None
    return online or price_of(backend.model), batch_price_of(backend.model)


def plan_requests(prompt: Any, variables: list[dict[str, Any]], backend: Backend, cache: ResponseCache, *,
                  params: dict[str, Any] | None = None, output_model: Any = None) -> tuple[list[Request], int, int]:
    """(the distinct requests still to send, how many items the on-disk cache answers, how many items repeat a
    request another item sends: the same prompt, sent once) for a ``run_prompt`` call."""
    aliases = _variable_aliases(prompt, variables, backend, params, output_model)
    found = cache.get_aliased([a for a in aliases if a])
    misses = [v for v, a in zip(variables, aliases, strict=True) if a not in found]
    requests = build_requests(prompt, misses, backend, params=params, output_model=output_model) if misses else []
    hits = cache.get_many([r.key for r in requests])
    cached = len(variables) - len(misses) + sum(1 for r in requests if r.key in hits)
    unique = {r.key: r for r in requests if r.key not in hits}
    return list(unique.values()), cached, len(variables) - cached - len(unique)


def _variables(step: Any, rows: list[Any]) -> list[dict[str, Any]]:
    """The variables of every call ``step`` makes for ``rows`` (a Judge says; else one per user turn)."""
    if hasattr(step, "call_variables"):
        return step.call_variables(rows)
    return [{"instruction": turn.instruction} for row in rows for turn in row.turns]


def estimate(ws: Any, step: Any, ids: list[str] | None = None, *, force: bool = False,
             retry_failed: bool = JUDGE.retry_failed, cache: Any = None) -> DryRunEstimate:
    """What ``ws.apply(step, ids, force=force, retry_failed=retry_failed)`` would send; sends nothing.

    ``step``: a Judge or another step with ``prompt``, ``backend`` and ``params`` (the InsTag tagger).
    """
    from curate.storage.apply import rows_needing_work

    backend = step.backend
    if backend is None:
        raise ValueError(f"step {step.column!r} has no backend to estimate")
    if hasattr(step, "check_inputs"):
        step.check_inputs(ws)
    asked = ws.ids if ids is None else list(dict.fromkeys(ids))
    todo = rows_needing_work(ws, step, asked, force=force, retry_failed=retry_failed)
    rows = ws.row_inputs(todo, step.inputs) if todo else []
    variables = _variables(step, rows)
    output_model = getattr(step, "output", None)
    if output_model is None and step.prompt.output_kind == "json":
        output_model = step.prompt.model_class()
    params = getattr(step, "params", None) or None
    to_send, cached, repeated = plan_requests(step.prompt, variables, backend,
                                    LookupOnlyCache(cache if cache is not None else ws.cache_dir),
                                    params=params, output_model=output_model)
    open_keys = backend.keys_in_open_batches() if hasattr(backend, "keys_in_open_batches") else set()
    in_open = sum(1 for r in to_send if r.key in open_keys)
    to_send = [r for r in to_send if r.key not in open_keys]
    counter = token_counter(backend)
    online, batch = prices(backend)
    notes = []
    if in_open:
        notes.append(f"{in_open:,} request(s) were submitted in batches still open in this workspace: a run waits for "
                     "their answers instead of sending them again; their cost is those batches', not counted here")
    if backend.kind == "local" and to_send:
        notes.append(LOCAL_SERVER_NOTE)
    if step.prompt.output_kind == "json":
        notes.append("json output: re-asks after a validation error are not counted")
    return DryRunEstimate(
        column=step.column, backend=backend.kind, model=backend.model, rows=len(asked), rows_to_run=len(todo),
        requests=len(variables), cached=cached, repeated=repeated, to_send=len(to_send),
        prompt_tokens=sum(counter.count([r.messages for r in to_send])),
        output_tokens=sum(_max_tokens(r) for r in to_send), tokenizer=counter.name, tokens_exact=counter.exact,
        price_online=online, price_batch=batch, notes=notes, in_open_batches=in_open,
        output_tokens_assumed=sum(1 for r in to_send if not reply_token_limit(r.params)))


def total(estimates: list[DryRunEstimate]) -> dict[str, Any]:
    """Sums over several steps (``curate run --dry-run``): requests, tokens, USD (None if one is unknown)."""
    def usd(name: str) -> float | None:
        values = [getattr(e, name) for e in estimates]
        return None if any(v is None for v in values) else sum(values)

    return {"requests": sum(e.requests for e in estimates), "cached": sum(e.cached for e in estimates),
            "repeated": sum(e.repeated for e in estimates), "to_send": sum(e.to_send for e in estimates),
            "in_open_batches": sum(e.in_open_batches for e in estimates),
            "prompt_tokens": sum(e.prompt_tokens for e in estimates),
            "output_tokens": sum(e.output_tokens for e in estimates),
            "output_tokens_assumed": sum(e.output_tokens_assumed for e in estimates),
            "usd_online": usd("usd_online"), "usd_batch": usd("usd_batch")}
