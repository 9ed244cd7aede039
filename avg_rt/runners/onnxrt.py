"""onnxruntime runner: the exported ONNX generator on the CPU, CUDA or TensorRT execution
provider."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from avg_rt.data.frames import FrameFormat
from avg_rt.errors import RunnerError


def import_onnxruntime() -> Any:
    """The onnxruntime module, or RunnerError naming the extras that provide it."""
    try:
        import onnxruntime
    except ImportError:
        raise RunnerError(
            "onnxruntime",
            "not installed: pip install 'avg-rt[cpu]' (or 'avg-rt[gpu]' on a CUDA machine)",
        ) from None
    return onnxruntime


@dataclass
class _Bound:
    """A session for one input shape, bound once to fixed device buffers."""

    session: Any
    io: Any
    input: torch.Tensor
    output: torch.Tensor


def ort_tensorrt_cache() -> Path:
    """Where onnxruntime's TensorRT provider keeps its engines and timing cache."""
    import os

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "avg-rt" / "ort-tensorrt"


class OnnxRuntimeRunner:
    """Runs an avg-rt ONNX file with onnxruntime.

    On CPU, tensors go through numpy without copies. On CUDA, I/O binding hands onnxruntime
    the torch tensors' device pointers, so a rollout never leaves the GPU; the output is a
    torch tensor allocated here and reused on each call of the same shape.

    `cuda_graph=True` (CUDA only) uses onnxruntime's own CUDA graphs: for each input shape a
    second session is made with that shape fixed (so its shape arithmetic folds away and every
    node runs on the CUDA provider, which graph capture requires) and bound once to fixed input
    and output buffers; each call copies the history into the input buffer and replays. If
    onnxruntime cannot do it for a shape, the runner warns and runs that shape without.

    The CUDA provider computes float32 convolutions in IEEE float32 unless `tf32=True` (its own
    default is TF32, off the FP32 parity limit by ~50x; see `TorchRunner`).
    """

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        threads: int = 0,
        tf32: bool = False,
        cuda_graph: bool = False,
        tensorrt: bool = False,
    ):
        self.path = Path(path)
        self.device = torch.device(device)
        if tensorrt and self.device.type != "cuda":
            raise RunnerError(self.path, "onnxruntime's TensorRT provider runs on CUDA only")
        self.tensorrt = tensorrt
        self.threads = threads
        self.tf32 = tf32
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self.name = (
            f"onnxrt-{'trt' if tensorrt else self.device.type}"
            + ("-fp16" if ".fp16." in self.path.name else "")
            + ("-int8" if ".int8" in self.path.name else "")
            + ("-sym" if ".int8-sym." in self.path.name else "")
            + ("-tf32" if tf32 else "")
        )
        self.history_len = 0
        self.min_frame_size = 1
        self.frame_format = FrameFormat()
        self.own_thread_pool = True  # onnxruntime computes on its own threads, not torch's
        self.session: Any = None
        self._out: torch.Tensor | None = None
        self._graphs: dict[tuple[int, ...], _Bound | None] = {}  # None: not possible

    def __enter__(self) -> Self:
        try:
            self.session = self._session()
        except Exception as e:  # onnxruntime raises its own exception types
            problem = f"onnxruntime cannot load it ({e})".splitlines()[0]
            raise RunnerError(self.path, problem) from None
        active = self.session.get_providers()  # the ones really in use, not the available ones
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in active:
            raise RunnerError(
                self.path,
                "onnxruntime has no working CUDA provider here (install "
                "onnxruntime-gpu, not onnxruntime, and check CUDA)",
            )
        if self.tensorrt and "TensorrtExecutionProvider" not in active:
            raise RunnerError(
                self.path,
                "onnxruntime's TensorRT provider did not load (onnxruntime-gpu with TensorRT "
                "10 libraries on the library path; avg-rt doctor checks)",
            )
        meta = self.session.get_modelmeta().custom_metadata_map
        if "history_len" not in meta:
            raise RunnerError(self.path, "not an avg-rt ONNX export (no history_len metadata)")
        self.history_len = int(meta["history_len"])
        try:
            model_config = json.loads(meta["model_config"])
            self.min_frame_size = 2 ** (len(model_config["g_maps"]) - 1)
            self.frame_format = FrameFormat.of_dict(model_config)
        except (KeyError, TypeError, ValueError):
            pass  # an older or hand-made export: the session reports sizes it cannot take
        channels = self.session.get_inputs()[0].shape[1]
        want = self.frame_format.channels * self.history_len
        if isinstance(channels, int) and channels != want:
            raise RunnerError(
                self.path,
                f"its input has {channels} channels, but its metadata says history_len "
                f"{self.history_len} of {self.frame_format.describe()} ({want} channels): "
                "not an avg-rt export",
            )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return self

    def providers(self, cuda_graph: bool = False) -> list[Any]:
        """The execution providers, with their options, that a session is created with."""
        if self.device.type == "cpu":
            return ["CPUExecutionProvider"]
        cuda = {"device_id": self.device.index or 0, "use_tf32": int(self.tf32)}
        if cuda_graph:
            cuda["enable_cuda_graph"] = 1
        providers: list[Any] = [("CUDAExecutionProvider", cuda)]
        if self.tensorrt:  # nodes TensorRT cannot take fall back to CUDA
            cache = ort_tensorrt_cache()
            trt = {
                "device_id": self.device.index or 0,
                # Engines (built per new input shape) and timings are cached across runs.
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }
            providers.insert(0, ("TensorrtExecutionProvider", trt))
        return providers

    def _session(self, shape: tuple[int, ...] | None = None, cuda_graph: bool = False) -> Any:
        """A session for any input shape, or with the symbolic dimensions fixed to `shape`'s."""
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3
        # Spinning worker threads would compete with torch's window updates between steps.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if shape is not None:
            for dim, size in zip(self.session.get_inputs()[0].shape, shape):
                if isinstance(dim, str):  # "batch", "height", "width"
                    opts.add_free_dimension_override_by_name(dim, size)
        return ort.InferenceSession(str(self.path), opts, providers=self.providers(cuda_graph))

    def __exit__(self, *exc: object) -> None:
        self.session = None
        self._out = None
        self._graphs.clear()

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """See `avg_rt.runners.Runner.predict`."""
        assert self.session is not None, "use the runner inside a `with` block"
        if self.device.type == "cpu":
            out = self.session.run([self.output_name], {self.input_name: history.numpy()})[0]
            return torch.from_numpy(out)
        shape = tuple(history.shape)
        graph = self._graph(shape) if self.cuda_graph else None
        if graph is not None:
            graph.input.copy_(history)
            torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch
            graph.session.run_with_iobinding(graph.io)
            return graph.output
        out_shape = (shape[0], self.frame_format.channels, *shape[2:])
        if self._out is None or tuple(self._out.shape) != out_shape:
            self._out = torch.empty(out_shape, device=self.device)
        io = self._bind(self.session, history, self._out)
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(io)
        return self._out

    def _bind(self, session: Any, history: torch.Tensor, out: torch.Tensor) -> Any:
        """I/O binding of `session` to the device buffers of `history` and `out`."""
        io = session.io_binding()
        index = self.device.index or 0
        for bind, name, t in (
            (io.bind_input, self.input_name, history),
            (io.bind_output, self.output_name, out),
        ):
            bind(name, "cuda", index, np.float32, tuple(t.shape), t.data_ptr())
        return io

    def _graph(self, shape: tuple[int, ...]) -> _Bound | None:
        """The CUDA-graph session for `shape`, made on first use; None if not possible."""
        if shape not in self._graphs:
            self._graphs.clear()  # one shape at a time: a rollout keeps its shape
            inp = torch.zeros(shape, device=self.device)
            out = torch.empty(shape[0], self.frame_format.channels, *shape[2:], device=self.device)
            torch.cuda.current_stream(self.device).synchronize()  # onnxruntime's own stream
            try:
                session = self._session(shape, cuda_graph=True)
                bound = _Bound(session, self._bind(session, inp, out), inp, out)
                for _ in range(2):  # a regular run, then the capture: failures show here
                    session.run_with_iobinding(bound.io)
                self._graphs[shape] = bound
            except Exception as e:  # onnxruntime raises its own exception types
                problem = str(e).splitlines()[0] if str(e) else type(e).__name__
                warnings.warn(
                    f"onnxruntime CUDA graph not possible for {shape}, running without: {problem}",
                    stacklevel=3,
                )
                self._graphs[shape] = None
        return self._graphs[shape]
