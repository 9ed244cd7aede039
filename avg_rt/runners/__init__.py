"""One protocol for every inference backend, and `open_runner` to pick one.

A runner is a context manager: construction only records what to load, `__enter__` loads the
weights, session or engine and allocates, `__exit__` frees. In between, `predict` maps a
history to the next frame. The rollout loop, the parity checks and the benchmarks are written
once, over this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import torch

from avg_rt.data.frames import FrameFormat
from avg_rt.errors import RunnerError


@runtime_checkable
class Runner(Protocol):
    """Predicts the next frame from a history of frames.

    `predict(history)`: history is (B, C * history_len, H, W) float32 in [-1, 1], contiguous,
    on `device`, oldest frame first (a frame's C channels together; C =
    `frame_format.channels`, 3 for RGB). Returns (B, C, H, W) float32 in [-1, 1] on
    `device`. The output may alias a buffer the runner reuses on its next call:
    copy it before calling `predict` again if you keep it.

    Runners may also set `graph_safe = True` when `predict` can be captured in a CUDA graph
    (no host synchronisation, stable buffers); `avg_rt.predict.rollout` then replays it.
    A runner that computes on CPU with a thread pool of its own sets `own_thread_pool = True`,
    and the rollout keeps torch's pool to one thread meanwhile.
    """

    name: str  # e.g. "torch-cpu", "onnxrt-cpu-fp16", "tensorrt-fp16"
    device: torch.device
    history_len: int
    min_frame_size: int  # smallest height or width the model takes (1: not known)
    frame_format: FrameFormat  # what its frames are (known once entered)

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def predict(self, history: torch.Tensor) -> torch.Tensor: ...


def frame_format(runner: Runner) -> FrameFormat:
    """What `runner`'s frames are (RGB 8-bit for a runner that does not say)."""
    return getattr(runner, "frame_format", None) or FrameFormat()


BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-trt", "tensorrt")


def open_runner(
    path: str | Path, backend: str = "auto", device: str = "cpu", tf32: bool = False
) -> Runner:
    """A runner for a model file (not yet entered).

    `backend="auto"` follows the file: a training checkpoint (.pt, .pth) runs on torch, an ONNX
    file on onnxruntime (with its CUDA graphs on CUDA), a TensorRT plan (.plan, .engine) on
    TensorRT; `backend="onnxruntime-trt"` runs an ONNX file on onnxruntime's TensorRT provider
    (CUDA only; engines cached in ~/.cache/avg-rt/ort-tensorrt). `tf32` lets torch and
    onnxruntime run float32 convolutions in TF32 on CUDA (faster on Ampere and newer, ~1e-3
    less exact); a TensorRT engine's precision was fixed when it was built.
    """
    path = Path(path)
    if not path.is_file():
        raise RunnerError(path, "no such model file")
    suffix = path.suffix.lower()
    if backend == "auto":
        match suffix:
            case ".pt" | ".pth":
                backend = "torch"
            case ".onnx":
                backend = "onnxruntime"
            case ".plan" | ".engine":
                backend = "tensorrt"
            case _:
                raise RunnerError(
                    path,
                    f"unknown model type {suffix!r}: expected a checkpoint "
                    f"(.pt), an ONNX file (.onnx) or a TensorRT plan (.plan)",
                )
    dev = resolve_device(device)
    match backend:
        case "torch":
            from avg_rt.runners.pyt import TorchRunner

            return TorchRunner(path, dev, tf32=tf32)
        case "onnxruntime":
            from avg_rt.runners.onnxrt import OnnxRuntimeRunner

            return OnnxRuntimeRunner(path, dev, tf32=tf32, cuda_graph=dev.type == "cuda")
        case "onnxruntime-trt":  # onnxruntime's TensorRT provider: engines built on first use
            from avg_rt.runners.onnxrt import OnnxRuntimeRunner

            return OnnxRuntimeRunner(path, dev, tf32=tf32, tensorrt=True)
        case "tensorrt":
            if tf32:
                raise RunnerError(path, "TF32 is not a runtime choice for a TensorRT engine")
            from avg_rt.runners.trt import TensorRTRunner

            return TensorRTRunner(path, dev)
    raise RunnerError(backend, f"unknown backend (choose from {', '.join(BACKENDS)})")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU raises RunnerError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = torch.device("meta")  # any name torch does not know
    if dev.type not in ("cpu", "cuda"):
        raise RunnerError(f"--device {device}", "must be cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        if dev.type == "cuda":
            raise RunnerError(f"--device {device}", "no CUDA GPU is available here (use cpu)")
    elif dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RunnerError(
            f"--device {device}", f"this machine has {torch.cuda.device_count()} CUDA GPUs"
        )
    return dev
