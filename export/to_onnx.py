"""Generator -> ONNX with dynamic batch, height and width, in FP32 or FP16.

Exporter: torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`), pinned. It is the
default of current torch, the TorchScript exporter is deprecated, and it records the resize
target sizes as shape arithmetic on the input (Shape -> Div -> Resize), so no frame size is
baked in. Opset: 18 by default, the oldest opset the dynamo exporter targets, which keeps the
file loadable by TensorRT 10/11 and older onnxruntime releases; `opset` overrides it.

Graph contract (also written into the model's metadata):
- input `history`: float32 (B, C * history_len, H, W) in [-1, 1], oldest frame first, a
  frame's C channels together (C = 3 by default: channels 0-2 are the oldest frame's R, G, B;
  the model config's `channels` otherwise, and its `value_range` says what [-1, 1] means);
- output `next_frame`: float32 (B, C, H, W) in [-1, 1].
FP16 graphs keep these FP32 inputs and outputs: the convolutions run in FP16 with Casts at each
scale's boundary, while the bilinear resizes and the final tanh stay FP32 (the resizes of the
[-1, 1] frames gain nothing from FP16 and the tanh is where FP16 saturation would show).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch

from avg_rt import __version__
from avg_rt.config import ModelConfig, to_dict
from avg_rt.errors import ExportError
from avg_rt.files import atomic_write_bytes
from avg_rt.model import Generator

INPUT_NAME = "history"
OUTPUT_NAME = "next_frame"
DEFAULT_OPSET = 18


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporter logs registry notes (e.g. torchvision ops) and warnings that are not ours.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx(
    generator: Generator,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Export `generator` (unchanged; a CPU copy is exported) with dynamic B, H and W.

    Returns the checked model with avg-rt metadata (history_len, config, layout, range,
    precision plus `metadata`). Raises ExportError for a stochastic generator, or if the
    checker or the symbolic-shape check fails.
    """
    cfg = generator.cfg
    check_exportable(cfg)
    model = copy.deepcopy(generator).cpu().eval().float()
    if fp16:
        model.convs_to(torch.float16)
    # An example away from 1 and from multiples of 8, so that nothing specialises on it.
    example = torch.rand(2, cfg.in_channels, 67, 93) * 2 - 1
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=cfg.min_frame_size),
        3: torch.export.Dim("width", min=cfg.min_frame_size),
    }
    with _quiet():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"history": dims},
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns an ONNXProgram
    proto = program.model_proto
    props = {
        "avg_rt_version": __version__,
        "history_len": str(cfg.history_len),
        "model_config": json.dumps(to_dict(cfg)),
        "precision": "fp16" if fp16 else "fp32",
        "input_layout": f"NCHW; {cfg.in_channels} channels = {cfg.history_len} frames of "
        f"{cfg.channels} channels, oldest first",
        "value_range": _value_range_text(cfg),
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, props)
    check_onnx(proto, fp16)
    return proto


def check_exportable(cfg: ModelConfig) -> None:
    """Raise ExportError for a generator that cannot be exported: a stochastic one."""
    if cfg.noise_channels:
        raise ExportError(
            f"noise_channels {cfg.noise_channels}",
            "a stochastic generator draws its noise in PyTorch; exporting it with a noise input "
            "is not built yet (roll it out with --backend torch)",
        )


def _value_range_text(cfg: ModelConfig) -> str:
    if cfg.value_range is None:
        return "[-1, 1] (uint8 x maps to x / 127.5 - 1)"
    lo, hi = cfg.value_range
    return f"[-1, 1] (frame value x in [{lo:g}, {hi:g}] maps to 2 (x - {lo:g}) / {hi - lo:g} - 1)"


def check_onnx(proto: onnx.ModelProto, fp16: bool) -> None:
    """Full ONNX check, symbolic H/W after shape inference, FP32 I/O, and (for `fp16`) FP16
    convolution weights; raises ExportError naming what is wrong."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError("onnx.checker", str(e).splitlines()[0]) from None
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    for value in (*inferred.graph.input, *inferred.graph.output):
        t = value.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(value.name, "inputs and outputs must stay float32")
        dims = t.shape.dim
        if any(d.HasField("dim_value") for d in (dims[0], dims[2], dims[3])):
            raise ExportError(value.name, f"batch, height and width must be symbolic, got {dims}")
    dtypes = conv_weight_dtypes(proto)
    want = onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT
    if not dtypes or set(dtypes) != {want}:
        raise ExportError(
            "Conv",
            f"expected every convolution weight in "
            f"{onnx.TensorProto.DataType.Name(want)}, got {sorted(set(dtypes))}",
        )


def conv_weight_dtypes(proto: onnx.ModelProto) -> list[int]:
    """ONNX data type of the weight initializer of every Conv node."""
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    return [
        inits[n.input[1]] for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in inits
    ]


def save_onnx(proto: onnx.ModelProto, path: str | Path, overwrite: bool = False) -> Path:
    """Serialize atomically (the generator of the paper preset is ~50 MB, under protobuf's 2 GB
    limit, so the weights stay inside the file)."""
    atomic_write_bytes(path, proto.SerializeToString(), overwrite)
    return Path(path)
