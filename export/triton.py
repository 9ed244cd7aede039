"""A Triton Inference Server model repository for the exported artefacts.

Layout: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/1/model.onnx` (onnxruntime backend)
or `1/model.plan` (tensorrt backend). Batching is Triton's (`max_batch_size` from the declared
batch range), so the dims leave the batch out: input [C * history_len, -1, -1], output
[C, -1, -1] (C: channels per frame, 3 for RGB). A rollout is a client loop over this one-step
model (see the README).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from avg_rt.export.shapes import ShapeRanges
from avg_rt.export.to_onnx import INPUT_NAME, OUTPUT_NAME

PLATFORMS = {".onnx": ("onnxruntime_onnx", "model.onnx"), ".plan": ("tensorrt_plan", "model.plan")}


def model_config(
    name: str, platform: str, channels: int, ranges: ShapeRanges, out_channels: int = 3
) -> str:
    """config.pbtxt text for one model."""
    return f"""name: "{name}"
platform: "{platform}"
max_batch_size: {ranges.batch.max}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {channels}, -1, -1 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {out_channels}, -1, -1 ]
  }}
]
dynamic_batching {{ }}
instance_group [ {{ kind: KIND_GPU, count: 1 }} ]
"""


def write_repository(
    repo: Path, artefacts: list[Path], channels: int, ranges: ShapeRanges, out_channels: int = 3
) -> list[str]:
    """Copy each artefact (`generator[.fp16|.int8|.int8-sym].onnx|.plan`) into `repo` as its
    own model, named `avg_rt_<precision>_<backend>` (precision fp32, fp16, int8 or int8sym);
    returns the model names."""
    names = []
    for path in artefacts:
        platform, filename = PLATFORMS[path.suffix]
        precision = path.name.split(".")[1].replace("-", "") if path.name.count(".") > 1 else "fp32"
        name = f"avg_rt_{precision}_{'onnx' if path.suffix == '.onnx' else 'trt'}"
        (repo / name / "1").mkdir(parents=True)
        shutil.copyfile(path, repo / name / "1" / filename)
        (repo / name / "config.pbtxt").write_text(
            model_config(name, platform, channels, ranges, out_channels)
        )
        if path.suffix == ".plan":  # the TensorRT version and GPU the plan is bound to
            meta = json.loads(path.with_suffix(".json").read_text())
            (repo / name / "tensorrt.json").write_text(json.dumps(plan_record(meta), indent=2))
        names.append(name)
    return names


def plan_record(meta: dict[str, Any]) -> dict[str, Any]:
    """What a Triton deployment must match for a plan to load: Triton's tensorrt backend loads
    only plans built by exactly its own TensorRT version, on the same GPU architecture."""
    return {
        "tensorrt_version": meta["tensorrt_version"],
        "gpu": meta["gpu"],
        "compute_capability": meta["compute_capability"],
        "note": "serve with a Triton release whose TensorRT is exactly tensorrt_version (NVIDIA's "
        "frameworks support matrix lists it per release), on a GPU of this compute capability; "
        "otherwise rebuild with avg-rt export on the serving machine",
    }
