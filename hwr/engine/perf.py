"""Opt-in speed options: they change how a model computes, not what it computes (or say how they change it).

Each ``Model`` wrapper returns a ``Model`` with the same ``init``/``apply`` signature, so ``train_step``, ``vmap`` and
``torch.compile`` take it unchanged; the parameters stay in hwr's layouts (checkpoints do not change).

- ``channels_last(model)``: images and conv kernels in NHWC memory order inside ``apply``, so oneDNN convolutions,
  max pooling and their backward passes run in their fast channels-last kernels (one-channel tensors included, where
  ``contiguous(memory_format=...)`` silently keeps NCHW strides). Same function; sums run in another order, so
  results differ from NCHW by float rounding (~1e-7 relative).
- ``autocast(model, "bfloat16")``: the forward under autocast on the input's device (convolutions and matmuls in
  bf16, logits returned in float32). Changes the numbers: check the recipe's accuracy. On a GPU bf16 runs on the
  tensor cores; on a CPU it is fast only where the CPU has bf16 instructions (AVX512-BF16 or AMX, see
  ``has_bf16``); elsewhere oneDNN converts and it is slower than float32.
- ``ATEN_GRAPH``: inductor options for ``hwr.engine.train.compile(step, **ATEN_GRAPH)``: one captured graph whose ops run
  as ATen kernels instead of inductor-generated C++ loops. On CPU, inductor's max-pool backward (a scatter) and its
  pooling loops are several times slower than ATen's channels-last kernels; this keeps one graph, no Python in the
  step, and ATen's kernels. Same kernels as eager, so results equal the eager step's.
- ``CPU_BUILD``: inductor options every CPU compile candidate carries (``hwr.engine.autotune.CPU_CANDIDATES``):
  ``realize_reads_threshold=1`` materialises a buffer read more than once instead of inlining it into each reader,
  so the counter-based key hashing of the augmentation, dropout and mixing draws is generated once, not in every
  consumer: the seed CNN's step with ``standard`` augmentation built cold in 27.2 s instead of 38.2 s at batch 32
  and 27.4 s instead of 38.2 s at 128, running at the same speed (65.3 / 66.0 against 65.7 / 68.8 steps/s at 32,
  16.0 / 16.4 against 16.8 / 16.3 at 128, cold / warm processes; one thread, AMD EPYC avx2/avx512f/avx512_bf16,
  quiet machine:
  ``python benchmarks/compile_time.py --batch-size B --augment standard --steps 100 --threads 1 [--option
  realize_reads_threshold=1]``). Not on CUDA, where its effect on triton's fused kernels is not measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hwr import tree

if TYPE_CHECKING:
    from hwr.models import Model

__all__ = ["ATEN_GRAPH", "CPU_BUILD", "autocast", "channels_last", "has_bf16", "nhwc"]

ATEN_GRAPH: dict[str, Any] = {"fallback_by_default": True, "selective_decompose": True}
CPU_BUILD: dict[str, Any] = {"realize_reads_threshold": 1}

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` with NHWC strides, same values. For ``C == 1`` a view (``contiguous`` would keep NCHW
    strides, which oneDNN then treats as NCHW); otherwise a channels-last copy unless already laid out so."""
    if t.shape[1] == 1:
        n, _, h, w = t.shape
        return t.reshape(n, h, w, 1).permute(0, 3, 1, 2)  # strides (H*W, 1, W, 1)
    return t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # works under vmap, unlike contiguous(memory_format)


def channels_last(model: Model) -> Model:
    """``model`` whose ``apply`` lays ``x`` ``(B, C, H, W)`` and every 4-D kernel out in NHWC order first."""

    def apply(params: Any, state: Any, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        params = tree.map(lambda t: nhwc(t) if isinstance(t, torch.Tensor) and t.dim() == 4 else t, params)
        return model.apply(params, state, nhwc(x), **kwargs)

    return model._replace(apply=apply, name=f"{model.name}+channels_last")


def autocast(model: Model, dtype: str = "bfloat16") -> Model:
    """``model`` whose ``apply`` runs under autocast in ``dtype`` on ``x``'s device type (``cpu``, ``cuda``, ...;
    static, so free under compile) and returns float32 logits."""
    if dtype not in _DTYPES:
        raise ValueError(f"autocast dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    low = _DTYPES[dtype]

    def apply(params: Any, state: Any, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        with torch.autocast(x.device.type, dtype=low):
            logits, new_state = model.apply(params, state, x, **kwargs)
        return logits.float(), new_state

    return model._replace(apply=apply, name=f"{model.name}+autocast_{dtype}")


def has_bf16() -> bool:
    """True if the CPU advertises native bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
