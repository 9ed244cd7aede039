"""onnxruntime runner: the exported ONNX generator on the CPU or CUDA execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

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


class OnnxRuntimeRunner:
    """Runs an avg-rt ONNX file with onnxruntime.

    On CPU, tensors go through numpy without copies. On CUDA, I/O binding hands onnxruntime
    the torch tensors' device pointers, so a rollout never leaves the GPU; the output is a
    torch tensor allocated here and reused on each call of the same shape.

    The CUDA provider computes float32 convolutions in IEEE float32 unless `tf32=True` (its own
    default is TF32, off the FP32 parity limit by ~50x; see `TorchRunner`).
    """

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        threads: int = 0,
        tf32: bool = False,
    ):
        self.path = Path(path)
        self.device = torch.device(device)
        self.threads = threads
        self.tf32 = tf32
        self.name = (
            f"onnxrt-{self.device.type}"
            + ("-fp16" if ".fp16." in self.path.name else "")
            + ("-tf32" if tf32 else "")
        )
        self.history_len = 0
        self.own_thread_pool = True  # onnxruntime computes on its own threads, not torch's
        self.session: Any = None
        self._out: torch.Tensor | None = None

    def __enter__(self) -> Self:
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3
        # Spinning worker threads would compete with torch's window updates between steps.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers())
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
        meta = self.session.get_modelmeta().custom_metadata_map
        if "history_len" not in meta:
            raise RunnerError(self.path, "not an avg-rt ONNX export (no history_len metadata)")
        self.history_len = int(meta["history_len"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return self

    def providers(self) -> list[Any]:
        """The execution providers, with their options, that the session is created with."""
        if self.device.type == "cpu":
            return ["CPUExecutionProvider"]
        cuda = {"device_id": self.device.index or 0, "use_tf32": int(self.tf32)}
        return [("CUDAExecutionProvider", cuda)]

    def __exit__(self, *exc: object) -> None:
        self.session = None
        self._out = None

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """See `avg_rt.runners.Runner.predict`."""
        assert self.session is not None, "use the runner inside a `with` block"
        if self.device.type == "cpu":
            out = self.session.run([self.output_name], {self.input_name: history.numpy()})[0]
            return torch.from_numpy(out)
        b, _, h, w = history.shape
        if self._out is None or self._out.shape != (b, 3, h, w):
            self._out = torch.empty(b, 3, h, w, device=self.device)
        io = self.session.io_binding()
        index = self.device.index or 0
        io.bind_input(
            self.input_name, "cuda", index, np.float32, tuple(history.shape), history.data_ptr()
        )
        io.bind_output(
            self.output_name,
            "cuda",
            index,
            np.float32,
            tuple(self._out.shape),
            self._out.data_ptr(),
        )
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch
        self.session.run_with_iobinding(io)
        return self._out
