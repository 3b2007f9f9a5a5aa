"""Token-level model signals: a small causal LM's view of each response turn.

``ws.apply(IFD())``, ``ws.apply(Perplexity())``, ``ws.apply(Learnability(reference_rows))`` write the
per-turn columns ``ifd``, ``perplexity`` and ``learnability`` (reducer ``mean``) from the packaged
SmolLM2-135M-Instruct or any Hugging Face causal LM folder (``model=DIR``). The
:class:`~curate.signals.engine.Engine` caches every scored response under the workspace's cache folder,
so a killed run resumes and a re-run costs nothing; :class:`~curate.signals.vllm.VllmEngine` answers the
same requests through a vLLM server's ``prompt_logprobs`` (``IFD(engine=VllmEngine())``). Selectors
``ifd``, ``perplexity`` and ``learnability`` live in :mod:`curate.signals.selectors` (importing it
registers them with :mod:`curate.select.registry`).
"""

from curate.signals.engine import Engine
from curate.signals.lora import LoraConfig
from curate.signals.steps import IFD, Learnability, Perplexity
from curate.signals.template import Prompter, Request, TurnPlan
from curate.signals.vllm import VllmEngine

__all__ = ["IFD", "Engine", "Learnability", "LoraConfig", "Perplexity", "Prompter", "Request", "TurnPlan",
           "VllmEngine"]
