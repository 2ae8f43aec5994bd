"""Pure, keyed, per-sample data augmentation on a batch, and the transform a train step applies.

``augment(key, images, config)`` draws every sample's own parameters from ``key`` and resamples the batch once:
the random affine (rotation, scale, shear, translation, optional flip) and the elastic displacement field
(Simard et al. 2003) are summed into one sampling grid for ``grid_sample``, so the image is interpolated a single
time; an optional Gaussian blur (a per-sample sigma) follows, and random erasing then blanks a rectangle per
chosen sample. No global RNG, no Python per-sample loop, no
data-dependent shapes: the same function runs eagerly and inside ``torch.compile(fullgraph=True)`` and gives the
same result (to float rounding) for the same key.

Geometry: coordinates are pixels measured from the image centre, x to the right and y down. A sample's forward
map is ``p_out = R(angle) Sh(shear) s F p_in + t``; ``grid_sample`` needs the inverse (where each output pixel
reads from), written out in closed form below and rescaled to ``align_corners=False`` normalised coordinates.

``hyperparameters(config, size)`` gives the magnitudes as tensors (and the elastic field's smoothing matrices)
and ``augment(..., hp=)`` reads them instead of the config's numbers: a compiled step taking them as an input
serves every magnitude, while which transforms run stays the config's choice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from hwr import random
from hwr.errors import InputError
from hwr.random import Key

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "affine_theta",
    "augment",
    "hyperparameters",
    "make_transform",
    "parse_augment",
]

Transform = Callable[[Key, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; every default is "off", so ``AugmentConfig()`` is the identity.

    rotation: max degrees, uniform in ``[-rotation, rotation]``. translate: max shift in pixels, per axis.
    scale: zoom uniform in ``[1 - scale, 1 + scale]``. shear: max x-shear angle in degrees.
    elastic_alpha, elastic_sigma: Simard's elastic distortion: a uniform(-1, 1) displacement field smoothed by a
    Gaussian of ``sigma`` pixels, times ``alpha`` pixels (Simard's MNIST setting is alpha 34, sigma 4: an RMS
    displacement of about ``alpha * 0.58 / (3.54 * sigma)`` = 1.4 px). erase_prob: chance a sample gets one
    rectangle set to 0 (background), of area fraction uniform in ``erase_scale``, aspect in [0.3, 3.3].
    blur: max Gaussian blur in pixels: every sample is blurred with sigma uniform in ``[0, blur]`` and its peak
    restored (what a low-resolution scan, a defocused photo or an upsampled 8x8 digit looks like after
    ``hwr.data.digits.mnist_style``, which rescales the peak to 1). hflip: mirror half of the samples (off by default: it turns digits and letters into other symbols).
    """

    rotation: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    erase_prob: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.15)
    hflip: bool = False
    blur: float = 0.0

    def __post_init__(self) -> None:
        try:
            lo, hi = (float(v) for v in self.erase_scale)
        except (TypeError, ValueError):
            raise InputError(f"erase_scale must be two numbers (low, high), got {self.erase_scale!r}") from None
        object.__setattr__(self, "erase_scale", (lo, hi))
        for name in ("rotation", "translate", "scale", "shear", "elastic_alpha", "elastic_sigma", "erase_prob", "blur"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InputError(f"augment {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        checks = [
            (0 <= self.rotation <= 180, "rotation", "a max angle in [0, 180] degrees"),
            (self.translate >= 0, "translate", "a max shift >= 0 pixels"),
            (0 <= self.scale < 1, "scale", "in [0, 1): zoom is uniform in [1 - scale, 1 + scale]"),
            (0 <= self.shear < 90, "shear", "a max shear angle in [0, 90) degrees"),
            (self.elastic_alpha >= 0, "elastic_alpha", ">= 0 pixels"),
            (self.elastic_sigma > 0, "elastic_sigma", "> 0 pixels"),
            (0 <= self.erase_prob <= 1, "erase_prob", "a probability in [0, 1]"),
            (0 <= self.blur <= 8, "blur", "a max Gaussian sigma in [0, 8] pixels"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise InputError(f"augment {name}={getattr(self, name)} is out of range; use {want}")
        if not 0 < lo <= hi <= 1:
            raise InputError(f"augment erase_scale={self.erase_scale} must satisfy 0 < low <= high <= 1")
        if not isinstance(self.hflip, bool):
            raise InputError(f"augment hflip must be True or False, got {self.hflip!r}")

    def is_identity(self) -> bool:
        """True when every transform is off (``augment`` then returns its input unchanged)."""
        return not (self._warps() or self.erase_prob > 0 or self.blur > 0)

    def _warps(self) -> bool:
        return bool(self.rotation or self.translate or self.scale or self.shear or self.elastic_alpha or self.hflip)


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(rotation=5.0, translate=1.0, scale=0.05),
    "standard": AugmentConfig(
        rotation=10.0, translate=2.0, scale=0.1
    ),  # docs/architecture.md (measured facts): 99.4% MNIST in 6.5 epochs
    "strong": AugmentConfig(
        rotation=15.0, translate=3.0, scale=0.15, shear=10.0, elastic_alpha=34.0, elastic_sigma=4.0, erase_prob=0.25
    ),
}
_FIELDS = {f.name: f for f in dataclasses.fields(AugmentConfig)}


def _parse_value(key: str, text: str) -> object:
    text = text.strip()
    if key == "hflip":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise InputError(f"augment hflip={text!r}: use true or false")
    if key == "erase_scale":
        parts = text.replace("/", ":").split(":")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise InputError(f"augment erase_scale={text!r}: use low:high, e.g. erase_scale=0.02:0.15") from None
        return (lo, hi)
    try:
        return float(text)
    except ValueError:
        raise InputError(f"augment {key}={text!r} is not a number") from None


def parse_augment(spec: str) -> AugmentConfig:
    """An ``AugmentConfig`` from the CLI syntax: a preset (``none``, ``light``, ``standard``, ``strong``), a list
    ``rotation=10,translate=2,scale=0.1,elastic_alpha=8``, or a preset followed by overrides
    (``standard,elastic_alpha=34``). ``erase_scale=0.02:0.15``; ``hflip=true``. Raises ``ValueError`` naming an
    unknown preset or key, a bad value, or a repeated key."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise InputError(f"empty augmentation spec {spec!r}; use a preset ({', '.join(PRESETS)}) or key=value,...")
    base = AugmentConfig()
    if "=" not in parts[0]:
        name = parts.pop(0).lower()
        if name not in PRESETS:
            raise InputError(
                f"unknown augmentation preset {name!r}; choose one of {', '.join(PRESETS)} "
                f"or give key=value pairs with keys {', '.join(_FIELDS)}"
            )
        base = PRESETS[name]
    changes: dict[str, object] = {}
    for part in parts:
        if "=" not in part:
            raise InputError(
                f"augmentation spec {spec!r}: expected key=value, got {part!r} (a preset may only come first)"
            )
        key, text = part.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in _FIELDS:
            raise InputError(f"unknown augmentation key {key!r}; valid keys: {', '.join(_FIELDS)}")
        if key in changes:
            raise InputError(f"augmentation key {key!r} given twice in {spec!r}")
        changes[key] = _parse_value(key, text)
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------------------------------------- the warp


def affine_theta(
    angle: torch.Tensor,
    shear: torch.Tensor,
    scale: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    flip: torch.Tensor,
    h: int,
    w: int,
) -> torch.Tensor:
    """``(B, 2, 3)`` ``grid_sample`` maps (``align_corners=False``) of per-sample affines given as ``(B,)``
    tensors: ``angle`` and ``shear`` in radians, ``scale`` a zoom factor, ``tx``/``ty`` pixels, ``flip`` +-1.

    The forward map is ``p_out = R(angle) Sh(shear) scale F p_in + t`` in pixels from the image centre (x right,
    y down); the grid needs its inverse ``F^-1 scale^-1 Sh^-1 R^-1 (p_out - t)``, rescaled by ``2/W``, ``2/H``."""
    c, s, t = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    inv_s = 1.0 / scale
    m00 = flip * inv_s * (c + t * s)  # Sh^-1 R^-1 = [[c + t s, s - t c], [-s, c]]
    m01 = flip * inv_s * (s - t * c)
    m10 = inv_s * -s
    m11 = inv_s * c
    b0 = -(m00 * tx + m01 * ty) * (2.0 / w)
    b1 = -(m10 * tx + m11 * ty) * (2.0 / h)
    row0 = torch.stack([m00, m01 * (h / w), b0], dim=1)
    row1 = torch.stack([m10 * (w / h), m11, b1], dim=1)
    return torch.stack([row0, row1], dim=1)  # (B, 2, 3)


def _values(config: AugmentConfig, h: int, w: int, device: torch.device | None) -> dict[str, Any]:
    """The numbers the transforms read (angles in radians, the elastic field's two smoothing matrices ``(H, H)``
    and ``(W, W)``, None without elastic distortion): computed once from ``config`` for an ``h x w`` image."""
    elastic = config.elastic_alpha > 0
    return {
        "rotation": math.radians(config.rotation),
        "shear": math.radians(config.shear),
        "scale": config.scale,
        "translate": config.translate,
        "elastic_alpha": config.elastic_alpha,
        "band_h": _gaussian_band(config.elastic_sigma, h, device) if elastic else None,
        "band_w": _gaussian_band(config.elastic_sigma, w, device) if elastic else None,
        "erase_prob": config.erase_prob,
        "erase_low": config.erase_scale[0],
        "erase_high": config.erase_scale[1],
        "blur": config.blur,
    }


def hyperparameters(
    config: AugmentConfig, size: tuple[int, int], device: torch.device | str | None = None
) -> dict[str, Any]:
    """What ``augment(..., hp=)`` reads instead of ``config``'s numbers, for images of ``size`` ``(H, W)``, as
    tensors on ``device``: the magnitudes as float64 0-d tensors (angles in radians) and the elastic field's
    smoothing matrices (float32 ``(H, H)``, ``(W, W)``; None when off). Which transforms run stays ``config``'s
    choice, so one compiled step takes these as an input and serves every magnitude."""
    device = None if device is None else torch.device(device)
    v = _values(config, *size, device)
    to = lambda x: torch.tensor(float(x), dtype=torch.float64, device=device)
    return {k: x if x is None or isinstance(x, torch.Tensor) else to(x) for k, x in v.items()}


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)``, bit for bit on the CPU, written in ops that
    ``vmap`` batches (``affine_grid`` has no batching rule: under ``vmap`` it ran one trial at a time)."""

    def centres(n: int) -> torch.Tensor:  # normalised pixel centres, computed as ATen computes them
        return torch.linspace(-1.0, 1.0, n, dtype=theta.dtype, device=theta.device) * (n - 1) / n

    ones = torch.ones(h, w, dtype=theta.dtype, device=theta.device)
    base = torch.stack([centres(w).expand(h, w), centres(h)[:, None].expand(h, w), ones], -1)  # (h, w, 3)
    return (base.view(1, h * w, 3) @ theta.transpose(1, 2)).view(-1, h, w, 2)


def _affine_theta(u: torch.Tensor, h: int, w: int, cfg: AugmentConfig, v: dict[str, Any]) -> torch.Tensor:
    """Per-sample random affines from uniforms ``u`` ``(B, 6)`` in ``[0, 1)`` -> ``(B, 2, 3)`` maps."""
    r = u * 2.0 - 1.0  # (B, 6) in [-1, 1)
    flip = torch.where(r[:, 5] < 0, -1.0, 1.0) if cfg.hflip else torch.ones_like(r[:, 5])
    return affine_theta(
        angle=r[:, 0] * v["rotation"],
        shear=r[:, 1] * v["shear"],
        scale=1.0 + r[:, 2] * v["scale"],
        tx=r[:, 3] * v["translate"],
        ty=r[:, 4] * v["translate"],
        flip=flip,
        h=h,
        w=w,
    )


def _gaussian_band(sigma: float, n: int, device: torch.device | None) -> torch.Tensor:
    """``(n, n)`` matrix ``G`` with ``G[i, j] = g(i - j)``: a normalised Gaussian truncated at 3 sigma, so
    ``G @ f`` smooths the columns of ``f`` exactly like a zero-padded convolution (the two small matmuls of
    ``G_h @ f @ G_w.T`` take 0.7 ms for 128 samples where two 25-tap convolutions take 6.7 ms, one thread)."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    g = g / g.sum()
    i = torch.arange(n, device=device)
    d = i[:, None] - i[None, :]  # (n, n)
    return torch.where(d.abs() <= radius, g[(d + radius).clamp(0, 2 * radius)], 0.0)


def _elastic(
    u: torch.Tensor, b: int, h: int, w: int, cfg: AugmentConfig, v: dict[str, Any] | None = None
) -> torch.Tensor:
    """Simard's displacement field from uniforms ``u`` ``(2B, H, W)`` -> ``(B, H, W, 2)`` in normalised
    coordinates (x, y); the values from ``v`` (``_values``), else from ``cfg``."""
    v = _values(cfg, h, w, u.device) if v is None else v
    field = u * 2.0 - 1.0  # (2B, H, W) in [-1, 1)
    field = v["band_h"] @ field @ v["band_w"].T  # (2B, H, W): separable Gaussian smoothing, zero padded
    d = field.view(b, 2, h, w) * v["elastic_alpha"]  # pixels
    return torch.stack([d[:, 0] * (2.0 / w), d[:, 1] * (2.0 / h)], dim=-1)


def _erase(u: torch.Tensor, x: torch.Tensor, v: dict[str, Any]) -> torch.Tensor:
    """Set one random rectangle per chosen sample (uniforms ``u`` ``(B, 5)``) to 0, built from comparisons."""
    h, w = x.shape[-2:]
    lo, hi = v["erase_low"], v["erase_high"]
    apply = u[:, 0] < v["erase_prob"]
    area = (lo + (hi - lo) * u[:, 1]) * (h * w)
    ratio = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * u[:, 2])
    eh = torch.sqrt(area * ratio).clamp(1.0, h)
    ew = torch.sqrt(area / ratio).clamp(1.0, w)
    top, left = u[:, 3] * (h - eh), u[:, 4] * (w - ew)
    yc = torch.arange(h, device=x.device, dtype=torch.float32) + 0.5  # pixel centres
    xc = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    rows = (yc >= top[:, None]) & (yc < (top + eh)[:, None])  # (B, H)
    cols = (xc >= left[:, None]) & (xc < (left + ew)[:, None])  # (B, W)
    hole = rows[:, :, None] & cols[:, None, :] & apply[:, None, None]  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def _blur(u: torch.Tensor, x: torch.Tensor, v: dict[str, Any]) -> torch.Tensor:
    """Blur each sample by a Gaussian of sigma ``u * v["blur"]`` pixels (uniforms ``u`` ``(B,)``), zero padded, as
    two batched matmuls with per-sample ``(H, H)`` and ``(W, W)`` matrices, then restore each sample's peak."""
    sigma = (u * v["blur"]).clamp_min(0.05).to(x.dtype)  # (B,); 0.05 px is the identity to float rounding

    def band(n: int) -> torch.Tensor:  # (B, n, n): G[b, i, j] = g_b(i - j), g_b normalised over |t| < n
        t = torch.arange(-(n - 1), n, device=x.device, dtype=x.dtype)
        g = torch.exp(-(t * t) / (2.0 * sigma[:, None] ** 2))  # (B, 2n - 1)
        g = g / g.sum(1, keepdim=True)
        i = torch.arange(n, device=x.device)
        return g[:, (i[:, None] - i[None, :]) + n - 1]

    h, w = x.shape[-2:]
    y = band(h)[:, None] @ x @ band(w)[:, None].transpose(-1, -2)  # (B, C, H, W)
    peak = x.amax((1, 2, 3), keepdim=True)
    return y * (peak / y.amax((1, 2, 3), keepdim=True).clamp_min(1e-6))


def augment(key: Key, images: torch.Tensor, config: AugmentConfig, hp: dict[str, Any] | None = None) -> torch.Tensor:
    """Float images ``(B, C, H, W)`` in ``[0, 1]`` -> augmented images of the same shape and dtype.

    Every sample draws its own parameters from ``key`` (same key, same output), on the key's device, which must
    be the images' (nothing is drawn on the host and copied); an identity config returns the input itself. Pure:
    the input is not modified. Safe inside ``torch.compile(fullgraph=True)``. ``hp`` (``hyperparameters``) gives
    the magnitudes as tensors; ``config`` then only says which transforms run."""
    if images.ndim != 4 or not images.is_floating_point():
        raise TypeError(
            f"augment takes float images (B, C, H, W), got {images.dtype} {tuple(images.shape)}; "
            "convert uint8 with images.float() / 255"
        )
    if config.is_identity():
        return images
    random.check_device(key, images, "augment")
    b, _, h, w = images.shape
    v = _values(config, h, w, images.device) if hp is None else hp
    # All the randomness in one draw: inductor then generates the hashing once, not once per consumer
    # (each separate draw added tens of seconds to a cold compile). Layout: affine (B, 6) | erase (B, 5) |
    # elastic (2B, H, W) when on | blur (B) (last, so the earlier draws keep their numbers when it is on).
    n_elastic = 2 * b * h * w if config.elastic_alpha > 0 else 0
    u = random.uniform(key, (12 * b + n_elastic,))
    x = images
    if config._warps():
        theta = _affine_theta(u[: 6 * b].view(b, 6), h, w, config, v)
        grid = _affine_grid(theta, h, w)  # (B, H, W, 2)
        if n_elastic:
            grid = grid + _elastic(u[11 * b : 11 * b + n_elastic].view(2 * b, h, w), b, h, w, config, v)
        x = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    if config.blur > 0:
        x = _blur(u[11 * b + n_elastic :], x, v)
    if config.erase_prob > 0:
        x = _erase(u[6 * b : 11 * b].view(b, 5), x, v)
    return x


def make_transform(
    config: AugmentConfig | None, mean: float | torch.Tensor, std: float | torch.Tensor, hp: dict | None = None
) -> Transform:
    """The ``transform`` of ``hwr.engine.train.train_step``/``eval_step``: uint8 ``(B, C, H, W)`` -> ``/ 255`` ->
    ``augment`` (skipped when ``config`` is None or the identity) -> ``(x - mean) / std``, float32. ``mean`` and
    ``std`` may be 0-d tensors and ``hp`` the augmentation's (``hyperparameters``): one compiled step for all."""
    tensors = isinstance(std, torch.Tensor)
    if not tensors and not std > 0:
        raise InputError(f"std must be > 0, got {std}; compute it with hwr.data.clean.normalization_stats")
    cfg = None if config is None or config.is_identity() else config
    if not tensors:
        mean, std = float(mean), float(std)

    def transform(key: Key, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        if cfg is not None:
            x = augment(key, x, cfg, hp)
        return (x - mean) / std

    return transform
