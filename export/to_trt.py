"""ONNX -> TensorRT engine (plan file + metadata JSON), with the name-based API of TensorRT 10/11.

Networks are created strongly typed: TensorRT 11 has no other kind (its FP16 builder flag is
gone) and TensorRT 10 honours the graph's types only with the STRONGLY_TYPED flag. So an FP16
engine comes from the FP16 ONNX graph, never from a builder flag, and the same file builds the
same engine on both versions. TF32, which TensorRT allows for float32 layers by default, is
switched off too: an FP32 engine computes in IEEE float32, as its name and its parity check
against PyTorch (1e-4) say. `tensorrt` is imported only here and in `runners/trt.py`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from avg_rt.export.shapes import ShapeRanges
from avg_rt.export.to_onnx import INPUT_NAME, OUTPUT_NAME

from avg_rt import __version__
from avg_rt.data.frames import FrameFormat
from avg_rt.errors import ExportError
from avg_rt.files import atomic_write_bytes, atomic_write_text


def install_hint() -> str:
    """The extra that brings TensorRT for this torch's CUDA major."""
    from avg_rt.doctor import gpu_extra

    return f"pip install {gpu_extra()} (TensorRT needs an NVIDIA GPU; avg-rt doctor checks)"


def import_tensorrt() -> Any:
    """The tensorrt module, or ExportError naming the extra that provides it."""
    try:
        import tensorrt
    except ImportError:
        raise ExportError("--engine", f"TensorRT is not installed: {install_hint()}") from None
    return tensorrt


def gpu_identity() -> dict[str, str]:
    """Name and compute capability of the current CUDA GPU (what an engine is tied to)."""
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _use_timing_cache(config: Any, path: Path) -> None:
    """Give the builder the timing cache at `path`, or an empty one where there is none or
    TensorRT rejects it (another GPU or TensorRT version, a damaged file: `set_timing_cache`
    returns False and `create_timing_cache` may give None)."""
    if path.is_file():
        cache = config.create_timing_cache(path.read_bytes())
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return
        warnings.warn(
            f"{path}: TensorRT rejected this timing cache; building without it", stacklevel=3
        )
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(path, "TensorRT could not create a timing cache")


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    ranges: ShapeRanges,
    channels: int,
    history_len: int,
    precision: str,
    timing_cache: Path,
    workspace_bytes: int = 4 << 30,
    checkpoint_sha256: str = "",
    frames: FrameFormat | None = None,
) -> dict[str, Any]:
    """Build `plan_path` and `plan_path.with_suffix('.json')` from `onnx_path`.

    One optimization profile covers `ranges` (kernels tuned for `opt`). The timing cache at
    `timing_cache` is read if present and written back, so rebuilds are faster. Returns the
    metadata written beside the plan (with `frames`: what a frame is, RGB 8-bit by default).
    """
    frames = frames or FrameFormat()
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # ignored name in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(onnx_path, f"TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.clear_flag(trt.BuilderFlag.TF32)  # on by default in TensorRT 10 and 11
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *(ranges.shape(w, channels) for w in ("min", "opt", "max")))
    config.add_optimization_profile(profile)
    _use_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(onnx_path, "TensorRT could not build an engine (see its log above)")
    cache = config.get_timing_cache()
    if cache is not None:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()), overwrite=True)
    atomic_write_bytes(plan_path, bytes(plan))
    meta = {
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": channels,
            "range": [-1, 1],
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": frames.channels,
            "range": [-1, 1],
        },
        "profile": {
            name: [r.min, r.opt, r.max]
            for name, r in (
                ("batch", ranges.batch),
                ("height", ranges.height),
                ("width", ranges.width),
            )
        },
        "precision": precision,
        "history_len": history_len,
        "frames": frames.to_dict(),
        "tensorrt_version": trt.__version__,
        **gpu_identity(),
        "onnx_sha256": sha256(onnx_path),
        "checkpoint_sha256": checkpoint_sha256,
        "avg_rt_version": __version__,
    }
    atomic_write_text(plan_path.with_suffix(".json"), json.dumps(meta, indent=2))
    return meta
