"""Fine-tuning a trained digit classifier to a new, small, long-tailed domain: which parameters train, and the
stages that follow the main training, each a pure function of parameters.

- ``lr_multipliers``: a pytree of learning-rate multipliers for ``hwr.optim.scale_by_multipliers`` (0 freezes, a
  fraction slows the backbone); ``anchored_mask`` marks the leaves that came from the source (``hwr.runs.transfer``
  carries them over by name and shape);
- ``wise_select``: WiSE-FT, the source and fine-tuned weights interpolated, alpha chosen by a validation score;
- ``retrain_classifier``: cRT (Kang et al. 2020), the head re-initialised and trained alone on frozen features with
  class-balanced batches, its step built by ``hwr.engine.execution`` like every step;
- ``adjust_head``: tau-normalisation of the head rows, then post-hoc logit adjustment folded into its bias.

``hwr.tasks.digits.training.run`` applies the last three in that order after the main training
(``FinetuneConfig.wise``, ``ClassifierConfig``); each returns new parameters and leaves its inputs untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hwr import losses, optim, random, tree
from hwr.data import batches as bt
from hwr.engine import execution as ex
from hwr.engine import train
from hwr.models import Model
from hwr.random import Key
from hwr.tasks.digits.config import ClassifierConfig
from hwr.tree import PyTree

__all__ = [
    "WISE_ALPHAS",
    "adjust_head",
    "anchored_mask",
    "fold_logit_adjustment",
    "interpolate",
    "lr_multipliers",
    "retrain_classifier",
    "tau_normalize",
    "top_level_groups",
    "wise_select",
]

_BLOCK = re.compile(r"^(block|layer)(\d+)$")


def top_level_groups(params: dict[str, Any]) -> dict[str, list[str]]:
    """Split top-level parameter keys into ``head``, ``last`` (the last numbered block and everything after it
    except the head) and ``early`` (the rest), in the model's own order."""
    keys = list(params)
    blocks = [k for k in keys if _BLOCK.match(k)]
    if "head" not in params:
        raise ValueError(
            f"model parameters have no 'head' (top-level keys: {keys}); fine-tuning needs a classifier head"
        )
    last_block = max(blocks, key=lambda k: int(_BLOCK.match(k).group(2))) if blocks else None
    start = keys.index(last_block) if last_block else keys.index("head")
    last = [k for k in keys[start:] if k != "head"]
    early = [k for k in keys if k not in last and k != "head"]
    return {"head": ["head"], "last": last, "early": early}


def lr_multipliers(params: dict[str, Any], trainable: str, backbone_lr_mult: float = 1.0) -> PyTree:
    """A pytree of floats shaped like ``params``: 1 for the head, ``backbone_lr_mult`` for trainable backbone
    parameters, 0 for frozen ones. ``trainable``: head | last | all."""
    if trainable not in ("head", "last", "all"):
        raise ValueError(f"trainable must be head, last or all, got {trainable!r}")
    groups = top_level_groups(params)
    train_keys = {"head": set(), "last": set(groups["last"]), "all": set(groups["last"]) | set(groups["early"])}[
        trainable
    ]
    factor = {k: 1.0 if k == "head" else (backbone_lr_mult if k in train_keys else 0.0) for k in params}
    return {k: tree.map(lambda _x, f=factor[k]: f, v) for k, v in params.items()}


def interpolate(source: PyTree, finetuned: PyTree, alpha: float, anchored: PyTree | None = None) -> PyTree:
    """WiSE-FT (Wortsman et al. 2022): ``(1 - alpha) * source + alpha * finetuned`` leaf by leaf; ``alpha=1`` is
    the fine-tuned model, ``alpha=0`` the source. Leaves where ``anchored`` is False (freshly initialised, with no
    source counterpart) keep their fine-tuned value. Pure: new tensors, inputs untouched."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolation alpha must be in [0, 1], got {alpha}")
    if anchored is None:
        return tree.map(lambda s, f: torch.lerp(s, f, alpha), source, finetuned)
    return tree.map(lambda s, f, a: torch.lerp(s, f, alpha) if a else f.clone(), source, finetuned, anchored)


def anchored_mask(params: PyTree, fresh: list[str]) -> PyTree:
    """A pytree of bools shaped like ``params``: True where the leaf came from the source (not in ``fresh``)."""
    fresh_set = set(fresh)
    flat = tree.flatten_names(params)
    return tree.unflatten_names({name: name not in fresh_set for name in flat})


def _head(params: PyTree) -> dict[str, torch.Tensor]:
    head = params.get("head") if isinstance(params, dict) else None
    if not isinstance(head, dict) or "kernel" not in head or head["kernel"].ndim != 2:
        raise ValueError("the model has no linear 'head' {'kernel': (classes, features), 'bias'} to adjust")
    return head


def tau_normalize(params: PyTree, tau: float) -> PyTree:
    """tau-normalisation of the classifier (Kang et al. 2020): each class row ``w_c`` of the head kernel becomes
    ``w_c / ||w_c|| ** tau`` (0: unchanged, 1: unit norm), which undoes the large norms the head classes grow
    under imbalance. The bias is kept. Returns new params; the input is untouched."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    head = _head(params)
    w = head["kernel"]
    norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (classes, 1)
    return {**params, "head": {**head, "kernel": w / norms.pow(tau)}}


def fold_logit_adjustment(params: PyTree, class_prior: torch.Tensor, tau: float) -> PyTree:
    """Post-hoc logit adjustment folded into the head: ``bias - tau * log(prior)``, so the saved model predicts
    ``logits - tau * log(prior)`` (``hwr.losses.posthoc_adjust``) everywhere it is used, with no extra code."""
    head = _head(params)
    if "bias" not in head:
        raise ValueError("post-hoc logit adjustment needs a head with a bias")
    b = head["bias"]
    prior = class_prior.to(device=b.device, dtype=b.dtype)
    if prior.shape != b.shape:
        raise ValueError(f"class prior of shape {tuple(prior.shape)} does not match the head's {tuple(b.shape)}")
    return {**params, "head": {**head, "bias": b - tau * torch.log(prior.clamp_min(1e-12))}}


# ---------------------------------------------------------------------------------------------- after training

WISE_ALPHAS = tuple(i / 10 for i in range(11))  # 0 (the source) ... 1 (the fine-tuned model)


def wise_select(
    source: PyTree,
    finetuned: PyTree,
    anchored: PyTree,
    score: Callable[[PyTree], float],
    alphas: Sequence[float] = WISE_ALPHAS,
) -> tuple[float, PyTree, dict[float, float]]:
    """``(alpha, params, scores)``: the interpolation ``interpolate(source, finetuned, alpha)`` whose
    ``score`` (validation macro-F1, higher is better) is highest; ties go to the larger alpha (less of the
    source). ``scores`` maps every alpha tried to its score."""
    if not alphas:
        raise ValueError("wise_select needs at least one alpha")
    scores: dict[float, float] = {}
    best_alpha, best_params, best = None, None, -float("inf")
    for alpha in sorted(alphas, reverse=True):
        params = interpolate(source, finetuned, alpha, anchored)
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
    execution: ex.Execution | None = None,
    tuned: tuple[Callable[[PyTree], train.Transform], PyTree, str] | None = None,
) -> PyTree:
    """cRT: a freshly initialised head trained for ``epochs`` on the frozen backbone (learning-rate multiplier 0
    everywhere but the head) with class-balanced batches and plain cross-entropy. Returns the new params; the
    backbone leaves are the inputs' values. Batch-norm statistics are left as they were (the stage discards the
    model state the steps return), so features stay those of the trained model. The step is ``execution``'s
    (default: eager), built by ``hwr.engine.execution`` like every step in hwr. ``tuned=(make, values,
    structure)`` gives the transform as ``make(values)`` instead of ``transform``: the learning rate, the
    schedule's length and ``values`` are then tensor inputs of a step shared by every call of one ``structure``
    (``hwr.engine.execution.tuned_step``: a study's trials compile it once)."""
    k_head, k_train, k_data = random.split(key, 3)
    fresh = model.init(k_head)
    if "head" not in fresh:
        raise ValueError(f"{model.name} has no 'head' to re-train")
    start = {**params, "head": {k: v.to(params["head"][k].device) for k, v in fresh["head"].items()}}
    n_batches = bt.num_batches(labels.shape[0], batch_size, drop_last=True)
    if n_batches == 0:
        raise ValueError(f"{labels.shape[0]} images make no batch of {batch_size} for classifier re-training")
    head_only = lr_multipliers(start, "head")
    make, values, structure = tuned or (lambda _: transform, None, None)
    scalar = lambda x: torch.tensor(float(x), dtype=torch.float64, device=labels.device)
    hp = {"lr": scalar(lr), "total_steps": scalar(n_batches * epochs), "transform": values}

    def parts(hp: dict[str, Any]) -> tuple[optim.GradientTransformation, train.Objective]:
        opt = optim.chain(optim.adam(optim.cosine(hp["lr"], hp["total_steps"])), optim.scale_by_multipliers(head_only))
        return opt, train.classifier(losses.cross_entropy, transform=make(hp["transform"]))

    opt, objective = parts(hp)
    state = train.init_state(model, opt, k_train, params=start, model_state=model_state)
    batches_of = lambda epoch: bt.sampled_batches(random.fold_in(k_data, epoch), images, labels, batch_size, power=0.0)
    execution, first = execution or ex.Execution(compile=False), batches_of(0)[0]
    if structure is None:  # a transform whose values are not known: a step of its own
        step, _ = ex.train_step(execution, model, opt, objective, state, first, tag="crt")
    else:
        step, _ = ex.tuned_step(execution, model, ex.Tuned(parts, hp, f"crt|{structure}"), state, first, tag="crt")
    state, _ = train.fit(state, step, batches_of, epochs=epochs)
    return {**params, "head": state.params["head"]}


def adjust_head(params: PyTree, counts: torch.Tensor, config: ClassifierConfig) -> tuple[PyTree, dict[str, Any]]:
    """tau-normalise the head (``config.tau_norm``) and fold in post-hoc logit adjustment with the training prior
    ``counts / counts.sum()`` (``config.posthoc_tau``). Returns the params and a record of what was done."""
    done: dict[str, Any] = {}
    if config.tau_norm > 0:
        params = tau_normalize(params, config.tau_norm)
        done["tau_norm"] = config.tau_norm
    if config.posthoc_tau > 0:
        prior = counts.double() / counts.sum()
        params = fold_logit_adjustment(params, prior, config.posthoc_tau)
        done["posthoc_tau"] = config.posthoc_tau
    return params, done
