"""Multi-scale generator and discriminator of Mathieu, Couprie & LeCun (ICLR 2016).

Frames are float tensors in [-1, 1], NCHW. The generator takes the history as one tensor of
C * history_len channels (oldest frame first, a frame's C channels together: RGB by
default) and predicts the next frame.
It is fully convolutional: every resize goes to a size computed from the input shape
(int(H / 2^k), int(W / 2^k)), never by a fixed factor, so any frame size of at least
2^(n_scales - 1) pixels works and exports with dynamic height and width.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from avg_rt.config import ModelConfig, training_form
from avg_rt.data.frames import FrameFormat


def scale_sizes(height: int, width: int, n_scales: int) -> list[tuple[int, int]]:
    """Frame size of each scale, coarsest first: (H // 2^k, W // 2^k) for k = n-1 .. 0."""
    return [(height // 2**k, width // 2**k) for k in reversed(range(n_scales))]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to `size`, computed in float32 (FP16 graphs keep it)."""
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)


def pyramid(x: torch.Tensor, n_scales: int) -> list[torch.Tensor]:
    """`x` (B, C, H, W) resized to every scale, coarsest first; the finest is `x` itself."""
    sizes = scale_sizes(x.shape[-2], x.shape[-1], n_scales)
    return [resize(x, size) for size in sizes[:-1]] + [x]


def _init(module: nn.Module, cfg: ModelConfig, std: float = 0.01, bias: float = 0.1) -> None:
    """The TF project's init (weights truncated normal, stddev 0.01; biases 0.1) when
    cfg.init == "tf"; PyTorch's default init otherwise."""
    if cfg.init != "tf":
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)


class ScaleGenerator(nn.Module):
    """One scale: 'same' convolutions with ReLU (LeakyReLU of slope `leak` when > 0) between
    them; returns pre-tanh values."""

    def __init__(
        self,
        in_channels: int,
        maps: tuple[int, ...],
        kernels: tuple[int, ...],
        out_channels: int,
        leak: float = 0.0,
    ):
        super().__init__()
        widths = (in_channels, *maps, out_channels)
        layers: list[nn.Module] = []
        for i, k in enumerate(kernels):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], k, padding=k // 2))
            if i < len(kernels) - 1:
                layers.append(nn.LeakyReLU(leak) if leak else nn.ReLU())
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The convolutions run in the dtype of their weights (float16 in an FP16 export);
        # the result returns to float32 before the tanh and the next resize.
        first = cast(nn.Conv2d, self.convs[0])
        return self.convs(x.to(first.weight.dtype)).float()  # (B, C, h, w)


# Select form: the starting logit of the last history frame (the others start at 0), so a new
# generator blends 98% of the last frame at every scale (with 4 history frames; 95% with 8):
# nearly the delta form's "nothing changes", with gradient left for the other frames' weights.
SELECT_LAST_LOGIT = 5.0


def blend_history(
    history: torch.Tensor,
    logits: torch.Tensor,
    hard: bool = False,
    straight_through: bool = False,
    window: int = 1,
) -> torch.Tensor:
    """Per pixel, the softmax(`logits`)-weighted sum of the frames of `history`: (B, C * L,
    h, w) and (B, L, h, w) -> (B, C, h, w), in float32.

    `window` K > 1: the sources are every frame's values at the K x K offsets around the pixel
    (the frame's edge repeated beyond it), logits (B, L * K * K, h, w), frame by frame, offsets
    row by row: logit l * K * K + i * K + j takes frame l at (y + i - K // 2, x + j - K // 2).

    `hard`: each pixel takes the source of its largest logit alone (one-hot weights; of tied
    logits, as rounding to FP16, BF16 or INT8 can make, the first in that order: the oldest
    frame, with a window at its first offset), so a pick is an
    exact earlier value, never a blend of two colours. `straight_through` (training, with
    `hard`): the forward pass is that pick, the gradient the softmax's, so the logits still
    learn."""
    x = logits.float()
    if hard:
        frame = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        weights = (frame == x.argmax(1, keepdim=True)).float()  # argmax: the first of ties
        if straight_through:
            soft = torch.softmax(x, dim=1)
            weights = soft + (weights - soft).detach()
    else:
        weights = torch.softmax(x, dim=1)
    frames = history.float().unflatten(1, (logits.shape[1] // window**2, -1))  # (B, L, C, h, w)
    if window > 1:
        frames = shifted(frames, window)
    return (weights.unsqueeze(2) * frames).sum(1)


def shifted(frames: torch.Tensor, window: int) -> torch.Tensor:
    """(B, L, C, h, w) -> (B, L * K * K, C, h, w): each frame at every offset of the K x K
    `window`, in `blend_history`'s order; Pad (edge) and Slice in an ONNX graph."""
    b, n, c, h, w = frames.shape
    r = window // 2
    padded = F.pad(frames.flatten(1, 2), (r, r, r, r), mode="replicate").unflatten(1, (n, c))
    views = [padded[..., i : i + h, j : j + w] for i in range(window) for j in range(window)]
    return torch.stack(views, 2).flatten(1, 2)


def clip_unit(x: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """Clamp to [-1, 1]. `straight_through` (training): the gradient passes as if unclamped,
    so a pixel pushed past the range is still pulled back by the loss instead of going dead."""
    clamped = x.clamp(-1, 1)
    return x + (clamped - x).detach() if straight_through else clamped


def largest_change(pred: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Per pixel, the largest change over the channels from `last` to `pred` (B, C, H, W):
    (B, 1, H, W), in model units ([-1, 1])."""
    return (pred - last).abs().amax(dim=1, keepdim=True)


def levels(n: float) -> float:
    """`n` levels (1/255 of the value range) in model units ([-1, 1]): the unit of the
    inference options `deadzone` and `palette_radius`."""
    return n * 2 / 255


def apply_deadzone(pred: torch.Tensor, last: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """`pred` (B, C, H, W) with the pixels whose change from `last` is below `cfg.deadzone`
    levels in every channel set to `last`."""
    return torch.where(largest_change(pred, last) < levels(cfg.deadzone), last, pred)


def palette_tensor(cfg: ModelConfig) -> torch.Tensor:
    """`cfg.palette` in model units, (K, C) float32 (K = 0 without one)."""
    colours = torch.tensor(cfg.palette, dtype=torch.float32).reshape(-1, cfg.channels)
    return FrameFormat.of(cfg).to_model(colours)


def palette_scores(pred: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(B, H, W, K): each pixel's squared distance to each of `colours` (K, C), less the
    pixel's own squared norm (the same for every colour); a MatMul in an ONNX graph."""
    return (colours * colours).sum(1) - 2 * pred.movedim(1, -1) @ colours.T


def snap_to_palette(pred: torch.Tensor, colours: torch.Tensor, radius: float = 0.0) -> torch.Tensor:
    """`pred` (B, C, H, W) with every pixel replaced by the nearest of `colours` (K, C)
    (Euclidean; ties go to the first), or (`radius` > 0, model units) only the pixels closer
    than `radius` to it: MatMul, ArgMin and Gather in an ONNX graph. Always in float32, also
    under autocast: a half-precision distance picks other colours."""
    with torch.autocast(pred.device.type, enabled=False):
        pred, colours = pred.float(), colours.float()
        scores = palette_scores(pred, colours)
        snapped = F.embedding(scores.argmin(-1), colours).movedim(-1, 1)
        if not radius:
            return snapped
        return torch.where(nearest_distance(pred, scores) < radius, snapped, pred)


def nearest_distance(pred: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): each pixel's distance to its nearest colour, from `palette_scores`."""
    squared = scores.amin(-1)[:, None] + (pred * pred).sum(1, keepdim=True)
    return squared.clamp(min=0).sqrt()


class Generator(nn.Module):
    """Coarse-to-fine generator: (B, C * history_len, H, W) in [-1, 1] -> (B, C, H, W), C =
    `cfg.channels`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.scales = nn.ModuleList(
            ScaleGenerator(cfg.g_in_channels(k), maps, kernels, cfg.g_out_channels, cfg.g_leak)
            for k, (maps, kernels) in enumerate(zip(cfg.g_maps, cfg.g_kernels))
        )
        _init(self, cfg)
        # Not in the state dict: it is the config's, and checkpoints stay loadable without it.
        self.register_buffer("palette", palette_tensor(cfg), persistent=False)
        if cfg.delta:
            # Start as "nothing changes": every scale outputs its last input frame exactly.
            for net in self.scales:
                last = cast(nn.Conv2d, cast(ScaleGenerator, net).convs[-1])
                nn.init.zeros_(last.weight)
                nn.init.zeros_(cast(torch.Tensor, last.bias))
                if cfg.select:  # the last frame's own pixel: its centre offset
                    n, frames, k = cfg.blend_sources, cfg.history_len, cfg.select_window
                    # With a window, the logit that gives it the weight it has without one.
                    logit = SELECT_LAST_LOGIT + math.log(max(n - 1, 1) / max(frames - 1, 1))
                    with torch.no_grad():
                        centre = cfg.channels + n - (k * k + 1) // 2
                        cast(torch.Tensor, last.bias)[centre] = logit

    def draw_noise(self, history: torch.Tensor) -> torch.Tensor | None:
        """Standard normal noise maps for `history` (B, C * history_len, H, W): (B,
        noise_channels, h, w) at the coarsest scale's size; None for a deterministic
        generator."""
        n = self.cfg.noise_channels
        if not n:
            return None
        h, w = scale_sizes(history.shape[-2], history.shape[-1], len(self.scales))[0]
        return torch.randn(history.shape[0], n, h, w, device=history.device)

    def forward_scales(
        self, history: torch.Tensor, noise: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Predictions of every scale, coarsest first; each (B, C, H // 2^k, W // 2^k).
        `noise`: a stochastic generator's maps (`draw_noise`; None: new ones are drawn).

        Through a DistributedDataParallel wrapper, call `ddp(history, all_scales=True)`."""
        inputs = pyramid(history, len(self.scales))
        z = self.draw_noise(history) if noise is None else noise
        preds: list[torch.Tensor] = []
        c = self.cfg.channels
        for net, x in zip(self.scales, inputs):
            size = (x.shape[-2], x.shape[-1])
            up = resize(preds[-1], size) if preds else None
            # C * history_len channels, then the noise maps, then the coarser prediction (C)
            noise_maps = None if z is None else resize(z, size)
            extra = [t for t in (noise_maps, up) if t is not None]
            out = net(torch.cat([x, *extra], dim=1) if extra else x)
            if self.cfg.select:  # a change to a per-pixel blend of the history frames
                hard = self.cfg.select_hard
                k = self.cfg.select_window
                base = blend_history(x, out[:, c:], hard, self.training, window=k)
                preds.append(clip_unit(base + out[:, :c], straight_through=self.training))
            elif self.cfg.delta:  # a change to the last input frame at this scale
                preds.append(clip_unit(x[:, -c:] + out, straight_through=self.training))
            elif up is not None and self.cfg.residual:  # authors' form: refine the coarser one
                preds.append(torch.tanh(out + up))
            else:
                preds.append(torch.tanh(out))
        return preds

    def forward(
        self, history: torch.Tensor, all_scales: bool = False, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next frame, (B, C, H, W) float32 in [-1, 1] (`all_scales`: the list of
        `forward_scales`, the only form a DDP wrapper can return; `noise`: as there)."""
        preds = self.forward_scales(history, noise)
        if self.cfg.deadzone and not self.training:
            preds[-1] = apply_deadzone(preds[-1], history[:, -self.cfg.channels :], self.cfg)
        if self.cfg.palette and not self.training:
            colours = cast(torch.Tensor, self.palette)
            preds[-1] = snap_to_palette(preds[-1], colours, levels(self.cfg.palette_radius))
        return preds if all_scales else preds[-1]  # type: ignore[return-value]

    def network_only(self) -> Generator:
        """A Generator with these weights and every inference-only option off
        (`config.training_form`): the raw network's prediction, as training sees it."""
        g = Generator(training_form(self.cfg))
        g.load_state_dict(self.state_dict())
        return g.train(self.training)

    def finest_last_conv(self) -> nn.Conv2d:
        """The last convolution of the finest scale: the layer next to the output."""
        return cast(nn.Conv2d, cast(ScaleGenerator, self.scales[-1]).convs[-1])

    def convs_to(self, dtype: torch.dtype) -> Generator:
        """Cast only the convolution weights (resizes and tanh stay float32); returns self."""
        for net in self.scales:
            net.convs.to(dtype)
        return self


def widen_noise(state: dict[str, torch.Tensor], old: ModelConfig, new: ModelConfig) -> None:
    """Turn generator `state` of config `old` into one of `new`, which has more noise
    channels (and is otherwise the same network): each scale's first convolution gets zero
    weights for the new noise maps, so the widened generator predicts as before (to float
    rounding) until training teaches it to use them. In place."""
    extra = new.noise_channels - old.noise_channels
    at = old.in_channels + old.noise_channels  # the new maps go after the history and old maps
    for k in range(new.n_scales):
        key = f"scales.{k}.convs.0.weight"
        w = state[key]
        zeros = w.new_zeros(w.shape[0], extra, *w.shape[2:])
        state[key] = torch.cat([w[:, :at], zeros, w[:, at:]], dim=1)


class ScaleDiscriminator(nn.Module):
    """One scale: valid convolutions + ReLU, one 2x2 max pool, fully connected head."""

    def __init__(
        self,
        in_channels: int,
        side: int,
        maps: tuple[int, ...],
        kernels: tuple[int, ...],
        fc: tuple[int, ...],
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, k in zip((in_channels, *maps), maps, kernels):
            layers += [nn.Conv2d(cin, cout, k), nn.ReLU()]
            side -= k - 1
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # TF 'SAME' pooling keeps odd borders
        side = -(-side // 2)
        widths = (maps[-1] * side * side, *fc, 1)
        head: list[nn.Module] = []
        for i in range(len(widths) - 1):
            head.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                head.append(nn.ReLU())
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, side, side) -> logits (B,); the sigmoid lives in the loss (stable BCE)."""
        return self.head(self.pool(self.convs(x)).flatten(1)).squeeze(1)


class Discriminator(nn.Module):
    """One ScaleDiscriminator per generator scale, for patch_size x patch_size clips only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        in_channels = cfg.channels + (cfg.in_channels if cfg.d_conditional else 0)
        n = cfg.n_scales
        self.scales = nn.ModuleList(
            ScaleDiscriminator(in_channels, cfg.patch_size // 2 ** (n - 1 - k), *spec)
            for k, spec in enumerate(zip(cfg.d_maps, cfg.d_kernels, cfg.d_fc))
        )
        _init(self, cfg)
        if cfg.d_spectral_norm:  # after the init, which writes the unnormalised weights
            for m in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                spectral_norm(m)

    def forward(
        self, frames: list[torch.Tensor], history: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Logits (B,) per scale for `frames` (coarsest first, (B, C, h_k, w_k) each).

        With `cfg.d_conditional`, `history` (the input pyramid, (B, C * history_len, h_k, w_k)
        per scale) is placed before each frame, as in the paper.
        """
        if self.cfg.d_conditional:
            if history is None:
                raise ValueError("a conditional discriminator needs the history pyramid")
            frames = [torch.cat([h, f], dim=1) for h, f in zip(history, frames)]
        return [net(f) for net, f in zip(self.scales, frames)]


def count_params(module: nn.Module) -> int:
    """Number of parameters (weights and biases)."""
    return sum(p.numel() for p in module.parameters())


def generator_flops(cfg: ModelConfig, height: int, width: int) -> int:
    """Floating-point operations (2 per multiply-add) of one generator pass on one frame.

    Counts the convolutions, which are all but a negligible part of the cost (resizes and
    activations are left out).
    """
    macs = 0
    for k, (maps, kernels) in enumerate(zip(cfg.g_maps, cfg.g_kernels)):
        h, w = scale_sizes(height, width, cfg.n_scales)[k]
        widths = (cfg.g_in_channels(k), *maps, cfg.g_out_channels)
        for i, ks in enumerate(kernels):
            macs += h * w * ks * ks * widths[i] * widths[i + 1]
    return 2 * macs
