"""Mixup and CutMix per sample, from a key: pure batch transforms that return mixed images and soft targets.

Each sample ``i`` is paired with sample ``perm[i]`` of a keyed permutation and draws its own mixing weight
``lam_i ~ Beta(alpha, alpha)``: mixup blends the two images, ``lam_i * x_i + (1 - lam_i) * x_perm[i]``; CutMix
pastes a box of the partner covering ``1 - lam_i`` of the image (``lam_i`` is then the area actually kept). The
targets are ``lam_i * onehot(y_i) + (1 - lam_i) * onehot(y_perm[i])``, which ``hwr.losses.cross_entropy`` takes in
place of integer labels. With both on, every sample picks one of the two with probability 1/2 (as timm does);
``prob`` is the chance that a sample is mixed at all. All randomness comes from one draw of the key, so the
transform is fixed-shape, device-neutral and compiles in one graph; ``hyperparameters(config)`` turns the alphas
and share into tensors that one compiled step takes as an input for every value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hwr import random
from hwr.errors import InputError
from hwr.random import Key

__all__ = ["MixConfig", "beta", "hyperparameters", "mix", "mix_images", "mixed_targets"]

Scalar = float | torch.Tensor

_CANDIDATES = 8  # Marsaglia-Tsang proposals per gamma sample; all 8 are rejected with probability < 1e-10


@dataclass(frozen=True)
class MixConfig:
    """``mixup``/``cutmix``: the Beta(alpha, alpha) concentration of each (0: off); ``prob``: share mixed."""

    mixup: float = 0.0
    cutmix: float = 0.0
    prob: float = 1.0

    def __post_init__(self) -> None:
        if self.mixup < 0 or self.cutmix < 0:
            raise InputError(f"mixup and cutmix alphas must be >= 0 (0: off), got {self.mixup}, {self.cutmix}")
        if not 0.0 <= self.prob <= 1.0:
            raise InputError(f"mix prob must be in [0, 1], got {self.prob}")

    def is_identity(self) -> bool:
        return (self.mixup == 0 and self.cutmix == 0) or self.prob == 0


def _gamma(u: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """Gamma(alpha) samples ``(B,)`` from uniforms ``u`` ``(B, 3 * K + 1)`` (Marsaglia-Tsang, float64).

    K proposals per sample are evaluated at once and the first accepted one is kept, so the shape is fixed; for
    ``alpha < 1`` the ``Gamma(alpha + 1) * U ** (1 / alpha)`` boost uses the last uniform (a 0-d tensor ``alpha``
    selects it with ``torch.where``: one graph for every value)."""
    tensor = isinstance(alpha, torch.Tensor)
    a = torch.where(alpha < 1.0, alpha + 1.0, alpha) if tensor else (alpha + 1.0 if alpha < 1.0 else alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / (torch.sqrt(9.0 * d) if tensor else math.sqrt(9.0 * d))
    k = _CANDIDATES
    u1, u2, u3, u_boost = u[:, :k], u[:, k : 2 * k], u[:, 2 * k : 3 * k], u[:, 3 * k :]
    z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)  # K normals (Box-Muller)
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log(u3.clamp_min(1e-300)) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # index of the first accepted proposal
    fallback = torch.zeros_like(first, dtype=v.dtype) + d if tensor else torch.full_like(first, d, dtype=v.dtype)
    g = torch.where(ok.any(1, keepdim=True), d * v.gather(1, first), fallback)[:, 0]
    if tensor:
        return torch.where(alpha < 1.0, g * u_boost[:, 0].clamp_min(1e-300) ** (1.0 / alpha), g)
    if alpha < 1.0:
        g = g * u_boost[:, 0].clamp_min(1e-300) ** (1.0 / alpha)
    return g


def beta(key: Key, n: int, a: Scalar, b: Scalar) -> torch.Tensor:
    """``n`` Beta(a, b) samples (float32, on the key's device) as ``X / (X + Y)`` of two gamma draws; ``a`` and
    ``b`` may be float64 0-d tensors (validated where they are made)."""
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and not (a > 0 and b > 0):
        raise InputError(f"beta parameters must be > 0, got {a}, {b}")
    per = 3 * _CANDIDATES + 1
    u = random.uniform(key, (n, 2 * per), dtype=torch.float64)
    x, y = _gamma(u[:, :per], a), _gamma(u[:, per:], b)
    return (x / (x + y).clamp_min(1e-300)).float()


def _box(u: torch.Tensor, lam: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Boolean boxes ``(B, 1, H, W)`` covering about ``1 - lam`` of each image, centres from ``u`` ``(B, 2)``."""
    r = torch.sqrt(1.0 - lam)  # (B,) side ratio
    cy, cx = u[:, 0] * h, u[:, 1] * w
    ys = torch.arange(h, device=lam.device, dtype=lam.dtype) + 0.5  # pixel centres
    xs = torch.arange(w, device=lam.device, dtype=lam.dtype) + 0.5
    iny = (ys[None] >= (cy - r * h / 2)[:, None]) & (ys[None] < (cy + r * h / 2)[:, None])  # (B, H)
    inx = (xs[None] >= (cx - r * w / 2)[:, None]) & (xs[None] < (cx + r * w / 2)[:, None])  # (B, W)
    return (iny[:, :, None] & inx[:, None, :])[:, None]


def hyperparameters(config: MixConfig, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """``config``'s alphas and share as float64 0-d tensors on ``device``: what ``mix_images(..., hp=)`` reads
    instead of the numbers (which of mixup and CutMix is on stays ``config``'s choice)."""
    return {k: torch.tensor(float(getattr(config, k)), dtype=torch.float64, device=device) for k in _VALUES}


_VALUES = ("mixup", "cutmix", "prob")


def mix_images(
    key: Key, images: torch.Tensor, config: MixConfig, hp: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float images ``(B, C, H, W)`` -> ``(mixed, perm, lam)``: each sample's partner index ``perm`` ``(B,)`` and
    the share ``lam`` ``(B,)`` of its own label in the target (1 where it was not mixed). ``hp``
    (``hyperparameters``) gives the alphas and share as tensors; ``config`` says which are on."""
    if images.ndim != 4 or not images.is_floating_point():
        raise TypeError(f"mix takes float images (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b, _, h, w = images.shape
    if config.is_identity():
        return images, torch.arange(b, device=images.device), torch.ones(b, device=images.device)
    v = {k: getattr(config, k) for k in _VALUES} if hp is None else hp
    k_perm, k_lam_m, k_lam_c, k_u = random.split(key, 4)
    perm = random.permutation(k_perm, b).to(images.device)
    u = random.uniform(k_u, (b, 4)).to(images.device)  # (apply, which, box cy, box cx)
    ones = torch.ones(b, device=images.device)
    apply = u[:, 0] < v["prob"]
    lam_m = beta(k_lam_m, b, v["mixup"], v["mixup"]).to(images.device) if config.mixup > 0 else ones
    lam_c = beta(k_lam_c, b, v["cutmix"], v["cutmix"]).to(images.device) if config.cutmix > 0 else ones
    if config.mixup > 0 and config.cutmix > 0:
        use_cut = u[:, 1] < 0.5
    else:
        use_cut = torch.full((b,), config.cutmix > 0, device=images.device)
    box = _box(u[:, 2:], lam_c, h, w) & (apply & use_cut)[:, None, None, None]  # (B, 1, H, W)
    lam_cut = 1.0 - box.to(images.dtype).mean((1, 2, 3))  # the area actually kept
    lam_mix = torch.where(apply & ~use_cut, lam_m, ones)
    partner = images[perm]
    blended = lam_mix[:, None, None, None] * images + (1.0 - lam_mix)[:, None, None, None] * partner
    mixed = torch.where(box, partner, blended)
    return mixed, perm, torch.where(use_cut, lam_cut, lam_mix)


def mixed_targets(labels: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Soft targets ``(B, num_classes)``: ``lam * onehot(labels) + (1 - lam) * onehot(labels[perm])``."""
    onehot = F.one_hot(labels, num_classes).to(lam.dtype)
    return lam[:, None] * onehot + (1.0 - lam)[:, None] * onehot[perm]


def mix(
    key: Key, images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: MixConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images ``(B, C, H, W)`` and int64 labels ``(B,)`` -> mixed images and soft targets ``(B, classes)``.

    Pure (inputs untouched); the same key gives the same output; the identity config returns the images and
    one-hot targets."""
    mixed, perm, lam = mix_images(key, images, config)
    return mixed, mixed_targets(labels, perm, lam, num_classes)
