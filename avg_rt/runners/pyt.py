"""PyTorch runner: a checkpoint (or a live Generator) on CPU or CUDA, eager or compiled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import torch

from avg_rt.data.frames import FrameFormat
from avg_rt.model import Generator

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# On CPU a batch runs in chunks of about this many pixels (frames x H x W), at least one frame:
# past it the activations outgrow the caches and each frame gets slower. Measured with the
# small preset on the 2-core Xeon: 210x160 at batch 8, 25 frames/s whole and 35 frame by
# frame; 105x80 best in chunks of 4, 64x64 whole. Wider models want smaller chunks, so this
# never splits finer than they would like.
CPU_CHUNK_PIXELS = 2**15


class TorchRunner:
    """Runs a Generator in inference mode.

    `model` is a checkpoint path (loaded in `__enter__`) or a Generator, used as it is (moved to
    `device`). `compile=True` wraps the forward in `torch.compile`; `amp` ("bf16" or "fp16")
    runs it under autocast (CUDA only; inputs and outputs stay float32); `channels_last`
    stores weights and activations NHWC, which cuDNN prefers for FP16.

    Float32 convolutions are IEEE float32 unless `tf32=True`. PyTorch's own default lets cuDNN
    round their inputs to TF32 on Ampere and newer GPUs, which moves a single step of the
    trained small preset by up to ~5e-3 (emulated on CPU), 50x the FP32 parity limit.
    """

    def __init__(
        self,
        model: str | Path | Generator,
        device: torch.device | str = "cpu",
        compile: bool = False,
        amp: str = "none",
        channels_last: bool = False,
        tf32: bool = False,
    ):
        if amp != "none" and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
        self.source = model
        self.device = torch.device(device)
        self.compile, self.amp, self.channels_last = compile, amp, channels_last
        self.tf32 = tf32
        self.name = (
            f"torch-{self.device.type}"
            + ("-compiled" if compile else "")
            + (f"-{amp}" if amp != "none" else "")
            + ("-nhwc" if channels_last else "")
            + ("-tf32" if tf32 else "")
        )
        self.graph_safe = not compile  # eager steps can be captured as CUDA graphs
        self.history_len = model.cfg.history_len if isinstance(model, Generator) else 0
        self.min_frame_size = model.cfg.min_frame_size if isinstance(model, Generator) else 1
        self.frame_format = (
            FrameFormat.of(model.cfg) if isinstance(model, Generator) else FrameFormat()
        )
        self.model: Generator | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # model or compiled

    def __enter__(self) -> Self:
        if isinstance(self.source, Generator):
            model = self.source.to(self.device)
        else:
            from avg_rt.checkpoint import load_generator

            model, _ = load_generator(self.source, self.device)
        if self.channels_last:
            # torch's stubs lack Module.to(memory_format=...), which exists and is documented.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.history_len = model.cfg.history_len
        self.min_frame_size = model.cfg.min_frame_size
        self.frame_format = FrameFormat.of(model.cfg)
        self._forward = torch.compile(model) if self.compile else model
        return self

    def __exit__(self, *exc: object) -> None:
        self.model = None
        self._forward = None

    @torch.inference_mode()
    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """See `avg_rt.runners.Runner.predict`."""
        assert self._forward is not None, "use the runner inside a `with` block"
        amp = (
            torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])
            if self.amp != "none"
            else contextlib.nullcontext()
        )
        b, _, h, w = history.shape
        chunk = max(1, CPU_CHUNK_PIXELS // (h * w)) if self.device.type == "cpu" else b
        with amp, cudnn_tf32(self.tf32):
            if chunk >= b:
                return self._forward(history).float()
            return torch.cat([self._forward(part).float() for part in history.split(chunk)])


@contextlib.contextmanager
def cudnn_tf32(allowed: bool) -> Iterator[None]:
    """Whether cuDNN may run float32 convolutions in TF32 inside the block. A process-wide
    setting, restored on the way out so that runners of both kinds can alternate. (The legacy
    `allow_tf32` switch: PyTorch's newer per-operator `fp32_precision` settings make it, and
    torch.compile's reads of it, raise when the two APIs are mixed.)"""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before
