"""A fine-tuned reader's CPU step runs as forward passes under a token budget, gradients accumulated: the step's
loss, gradients and update are those of one pass over the whole batch (up to float rounding), with less memory."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from tests.train_fixtures import tiny_lm  # noqa: F401  (a pytest fixture)

ROWS = [(f"Question {i}: say something about topic {i % 3}.", " ".join(["word"] * (2 + 7 * (i % 4))), float(i % 5) - 2)
        for i in range(8)]
PAIRS = [(ROWS[i][0], ROWS[i][1], ROWS[i + 1][1], float(i % 2)) for i in range(0, 8, 2)]


def _one_step(base, plan):
    """(loss, gradients, updated trainable weights, encoder forward passes) of one training step."""
    import torch
    from transformers import AutoTokenizer

    import curate.scorers.crossencoder as ce

    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    net = ce.build_net(base)
    for module in net.modules():  # no dropout (BERT's own too): its draws depend on the shapes of the passes
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.nn.init.normal_(net.head.weight, std=1.0)  # a zero head passes no gradient to the LoRA weights
    calls = []
    net.encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    info = ce.train_net(net, tok, points=ROWS, pairs=PAIRS, max_length=48, epochs=1, batch_size=8, lr=1e-3,
                        step_plan=plan, evaluate=lambda: 0.0, eval_every=1)
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
    assert info["steps"] == 1 and grads
    return info["history"][0]["loss"], grads, ce.trainable_tensors(net), len(calls)


@pytest.mark.parametrize("base", ["tiny_lm", "tiny_base"])
def test_a_step_split_into_passes_under_a_token_budget_updates_as_one_pass(base, request):
    from curate.embed.batching import token_budget_batches

    folder = request.getfixturevalue(base)
    whole = _one_step(folder, None)
    split = _one_step(folder, partial(token_budget_batches, max_tokens=64, max_rows=8))
    assert whole[3] == 3  # points once, each side of the pairs once
    assert split[3] > 6  # several passes per batch
    assert split[0] == pytest.approx(whole[0], rel=1e-5)
    assert split[1].keys() == whole[1].keys()
    for name, g in whole[1].items():
        np.testing.assert_allclose(split[1][name].numpy(), g.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    lora = [name for name in whole[1] if "lora_B" in name]
    assert lora and any(float(whole[1][name].abs().max()) > 0 for name in lora)  # the LoRA weights do learn here
    for name, value in whole[2].items():
        np.testing.assert_allclose(split[2][name], value, rtol=1e-3, atol=1e-5, err_msg=name)


def test_a_cpu_fit_runs_its_steps_as_passes_of_at_most_the_token_budget(tiny_base, monkeypatch):
    """The fine-tuned scorers' CPU steps pass the token budget (``TRAIN.cpu_step_tokens`` unless given) to training."""
    import curate.scorers.crossencoder as ce
    from curate.defaults import TRAIN
    from curate.scorers.finetuned import CrossEncoderScorer

    plans = []
    train_net = ce.train_net

    def recorded(*args, **kwargs):
        plans.append(kwargs.get("step_plan"))
        return train_net(*args, **kwargs)

    monkeypatch.setattr(ce, "train_net", recorded)
    rows = [{"instruction": q, "response": r} for q, r, _ in ROWS]
    scores = [y for _, _, y in ROWS]
    CrossEncoderScorer(max_length=32, base=tiny_base).fit(rows, scores, epochs=1, batch_size=8)
    CrossEncoderScorer(max_length=32, base=tiny_base).fit(rows, scores, epochs=1, batch_size=8, step_tokens=40)
    assert [p.keywords["max_tokens"] for p in plans] == [TRAIN.cpu_step_tokens, 40]
    assert [len(part) for part in plans[1]([20] * 8)] == [2, 2, 2, 2]  # 40 padded tokens a pass
