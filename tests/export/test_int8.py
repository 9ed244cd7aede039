"""INT8 export: calibrated on real frames, verified against PyTorch, in both Q/DQ forms."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from avg_rt.export.to_int8 import calibration_windows, quantize
from conftest import moving_frames, needs_tensorrt, write_frames
from typer.testing import CliRunner

from avg_rt.cli import app
from avg_rt.data.sources import Video
from avg_rt.predict import rollout
from avg_rt.runners import open_runner

cli = CliRunner()
RANGES = ["--batch", "1:1:2", "--height", "32:40:64", "--width", "32:48:64"]


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    for i in range(2):
        write_frames(root / f"video{i}", moving_frames(t=16, seed=i))
    return root


@pytest.fixture(scope="module")
def int8_export(small_checkpoint, frames_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "exported"
    args = ["export", str(small_checkpoint), "-o", str(out), *RANGES, "--no-engine", "--triton"]
    result = cli.invoke(
        app, [*args, "--int8", "--calibrate", str(frames_dir), "--verify-steps", "8"]
    )
    assert result.exit_code == 0, result.output
    assert "quantizing generator.int8.onnx" in result.stderr
    return out


def test_int8_export_is_verified_on_held_out_real_frames(int8_export):
    summary = json.loads((int8_export / "verification.json").read_text())
    reports = {r["artefact"]: r for r in summary["reports"]}
    for name in ("generator.int8.onnx", "generator.int8-sym.onnx"):
        assert (int8_export / name).is_file()
        report = reports[name]
        assert report["precision"] == "int8" and report["passed"]
        kinds = [c["kind"] for c in report["checks"]]
        assert kinds.count("step") >= 3 and "forced" in kinds and "rollout" in kinds
        forced = next(c for c in report["checks"] if c["kind"] == "forced")
        assert len(forced["per_step"]) == 8 and forced["tolerance"] == ">=38dB"
        assert forced["shape"] == [1, 12, 40, 48]  # the real frames' own size


def test_int8_graph_for_tensorrt_is_a_triton_model(int8_export):
    """Triton's models run on GPUs: the CPU INT8 form is left out."""
    models = sorted(p.name for p in (int8_export / "model_repository").iterdir())
    assert models == ["avg_rt_fp32_onnx", "avg_rt_int8sym_onnx"]


def _zero_points(path):
    """{activation tensor: zero point dtype and values} of a Q/DQ graph."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            out[n.input[0]] = inits[n.input[2]]
    return out


def test_int8_forms_cpu_uint8_asymmetric_tensorrt_int8_symmetric(int8_export):
    cpu = _zero_points(int8_export / "generator.int8.onnx")
    sym = _zero_points(int8_export / "generator.int8-sym.onnx")
    assert cpu and all(z.dtype == np.uint8 for z in cpu.values())
    assert sym and all(z.dtype == np.int8 and not z.any() for z in sym.values())
    # TensorRT dequantizes INT8, not INT32: the TensorRT form keeps its biases float.
    model = onnx.load(str(int8_export / "generator.int8-sym.onnx"))
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    biases = [n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert biases and not any(produced_by.get(b) == "DequantizeLinear" for b in biases)
    # The CPU form folds every ReLU into its quantized range; TensorRT's keeps them.
    ops = {
        name: [n.op_type for n in onnx.load(str(int8_export / name)).graph.node]
        for name in ("generator.int8.onnx", "generator.int8-sym.onnx")
    }
    assert "Relu" not in ops["generator.int8.onnx"] and "Relu" in ops["generator.int8-sym.onnx"]
    meta = {
        p.key: p.value for p in onnx.load(str(int8_export / "generator.int8.onnx")).metadata_props
    }
    assert meta["precision"] == "int8" and meta["history_len"] == "4"


def test_int8_model_rolls_out_like_any_onnx(int8_export):
    history = torch.from_numpy(moving_frames(t=4, seed=5)).permute(0, 3, 1, 2)[None]
    history = history.float() / 127.5 - 1
    with open_runner(int8_export / "generator.int8.onnx") as runner:
        assert runner.name == "onnxrt-cpu-int8"
        preds = rollout(runner, history, steps=3)
    assert preds.shape == (1, 3, 3, 40, 48) and torch.isfinite(preds).all()


def test_every_convolution_is_integer_and_the_frame_update_is_float(int8_export):
    """Every Conv takes INT8 weights and quantized inputs; the change is added to the last
    frame and clamped in floating point (no Q/DQ around the Add and Clip)."""
    model = onnx.load(str(int8_export / "generator.int8.onnx"))
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 20  # the small preset's
    assert all(produced_by.get(i) == "DequantizeLinear" for n in convs for i in n.input[:2])
    updates = {o for n in model.graph.node if n.op_type in ("Add", "Clip") for o in n.output}
    assert len(updates) == 8
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert not updates & quantized
    assert model.graph.output[0].name in updates  # the clamped frame, in float


def test_int8_needs_real_frames(small_checkpoint, tmp_path):
    result = cli.invoke(
        app, ["export", str(small_checkpoint), "-o", str(tmp_path / "o"), *RANGES, "--int8"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --int8: needs --calibrate VIDEO_DIR: real frames to calibrate on"
    )
    assert not (tmp_path / "o").exists()


def test_calibrate_without_int8_is_refused(small_checkpoint, frames_dir, tmp_path):
    args = ["export", str(small_checkpoint), "-o", str(tmp_path / "o"), "--calibrate"]
    result = cli.invoke(app, [*args, str(frames_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --calibrate: calibrates INT8 graphs: add --int8"


def test_calibration_on_a_bad_file_is_one_line_and_writes_nothing(small_checkpoint, tmp_path):
    bad = tmp_path / "videos"
    bad.mkdir()
    (bad / "clip.mp4").write_bytes(b"not a video")
    out = tmp_path / "o"
    result = cli.invoke(
        app,
        [
            "export",
            str(small_checkpoint),
            "-o",
            str(out),
            *RANGES,
            "--int8",
            "--calibrate",
            str(bad),
        ],
    )
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "clip.mp4" in result.output and not out.exists()


def test_calibration_windows_skip_still_frames_and_keep_sizes():
    moving = moving_frames(t=10)
    still = np.repeat(moving[:1], 10, axis=0)
    big = moving_frames(t=10, h=64)
    videos = [Video("still", still), Video("moving", moving), Video("big", big)]
    windows = calibration_windows(videos, 4, 100)
    assert len(windows) == 12  # 6 starts each of the two moving videos, none of the still one
    assert {w.shape for w in windows} == {(12, 40, 48), (12, 64, 48)}
    assert all(w.dtype == np.float32 and -1 <= w.min() and w.max() <= 1 for w in windows)


def test_calibration_and_verification_halves_share_no_frame():
    frames = moving_frames(t=20)
    frames[:, 0, 0, 0] = np.arange(20)  # each frame marked with its index
    video = Video("v", frames)
    first = calibration_windows([video], 4, 100, "first")
    second = calibration_windows([video], 4, 100, "second")

    def indices(windows):
        return {round((w[c, 0, 0] + 1) * 127.5) for w in windows for c in range(0, 12, 3)}

    assert indices(first) == set(range(9)) and indices(second) == set(range(10, 19))


@pytest.mark.parametrize(
    "form, leak", [("plain", 0), ("delta", 0), ("select", 0), ("select", 0.2), ("select-hard", 0)]
)
def test_keep_float_last_leaves_each_scales_last_convolution_in_float(form, leak, tmp_path):
    """`keep_float="last"` finds one last convolution per scale in every form (the select
    form's feeds Slices, not an Add) and with either activation (ReLU, LeakyReLU: `g_leak`),
    and leaves exactly those unquantized."""

    from avg_rt.export.to_int8 import _float_nodes
    from avg_rt.export.to_onnx import save_onnx, to_onnx
    from conftest import busy_generator

    from avg_rt.config import PRESETS, with_form

    torch.manual_seed(0)
    cfg = dataclasses.replace(with_form(PRESETS["small"].model, form), g_leak=leak)
    fp32 = save_onnx(to_onnx(busy_generator(cfg).eval()), tmp_path / "g.onnx")
    last = _float_nodes(onnx.load(str(fp32)))
    assert len(last) == cfg.n_scales
    windows = [
        np.random.default_rng(i).uniform(-1, 1, (12, 32, 32)).astype(np.float32) for i in range(2)
    ]
    model = onnx.load(str(quantize(fp32, tmp_path / "q.onnx", windows, keep_float="last")))
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    float_convs = [n for n in convs if produced_by.get(n.input[1]) != "DequantizeLinear"]
    assert len(convs) == 20 and len(float_convs) == cfg.n_scales


def test_quantize_refuses_an_unknown_flavour(onnx_files, tmp_path):
    from avg_rt.errors import ExportError

    with pytest.raises(ExportError, match="unknown flavour"):
        quantize(onnx_files["fp32"], tmp_path / "x.onnx", [], "gpu")
    with pytest.raises(ExportError, match="no history windows"):
        quantize(onnx_files["fp32"], tmp_path / "x.onnx", [], "cpu")


@needs_tensorrt
def test_tensorrt_int8_engine_matches_pytorch_on_real_frames(int8_export, small_checkpoint):
    """The symmetric INT8 graph builds a strongly typed engine with explicit quantization and
    agrees with PyTorch as its ONNX graph does (38 dB on real frames)."""
    from avg_rt.export.shapes import Range, ShapeRanges
    from avg_rt.export.to_trt import build_engine

    from avg_rt.metrics import psnr, to_unit

    plan = int8_export / "test.int8-sym.plan"
    ranges = ShapeRanges(Range(1, 1, 2), Range(32, 40, 64), Range(32, 48, 64))
    build_engine(
        int8_export / "generator.int8-sym.onnx",
        plan,
        ranges,
        12,
        4,
        "int8",
        plan.with_suffix(".cache"),
    )
    x = torch.from_numpy(moving_frames(t=4, seed=7)).permute(0, 3, 1, 2).reshape(1, 12, 40, 48)
    x = (x.float() / 127.5 - 1).cuda().contiguous()
    with (
        open_runner(plan, device="cuda") as trt,
        open_runner(small_checkpoint, device="cuda") as ref,
    ):
        assert trt.name == "tensorrt-int8"
        db = psnr(to_unit(trt.predict(x).cpu()), to_unit(ref.predict(x).cpu())).min().item()
    assert db >= 38


def test_tensorrt_int8_build_follows_the_api(int8_export, tmp_path, monkeypatch):
    """Contract test (fake TensorRT, tests/fake_gpu.py): the INT8 graph goes through the same
    strongly typed build, and the plan's metadata says int8."""
    import sys

    from avg_rt.export.shapes import Range, ShapeRanges
    from avg_rt.export.to_trt import build_engine
    from fake_gpu import FakeGPU

    fake = FakeGPU()
    fake.patch_torch(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", fake.tensorrt())
    plan = tmp_path / "generator.int8-sym.plan"
    ranges = ShapeRanges(Range(1, 1, 2), Range(32, 40, 64), Range(32, 48, 64))
    meta = build_engine(
        int8_export / "generator.int8-sym.onnx", plan, ranges, 12, 4, "int8", tmp_path / "c"
    )
    assert meta["precision"] == "int8" and fake.calls[-1] == "build"
