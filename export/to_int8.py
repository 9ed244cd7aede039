"""FP32 ONNX -> INT8 ONNX (Q/DQ form), calibrated on history windows of real frames.

onnxruntime's static quantization does the work (`quantize_static`, QDQ format, weights INT8
per output channel and symmetric). Two flavours, because the fastest integer kernels differ:
- `cpu`: activations UINT8 with a zero point (asymmetric). x86 integer kernels (VNNI) multiply
  u8 activations by s8 weights, and an asymmetric u8 range starting at 0 absorbs every ReLU,
  so consecutive convolutions chain as integer ops with no float step between them.
- `tensorrt`: activations INT8, symmetric (zero point 0), the only activation form TensorRT's
  explicit quantization accepts; the ReLUs stay in the graph.
Every convolution is quantized; the resizes, concatenations, adds and clamps stay floating
point. Chosen by measurement (`benchmarks/int8.py`, results/int8-choices.md): on the
delta-form small model shipped then, without its palette, at 210x160 with 2 threads,
quantizing every convolution ran 2.09x FP32 at batch 8 (2.02x at batch 1) and stayed 56.8 dB
from FP32 at its worst teacher-forced step; keeping each
scale's last convolution in float gained 10 dB of agreement (far beyond what 8-bit output
frames can show) for 1.96x; keeping the first ones too, 68.3 dB for 1.75x. MinMax calibration
won: percentile (99.999) clipped the sprites' rare colours (56.1 dB worst step), entropy gave
nearly MinMax's ranges.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from avg_rt.data.frames import RGB8, FrameFormat
from avg_rt.errors import ExportError

FLAVOURS = ("cpu", "tensorrt")
METHODS = ("minmax", "percentile", "entropy")
ACTIVATIONS = ("Relu", "LeakyRelu")  # G's hidden activations (`ModelConfig.g_leak`)


def calibration_windows(
    videos: Sequence[Any],
    history_len: int,
    count: int,
    half: str = "all",
    fmt: FrameFormat = RGB8,
) -> list[np.ndarray]:
    """`count` history windows (C * history_len, H, W) float32 in [-1, 1] from decoded videos
    (`avg_rt.data.sources.Video`, any frame sizes), spread evenly over every start position
    whose next frame differs from the last one (a still scene teaches no ranges). `half`:
    "first" takes only windows (with their next frame) inside the first half of each video,
    "second" only windows starting in the second half, so the two never share a frame."""
    starts = []
    for v in videos:
        n = len(v.frames)
        lo, hi = {"all": (0, n), "first": (0, n // 2), "second": (n // 2, n)}[half]
        starts += [
            (v, s)
            for s in range(lo, hi - history_len)
            if not np.array_equal(v.frames[s + history_len - 1], v.frames[s + history_len])
        ]
    if not starts:
        where = "" if half == "all" else f" in the {half} half of a video"
        raise ExportError("--calibrate", f"no {history_len + 1} frames with motion{where}")
    pick = np.linspace(0, len(starts) - 1, min(count, len(starts))).round().astype(int)
    out = []
    for i in pick:
        video, start = starts[i]
        w = np.asarray(video.frames[start : start + history_len])  # (T, H, W, C) of `fmt`
        t, h, wd, c = w.shape
        stacked = np.ascontiguousarray(w.transpose(0, 3, 1, 2).reshape(t * c, h, wd))
        out.append(fmt.to_model(torch.from_numpy(stacked)).numpy())
    return out


class _Windows:
    """onnxruntime's CalibrationDataReader over windows, one at a time, in strides
    (`set_range`), so that the calibrator merges the ranges of each stride and holds only one
    stride's activations (the paper preset's are ~1 GB per window at 210x160)."""

    def __init__(self, name: str, windows: Sequence[np.ndarray]):
        self.name, self.windows = name, windows
        self.set_range(0, len(windows))

    def __len__(self) -> int:
        return len(self.windows)

    def set_range(self, start_index: int, end_index: int) -> None:
        chosen = self.windows[start_index:end_index]
        self._it: Iterator[dict[str, np.ndarray]] = ({self.name: w[None]} for w in chosen)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _stride(n: int, most: int = 8) -> int:
    """The largest divisor of `n` up to `most` (onnxruntime wants strides that divide it)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _float_nodes(model: onnx.ModelProto) -> list[str]:
    """The convolutions left in floating point: each scale's last one, found as the Conv that
    no activation follows (whatever the form puts after it: an Add of the change, the Slices of
    the select form's change and logits, a tanh)."""
    relu_inputs = {i for n in model.graph.node if n.op_type in ACTIVATIONS for i in n.input}
    return [
        n.name for n in model.graph.node if n.op_type == "Conv" and n.output[0] not in relu_inputs
    ]


def _first_convs(model: onnx.ModelProto) -> list[str]:
    """Each scale's first convolution: the Conv fed by a Resize, a Concat or the graph input."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv"
        and producers.get(n.input[0], "input") in ("Resize", "Concat", "input")
    ]


def quantize(
    fp32_path: Path,
    out_path: Path,
    windows: Sequence[np.ndarray],
    flavour: str = "cpu",
    method: str = "minmax",
    keep_float: str = "none",
) -> Path:
    """Write the INT8 Q/DQ graph of `fp32_path` to `out_path` (not verified here).

    `keep_float`: "ends" (every scale's first and last convolution), "last" (last only) or
    "none" (every convolution quantized)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if flavour not in FLAVOURS:
        raise ExportError("--int8", f"unknown flavour {flavour!r} (choose from {FLAVOURS})")
    if not windows:
        raise ExportError("--calibrate", "no history windows to calibrate on")
    model = onnx.load(str(fp32_path))
    name = model.graph.input[0].name
    exclude = {
        "ends": _float_nodes(model) + _first_convs(model),
        "last": _float_nodes(model),
        "none": [],
    }[keep_float]
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    # Ranges computed per stride of at most 8 windows and merged: the activations of all
    # windows at once would not fit in memory for the paper preset. (Not
    # CalibMaxIntermediateOutputs: onnxruntime 1.32's MinMax calibrator drops each full batch
    # of outputs without computing its ranges.)
    extra: dict[str, Any] = {"WeightSymmetric": True, "CalibStridedMinMax": _stride(len(windows))}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if flavour == "tensorrt":  # biases stay float: TensorRT dequantizes INT8 (not INT32)
        extra |= {
            "ActivationSymmetric": True,
            "QDQKeepRemovableActivations": True,
            "QuantizeBias": False,
        }
    prepared = out_path.with_name(out_path.name + ".prep.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Windows(name, windows),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if flavour == "cpu" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", *ACTIVATIONS],
            nodes_to_exclude=exclude,
            calibrate_method=calibrate,
            extra_options=extra,
        )
    finally:
        prepared.unlink(missing_ok=True)
    quantized = onnx.load(str(out_path))
    onnx.helper.set_model_props(  # history_len, model_config, ... and how it was quantized
        quantized,
        {p.key: p.value for p in model.metadata_props}
        | {"precision": "int8", "int8_flavour": flavour, "int8_calibration": method},
    )
    onnx.save(quantized, str(out_path))
    return out_path
