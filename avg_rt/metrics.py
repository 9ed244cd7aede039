"""Image quality metrics on frames in [0, 1] with peak 1.

All functions take tensors of shape (..., C, H, W) and return one value per frame (shape (...)).
PSNR here is the usual 8-bit convention (equal to PSNR on 0..255 with peak 255). The TF project
computed PSNR on [-1, 1] frames with peak 1, which reads 20 log10(2) = 6.02 dB lower; convert its
numbers with `psnr_ours = psnr_tf + 6.02`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """Map model frames from [-1, 1] to [0, 1]."""
    return (frames.float() + 1) / 2


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) per frame; identical frames give +inf."""
    mse = ((pred.float() - target.float()) ** 2).flatten(-3).mean(-1)
    return 10 * torch.log10(1.0 / mse)


def _grad_sum(x: torch.Tensor) -> torch.Tensor:
    # |dx| + |dy| with forward differences, on the common (H-1, W-1) grid.
    dx = (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()
    dy = (x[..., 1:, :-1] - x[..., :-1, :-1]).abs()
    return dx + dy


def sharp_diff(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sharpness difference per frame: 10 log10(1 / mean(|g_Y - g_G|)), g = |dx| + |dy|.

    Higher is better: the prediction's edges are closer to the target's.
    """
    diff = (_grad_sum(target.float()) - _grad_sum(pred.float())).abs().flatten(-3).mean(-1)
    return 10 * torch.log10(1.0 / diff)


def _gaussian_window(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # scipy.ndimage's rule: 11 taps for sigma 1.5
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).float()


def ssim(pred: torch.Tensor, target: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per frame, mean over channels.

    Gaussian window (sigma 1.5, 11 taps), K1 = 0.01, K2 = 0.03, population covariances,
    averaged over the positions where the window fits inside the frame: the same numbers as
    scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`. Frames must be at least 11 pixels on a side.
    """
    shape = pred.shape
    c, h, w = shape[-3:]
    window = _gaussian_window(sigma, 3.5, pred.device)
    if h < len(window) or w < len(window):
        raise ValueError(f"ssim needs frames of at least {len(window)}x{len(window)}, got {h}x{w}")
    x = pred.float().reshape(-1, 1, h, w)
    y = target.float().reshape(-1, 1, h, w)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter
        t = F.conv2d(t, window.view(1, 1, -1, 1))
        return F.conv2d(t, window.view(1, 1, 1, -1))

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(*shape[:-3], c).mean(-1)


PSNR_CONVENTION = "PSNR = 10 log10(1 / MSE) on frames in [0, 1] (TF project's numbers + 6.02 dB)"
SHARP_DIFF_CONVENTION = (
    "sharp_diff = 10 log10(1 / mean(|g_target - g_pred|)), g = |dx| + |dy|, in [0, 1]"
)


def frame_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR, sharp difference and SSIM per frame for model frames in [-1, 1] (..., 3, H, W).

    SSIM is left out for frames smaller than its 11-pixel window.
    """
    p, t = to_unit(pred).clamp(0, 1), to_unit(target)
    out = {"psnr": psnr(p, t), "sharp_diff": sharp_diff(p, t)}
    if min(p.shape[-2:]) >= 11:
        out["ssim"] = ssim(p, t)
    return out
