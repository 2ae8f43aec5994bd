"""The stages that follow a long-tailed fine-tune, each a pure function of parameters:

- ``wise_select``: WiSE-FT, the source and fine-tuned weights interpolated, alpha chosen by a validation score;
- ``retrain_classifier``: cRT (Kang et al. 2020), the head re-initialised and trained alone on frozen features with
  class-balanced batches;
- ``adjust_head``: tau-normalisation of the head rows, then post-hoc logit adjustment folded into its bias.

``hwr.tasks.digits.training.run`` applies them in that order after the main training (``FinetuneConfig.wise``,
``ClassifierConfig``); each returns new parameters and leaves its inputs untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hwr import losses, optim, random
from hwr.config import ClassifierConfig
from hwr.data import batches as bt
from hwr.engine import train
from hwr.models import Model
from hwr.random import Key
from hwr.tasks.digits import finetune
from hwr.tree import PyTree

__all__ = ["WISE_ALPHAS", "adjust_head", "retrain_classifier", "wise_select"]

WISE_ALPHAS = tuple(i / 10 for i in range(11))  # 0 (the source) ... 1 (the fine-tuned model)


def wise_select(
    source: PyTree,
    finetuned: PyTree,
    anchored: PyTree,
    score: Callable[[PyTree], float],
    alphas: Sequence[float] = WISE_ALPHAS,
) -> tuple[float, PyTree, dict[float, float]]:
    """``(alpha, params, scores)``: the interpolation ``finetune.interpolate(source, finetuned, alpha)`` whose
    ``score`` (validation macro-F1, higher is better) is highest; ties go to the larger alpha (less of the
    source). ``scores`` maps every alpha tried to its score."""
    if not alphas:
        raise ValueError("wise_select needs at least one alpha")
    scores: dict[float, float] = {}
    best_alpha, best_params, best = None, None, -float("inf")
    for alpha in sorted(alphas, reverse=True):
        params = finetune.interpolate(source, finetuned, alpha, anchored)
        scores[alpha] = s = float(score(params))
        if s > best:
            best_alpha, best_params, best = alpha, params, s
    return best_alpha, best_params, scores


def retrain_classifier(
    model: Model,
    params: PyTree,
    model_state: PyTree,
    key: Key,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    transform: train.Transform,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    compile: bool = False,
) -> PyTree:
    """cRT: a freshly initialised head trained for ``epochs`` on the frozen backbone (learning-rate multiplier 0
    everywhere but the head) with class-balanced batches and plain cross-entropy. Returns the new params; the
    backbone leaves are the inputs' values. Batch-norm statistics are left as they were (the stage discards the
    model state the steps return), so features stay those of the trained model."""
    k_head, k_train, k_data = random.split(key, 3)
    fresh = model.init(k_head)
    if "head" not in fresh:
        raise ValueError(f"{model.name} has no 'head' to re-train")
    start = {**params, "head": {k: v.to(params["head"][k].device) for k, v in fresh["head"].items()}}
    n_batches = bt.num_batches(labels.shape[0], batch_size, drop_last=True)
    if n_batches == 0:
        raise ValueError(f"{labels.shape[0]} images make no batch of {batch_size} for classifier re-training")
    opt = optim.chain(
        optim.adam(optim.cosine(lr, n_batches * epochs)),
        optim.scale_by_multipliers(finetune.lr_multipliers(start, "head")),
    )
    step = train.train_step(model, opt, losses.cross_entropy, transform=transform)
    step = train.compile(step) if compile else step
    state = train.init_state(model, opt, k_train, params=start, model_state=model_state)
    batches_of = lambda epoch: bt.sampled_batches(random.fold_in(k_data, epoch), images, labels, batch_size, power=0.0)
    state, _ = train.fit(state, step, batches_of, epochs=epochs)
    return {**params, "head": state.params["head"]}


def adjust_head(params: PyTree, counts: torch.Tensor, config: ClassifierConfig) -> tuple[PyTree, dict[str, Any]]:
    """tau-normalise the head (``config.tau_norm``) and fold in post-hoc logit adjustment with the training prior
    ``counts / counts.sum()`` (``config.posthoc_tau``). Returns the params and a record of what was done."""
    done: dict[str, Any] = {}
    if config.tau_norm > 0:
        params = finetune.tau_normalize(params, config.tau_norm)
        done["tau_norm"] = config.tau_norm
    if config.posthoc_tau > 0:
        prior = counts.double() / counts.sum()
        params = finetune.fold_logit_adjustment(params, prior, config.posthoc_tau)
        done["posthoc_tau"] = config.posthoc_tau
    return params, done
