"""`avg-rt export`: checkpoint -> verified ONNX (FP32, FP16) and TensorRT artefacts in one folder.

Each artefact is written, run through its backend's runner and compared with the PyTorch
generator (`verify.py`). One that fails keeps a `.failed` suffix instead of its final name.
The whole folder is assembled beside OUT and renamed into place at the end, so an interrupted
export leaves nothing half-written, and an existing OUT is replaced only with `overwrite`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from avg_rt.export.shapes import Range, ShapeRanges
from avg_rt.export.to_onnx import DEFAULT_OPSET, check_exportable, save_onnx, to_onnx
from avg_rt.export.verify import Report, crops, print_reports, random_history, verify

from avg_rt.benchmark.common import environment
from avg_rt.checkpoint import load_generator
from avg_rt.data.frames import FrameFormat
from avg_rt.errors import ExportError, RunnerError
from avg_rt.files import atomic_path, atomic_write_text, check_writable, strict_json
from avg_rt.model import Generator, levels, palette_tensor
from avg_rt.runners import Runner
from avg_rt.runners.onnxrt import OnnxRuntimeRunner
from avg_rt.runners.pyt import TorchRunner

REPORT = "verification.json"
# INT8 graphs: UINT8 asymmetric activations run fastest on CPUs (onnxruntime's u8s8 kernels);
# TensorRT's explicit quantization takes symmetric INT8 activations only (export/to_int8.py).
INT8_FOR_CPU = "generator.int8.onnx"
INT8_FOR_TENSORRT = "generator.int8-sym.onnx"


@dataclass(frozen=True)
class ExportOptions:
    """Everything `avg-rt export` takes; `engine=None` builds engines when TensorRT and a GPU
    are present."""

    checkpoint: Path
    out: Path
    fp16: bool = False
    engine: bool | None = None
    ranges: ShapeRanges = field(default_factory=ShapeRanges)
    opset: int = DEFAULT_OPSET
    triton: bool = False
    overwrite: bool = False
    verify_steps: int = 64
    workspace_gib: float = 4.0
    int8: bool = False
    calibrate: Path | None = None  # real frames for INT8 calibration (and its verification)
    calibration_windows: int = 64


@dataclass
class ExportResult:
    out: Path
    artefacts: list[Path]
    reports: list[Report]


def verification_shapes(ranges: ShapeRanges, channels: int) -> list[tuple[int, int, int, int]]:
    """Minimum of every range; maximum batch at the optimum size; maximum size at the smallest
    batch; and an odd size (near 97x131, clamped into the ranges) at the optimum batch."""

    def odd(r: Range, want: int) -> int:
        v = min(max(want, r.min), r.max)
        return v if v % 2 or v == r.max else v + 1

    b, h, w = ranges.batch, ranges.height, ranges.width
    shapes = [
        ranges.shape("min", channels),
        (b.max, channels, h.opt, w.opt),
        (b.min, channels, h.max, w.max),
        (b.opt, channels, odd(h, 97), odd(w, 131)),
    ]
    return list(dict.fromkeys(shapes))


def _ort_cuda() -> bool:
    """Whether onnxruntime's CUDA provider and a GPU are here."""
    if not torch.cuda.is_available():
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _engine_wanted(flag: bool | None) -> bool:
    import importlib.util

    available = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    if flag and not available:
        from avg_rt.export.to_trt import import_tensorrt

        import_tensorrt()  # raises the one-line error naming the extra
        raise ExportError("--engine", "TensorRT needs a CUDA GPU and none is available here")
    return available if flag is None else flag


def _check(
    candidate: Runner,
    generator: Generator,
    device: str,
    opts: ExportOptions,
    name: str,
    precision: str,
    real: list[np.ndarray] | None = None,
) -> Report:
    """Verify `candidate` against PyTorch: on random frames, or (`real`, held-out windows of
    real frames: INT8) on crops of real windows and a rollout from the first of them."""
    channels = generator.cfg.in_channels
    r = opts.ranges
    rollout_shape = (r.batch.min, channels, r.height.opt, r.width.opt)
    history, inputs = None, random_history
    if real is not None:
        first = torch.from_numpy(real[0])
        same = torch.stack([torch.from_numpy(w) for w in real if w.shape == real[0].shape])
        inputs = crops(same)
        if r.contains((r.batch.min, *first.shape)):  # the real frames' own size
            rollout_shape = (r.batch.min, *first.shape)
            picks = same[torch.arange(r.batch.min) % len(same)]
        else:
            picks = inputs(rollout_shape, 1000)
        fc = generator.cfg.channels
        history = picks.reshape(r.batch.min, channels // fc, fc, *rollout_shape[2:])
    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(TorchRunner(generator, device))
        stack.enter_context(candidate)
        palette, unsnapped = None, None
        if generator.cfg.palette:  # the reference's prediction before its snap
            palette = palette_tensor(generator.cfg)
            unsnapped = stack.enter_context(TorchRunner(generator.network_only(), device))
        return verify(
            candidate,
            reference,
            verification_shapes(r, channels),
            rollout_shape,
            opts.verify_steps,
            precision,
            name,
            history=history,
            inputs=inputs,
            deadzone=generator.cfg.deadzone,
            palette=palette,
            unsnapped=unsnapped,
            palette_radius=levels(generator.cfg.palette_radius),
        )


def _calibration(
    opts: ExportOptions, history_len: int, fmt: FrameFormat
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration, verification) history windows of the real frames at `opts.calibrate`:
    from the first and the second half of every video, so none shares a frame (read before
    anything is written)."""
    from avg_rt.export.to_int8 import calibration_windows

    from avg_rt.data.sources import load_videos, open_source

    if opts.calibrate is None:
        raise ExportError("--int8", "needs --calibrate VIDEO_DIR: real frames to calibrate on")
    why = "INT8 calibration"
    videos = load_videos(open_source(opts.calibrate), 2 * (history_len + 1), why=why, fmt=fmt)
    n = opts.calibration_windows
    first = calibration_windows(videos, history_len, n, "first", fmt)
    return first, calibration_windows(videos, history_len, n, "second", fmt)


def _int8(
    fp32: Path,
    windows: tuple[list[np.ndarray], list[np.ndarray]],
    generator: Generator,
    opts: ExportOptions,
    reports: list[Report],
    say: Callable[[str], None],
) -> list[tuple[Path, str]]:
    """Quantize the verified FP32 graph in both flavours, calibrated on the first windows and
    verified on the held-out second ones; returns the INT8 files that passed."""
    from avg_rt.export.to_int8 import quantize

    calibration, held_out = windows
    passed = []
    for flavour, name in (("cpu", INT8_FOR_CPU), ("tensorrt", INT8_FOR_TENSORRT)):
        path = fp32.with_name(name)
        say(f"quantizing {path.name} (INT8, {flavour} form, {len(calibration)} real windows)")
        quantize(fp32, path, calibration, flavour)
        say(f"verifying {path.name} against PyTorch on held-out real frames")
        runner = OnnxRuntimeRunner(path)
        report = _check(runner, generator, "cpu", opts, path.name, "int8", held_out)
        reports.append(report)
        if report.passed:
            passed.append((path, "int8"))
    return passed


def export(opts: ExportOptions, on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Run the export; raises ExportError (after writing the report) if any artefact failed.
    `on_stage(what)` is called as each stage starts (conversion, verification, engine
    builds can take minutes)."""
    say = on_stage or (lambda what: None)
    generator, cfg = load_generator(opts.checkpoint)
    check_exportable(cfg.model)  # before reading calibration data or writing anything
    opts.ranges.validate(cfg.model)
    if opts.triton and opts.ranges.batch.min != 1:
        raise ExportError("--batch", "Triton sends any batch from 1 to max_batch_size: use MIN 1")
    if opts.verify_steps < 1:
        raise ExportError("--verify-steps", "must be >= 1")
    if opts.calibrate is not None and not opts.int8:
        raise ExportError("--calibrate", "calibrates INT8 graphs: add --int8")
    engine = _engine_wanted(opts.engine)
    inputs = [opts.checkpoint] + ([opts.calibrate] if opts.calibrate else [])
    check_writable(opts.out, opts.overwrite, inputs)
    fmt = FrameFormat.of(cfg.model)
    windows, held_out = _calibration(opts, cfg.model.history_len, fmt) if opts.int8 else ([], [])
    from avg_rt.export.to_trt import sha256

    ckpt_hash = sha256(opts.checkpoint)
    old_cache = opts.out / "timing.cache"  # reuse the previous build's cache when replacing
    precisions = ["fp32", "fp16"] if opts.fp16 else ["fp32"]
    reports: list[Report] = []
    with atomic_path(opts.out, opts.overwrite, inputs) as tmp:
        tmp.mkdir()
        if engine and old_cache.is_file():
            shutil.copyfile(old_cache, tmp / "timing.cache")
        onnx_files = []
        for precision in precisions:
            path = tmp / ("generator.onnx" if precision == "fp32" else "generator.fp16.onnx")
            say(f"converting to {path.name} ({precision.upper()})")
            proto = to_onnx(
                generator,
                fp16=precision == "fp16",
                opset=opts.opset,
                metadata={"checkpoint_sha256": ckpt_hash},
            )
            save_onnx(proto, path)
            say(f"verifying {path.name} against PyTorch ({opts.verify_steps}-step rollouts)")
            checks = [_check(OnnxRuntimeRunner(path), generator, "cpu", opts, path.name, precision)]
            if _ort_cuda():  # the file a GPU user runs is checked on the provider they run
                say(f"verifying {path.name} on onnxruntime's CUDA provider")
                runner = OnnxRuntimeRunner(path, "cuda")
                try:
                    checks.append(_check(runner, generator, "cuda", opts, path.name, precision))
                except RunnerError as e:  # a provider that cannot load: said, not fatal
                    say(f"not verified on onnxruntime's CUDA provider: {e}")
            reports += checks
            if all(r.passed for r in checks):
                onnx_files.append((path, precision))
        if windows and onnx_files and onnx_files[0][1] == "fp32":
            onnx_files += _int8(
                onnx_files[0][0], (windows, held_out), generator, opts, reports, say
            )
        plans = []
        if engine:
            from avg_rt.export.to_trt import build_engine

            from avg_rt.runners.trt import TensorRTRunner

            for path, precision in onnx_files:
                if precision == "int8" and INT8_FOR_TENSORRT not in path.name:
                    continue  # TensorRT takes the symmetric INT8 graph only
                plan = path.with_suffix(".plan")
                say(f"building {plan.name} with TensorRT (minutes; cached for rebuilds)")
                build_engine(
                    path,
                    plan,
                    opts.ranges,
                    cfg.model.in_channels,
                    cfg.model.history_len,
                    precision,
                    tmp / "timing.cache",
                    int(opts.workspace_gib * 2**30),
                    ckpt_hash,
                    FrameFormat.of(cfg.model),
                )
                say(f"verifying {plan.name} against PyTorch")
                real = held_out if precision == "int8" else None  # as its ONNX graph was
                engine_runner = TensorRTRunner(plan, "cuda")
                report = _check(engine_runner, generator, "cuda", opts, plan.name, precision, real)
                reports.append(report)
                if report.passed:
                    plans.append(plan)
        # Failed artefacts never keep their final name (one may have failed on two backends).
        for artefact in dict.fromkeys(r.artefact for r in reports if not r.passed):
            failed = tmp / artefact
            failed.rename(failed.with_name(failed.name + ".failed"))
        summary = {
            "environment": environment(),
            "checkpoint": str(opts.checkpoint),
            "checkpoint_sha256": ckpt_hash,
            "ranges": {k: str(v) for k, v in vars(opts.ranges).items()},  # MIN:OPT:MAX
            "passed": all(r.passed for r in reports),
            "reports": [r.to_dict() for r in reports],
        }
        atomic_write_text(tmp / REPORT, strict_json(summary))
        if opts.triton:
            from avg_rt.export.triton import write_repository

            say("writing the Triton model repository")

            write_repository(  # the CPU INT8 graph is for CPUs; Triton's models are on GPUs
                tmp / "model_repository",
                [p for p, _ in onnx_files if p.name != INT8_FOR_CPU] + plans,
                cfg.model.in_channels,
                opts.ranges,
                cfg.model.channels,
            )
    print_reports(reports)
    artefacts = [opts.out / p.name for p, _ in onnx_files] + [opts.out / p.name for p in plans]
    failed = list(dict.fromkeys(r.artefact for r in reports if not r.passed))
    if failed:
        raise ExportError(
            opts.out,
            f"verification failed for {', '.join(failed)} (renamed *.failed; see {REPORT})",
        )
    return ExportResult(opts.out, artefacts, reports)
