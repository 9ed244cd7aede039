"""Native TensorRT runner: a plan built by `avg-rt export --engine`, on the current CUDA stream.

Inputs and outputs are torch CUDA tensors whose device pointers are handed to the execution
context (`set_tensor_address`), and `execute_async_v3` runs on torch's current stream, so a
rollout stays on the GPU and orders correctly with torch's own kernels. Where that stream is
a default stream (handle 0, 1 or 2; TensorRT adds synchronisations around an enqueue there),
the runner enqueues on a stream of its own, ordered after and before torch's by `wait_stream`.
`tensorrt` is imported only in `__enter__`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import torch

from avg_rt.data.frames import FrameFormat
from avg_rt.errors import RunnerError

REBUILD = "rebuild it here with: avg-rt export CHECKPOINT --engine --out DIR"
# The default stream's handles: 0 (torch's default), cudaStreamLegacy (1) and
# cudaStreamPerThread (2, torch built with per-thread default streams).
DEFAULT_STREAMS = (0, 1, 2)


class TensorRTRunner:
    """Runs an avg-rt TensorRT plan; the metadata JSON beside it must match this machine."""

    def __init__(self, path: str | Path, device: torch.device | str = "cuda"):
        self.path = Path(path)
        self.device = torch.device(device)
        self.name = "tensorrt"
        self.graph_safe = True  # enqueue is capturable after the first (warm-up) call
        self.history_len = 0
        self.min_frame_size = 1  # the engine's profile sets the real bounds
        self.frame_format = FrameFormat()
        self.meta: dict[str, Any] = {}
        self._context: Any = None
        self._out: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None  # the input shape the context is set to
        self._stream: Any = None  # torch.cuda.Stream for work asked on the legacy stream

    def __enter__(self) -> Self:
        try:
            import tensorrt as trt
        except ImportError:
            from avg_rt.export.to_trt import install_hint

            raise RunnerError(self.path, f"TensorRT is not installed: {install_hint()}") from None
        if self.device.type != "cuda":
            raise RunnerError(self.path, "TensorRT runs on CUDA only (use --device cuda)")
        meta_path = self.path.with_suffix(".json")
        if not meta_path.is_file():
            raise RunnerError(self.path, f"no metadata {meta_path.name} beside the plan; {REBUILD}")
        self.meta = json.loads(meta_path.read_text())
        if self.device.index is None:  # "cuda": the current GPU, named by its index
            self.device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(self.device)  # before _check_machine reads the current GPU
        self._check_machine(trt.__version__)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise RunnerError(self.path, f"TensorRT could not load the engine; {REBUILD}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RunnerError(
                self.path,
                "TensorRT could not create an execution context (out of GPU memory for the "
                "profile's largest shapes? export with smaller --batch/--height/--width)",
            )
        self._stream = torch.cuda.Stream(self.device)
        self.history_len = int(self.meta["history_len"])
        self.frame_format = FrameFormat.of_dict(self.meta.get("frames", {}))
        self.name = f"tensorrt-{self.meta['precision']}"
        self._input, self._output = self.meta["input"]["name"], self.meta["output"]["name"]
        return self

    def _check_machine(self, trt_version: str) -> None:
        from avg_rt.export.to_trt import gpu_identity

        here = {"tensorrt_version": trt_version, **gpu_identity()}
        built = {k: self.meta.get(k) for k in here}
        if built["tensorrt_version"] != here["tensorrt_version"] or (
            built["compute_capability"] != here["compute_capability"]
        ):
            raise RunnerError(
                self.path,
                f"engine built with TensorRT {built['tensorrt_version']} "
                f"for {built['gpu']} (sm {built['compute_capability']}), "
                f"this machine has TensorRT {here['tensorrt_version']} "
                f"on {here['gpu']} (sm {here['compute_capability']}); "
                f"{REBUILD}",
            )

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:  # work queued on our stream still uses the context
            self._stream.synchronize()
        self._context = self._engine = self._stream = None
        self._out = self._shape = None

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise RunnerError if `shape` (B, C, H, W) is outside the engine's profile."""
        b, c, h, w = shape
        want = self.frame_format.channels * self.history_len
        if c != want:
            raise RunnerError(self.path, f"input has {c} channels, the engine takes {want}")
        for name, v in (("batch", b), ("height", h), ("width", w)):
            lo, _, hi = self.meta["profile"][name]
            if not lo <= v <= hi:
                raise RunnerError(
                    self.path,
                    f"{name} {v} is outside the engine's profile "
                    f"{lo}..{hi}; export again with a wider --{name}",
                )

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """See `avg_rt.runners.Runner.predict`."""
        assert self._context is not None, "use the runner inside a `with` block"
        if (
            history.dtype != torch.float32
            or history.device != self.device
            or not history.is_contiguous()
        ):  # TensorRT reads the raw buffer: anything else would give silently wrong frames
            raise RunnerError(
                self.path,
                f"input must be contiguous float32 on {self.device}, got {history.dtype} on "
                f"{history.device}{'' if history.is_contiguous() else ', strided'}",
            )
        shape = tuple(history.shape)
        if shape != self._shape:  # None until TensorRT has taken a shape
            self.check_shape(shape)
            self._out = self._shape = None
            if not self._context.set_input_shape(self._input, shape):
                raise RunnerError(self.path, f"TensorRT refused the input shape {shape}")
            c = self.frame_format.channels
            self._out, self._shape = history.new_empty(shape[0], c, *shape[2:]), shape
        assert self._out is not None
        for name, tensor in ((self._input, history), (self._output, self._out)):
            # False for an address TensorRT cannot use, e.g. not 256-byte aligned (a view at
            # an offset)
            if not self._context.set_tensor_address(name, tensor.data_ptr()):
                raise RunnerError(self.path, f"TensorRT refused the address of {name}")
        current = torch.cuda.current_stream(self.device)
        if current.cuda_stream not in DEFAULT_STREAMS:  # a side stream, a CUDA graph capture
            self._enqueue(current.cuda_stream)
        else:  # a default stream: run on ours, ordered with torch's both ways
            self._stream.wait_stream(current)
            self._enqueue(self._stream.cuda_stream)
            current.wait_stream(self._stream)
        return self._out

    def _enqueue(self, stream: int) -> None:
        if not self._context.execute_async_v3(stream):
            raise RunnerError(self.path, "TensorRT execution failed")
