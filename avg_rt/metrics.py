"""Image quality metrics on frames in [0, 1] with peak 1.

All functions take tensors of shape (..., C, H, W) and return one value per frame (shape (...)).
PSNR here is the usual 8-bit convention (equal to PSNR on 0..255 with peak 255). The TF project
computed PSNR on [-1, 1] frames with peak 1, which reads 20 log10(2) = 6.02 dB lower; convert its
numbers with `psnr_ours = psnr_tf + 6.02`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """Map model frames from [-1, 1] to [0, 1]."""
    return (frames.float() + 1) / 2


def _reduce(values: torch.Tensor, mask: torch.Tensor | None, offset: int = 0) -> torch.Tensor:
    """Mean of per-pixel `values` (..., h, w) over all pixels, or over `mask` (..., H, W) cut
    to the (h, w) grid starting at (offset, offset). An empty mask gives NaN."""
    if mask is None:
        return values.flatten(-2).mean(-1)
    m = mask[..., offset : offset + values.shape[-2], offset : offset + values.shape[-1]].float()
    return (values * m).flatten(-2).sum(-1) / m.flatten(-2).sum(-1)


def _db(mean_error: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mean_error)


def _squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).mean(-3)  # (..., H, W), mean over channels


def psnr(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """10 log10(1 / MSE) per frame; identical frames give +inf. With `mask` (..., H, W) bool,
    the MSE is taken over the masked pixels only."""
    return _db(_reduce(_squared_error(pred, target), mask))


def _grad_sum(x: torch.Tensor) -> torch.Tensor:
    # |dx| + |dy| with forward differences, on the common (H-1, W-1) grid.
    dx = (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()
    dy = (x[..., 1:, :-1] - x[..., :-1, :-1]).abs()
    return dx + dy


def _gradient_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Per pixel of the top-left-aligned (H-1, W-1) grid, mean over channels.
    return (_grad_sum(target.float()) - _grad_sum(pred.float())).abs().mean(-3)


def sharp_diff(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Sharpness difference per frame: 10 log10(1 / mean(|g_Y - g_G|)), g = |dx| + |dy|.

    Higher is better: the prediction's edges are closer to the target's. With `mask`, the mean
    is over the masked pixels.
    """
    return _db(_reduce(_gradient_error(pred, target), mask))


def _gaussian_window(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # scipy.ndimage's rule: 11 taps for sigma 1.5
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).float()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM, mean over channels, at the (H - 10, W - 10) positions where the 11-tap
    window fits (centred: map[i, j] belongs to pixel (i + 5, j + 5))."""
    h, w = pred.shape[-2:]
    window = _gaussian_window(sigma, 3.5, pred.device)
    if h < len(window) or w < len(window):
        raise ValueError(f"ssim needs frames of at least {len(window)}x{len(window)}, got {h}x{w}")
    x, y = pred.float(), target.float()
    k = len(window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Separable 'valid' Gaussian filter as shifted multiply-adds: several times faster on
        # CPU than conv2d over many single-channel images, and the same arithmetic.
        rows = window[0] * t[..., : h - k + 1, :]
        for i in range(1, k):
            rows = rows + window[i] * t[..., i : i + h - k + 1, :]
        out = window[0] * rows[..., : w - k + 1]
        for i in range(1, k):
            out = out + window[i] * rows[..., i : i + w - k + 1]
        return out

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(-3)


def ssim(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per frame, mean over channels.

    Gaussian window (sigma 1.5, 11 taps), K1 = 0.01, K2 = 0.03, population covariances,
    averaged over the positions where the window fits inside the frame: the same numbers as
    scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`. Frames must be at least 11 pixels on a side.
    With `mask`, the average is over the masked pixels among those positions.
    """
    s = ssim_map(pred, target, sigma)
    return _reduce(s, mask, (pred.shape[-2] - s.shape[-2]) // 2)


DB_CAP = 100.0  # identical frames make PSNR and sharp difference infinite: reported as this


def cap_db(name: str, values: np.ndarray) -> np.ndarray:
    """`values` of metric `name` with PSNR and sharp difference capped at DB_CAP (98.2 dB is
    one level of one channel of one pixel off at 210x160), so that means over clips or
    videos keep identical frames instead of dropping or overflowing on them."""
    return (
        np.minimum(values, DB_CAP)
        if name.removeprefix("baseline_").startswith(("psnr", "sharp_diff"))
        else values
    )


def finite_or_none(values: Iterable[float]) -> list[float | None]:
    """Per-step values with the infinite ones (identical frames) as None: valid JSON, and a
    gap in `avg_rt.visual.plot_per_step`."""
    return [float(v) if math.isfinite(v) else None for v in values]


def moving_mask(
    last_input: torch.Tensor,
    target: torch.Tensor,
    pred: torch.Tensor | None = None,
    tolerance: float = 0.0,
) -> torch.Tensor:
    """(..., H, W) bool: pixels where the target differs from the last input frame (any
    channel) or, given `pred`, where the prediction does.

    The symmetric form (with `pred`) scores a model on what changes in the truth *and* on
    what it changed itself, so pixels that it damages while they should have stayed still
    count against it; the target-only form keeps exactly the pixels where copying the last
    frame is wrong, which flatters any model. Give `pred` on the 8-bit grid
    (`avg_rt.data.clips.round_to_8bit`): a change below half a level is not a change in the
    frames a user gets. For float frames, which are never rounded, `tolerance` (in the model's
    units) sets how large a change counts.
    """
    changed = (target.float() - last_input.float()).abs().amax(-3) > tolerance
    if pred is not None:
        changed |= (pred.float() - last_input.float()).abs().amax(-3) > tolerance
    return changed


PSNR_CONVENTION = "PSNR = 10 log10(1 / MSE) on frames in [0, 1] (TF project's numbers + 6.02 dB)"
SHARP_DIFF_CONVENTION = (
    "sharp_diff = 10 log10(1 / mean(|g_target - g_pred|)), g = |dx| + |dy|, in [0, 1]"
)


def frame_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    masks: Mapping[str, torch.Tensor | None] | None = None,
) -> dict[str, torch.Tensor]:
    """PSNR, sharp difference and SSIM per frame for model frames in [-1, 1] (..., C, H, W).

    `masks` maps a key suffix to None (all pixels) or a (..., H, W) bool mask; the default,
    {"": None}, gives "psnr", "sharp_diff" and "ssim" over all pixels, and e.g.
    {"": None, "_moving": m} adds "psnr_moving", ... over `m`, from the same per-pixel maps.
    SSIM is left out for frames smaller than its 11-pixel window.
    """
    p, t = to_unit(pred).clamp(0, 1), to_unit(target)
    maps = {"psnr": (_squared_error(p, t), 0), "sharp_diff": (_gradient_error(p, t), 0)}
    if min(p.shape[-2:]) >= 11:
        s = ssim_map(p, t)
        maps["ssim"] = (s, (p.shape[-2] - s.shape[-2]) // 2)
    out = {}
    for suffix, mask in (masks or {"": None}).items():
        for name, (values, offset) in maps.items():
            mean = _reduce(values, mask, offset)
            out[name + suffix] = mean if name == "ssim" else _db(mean)
    return out
