"""Speed per backend, precision, frame size and batch, plus clip sampling and training steps.

For each configuration: frames per second of a recursive rollout (median of 3), latency per
step (median and p95 of single `predict` calls after warm-up; CUDA events on GPU), peak device
memory (CUDA), and the fraction of the device's measured peak reached: the generator's FLOPs
per frame (from `generator_flops`) against a large matrix product timed in the same run.
Ratios between backends measured in one run are what the README quotes; absolute numbers
carry the device.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avg_rt import checkpoint
from avg_rt.benchmark.common import RESULTS, environment, save, timed
from avg_rt.config import PRESETS
from avg_rt.export.shapes import Range, ShapeRanges
from avg_rt.export.to_onnx import save_onnx, to_onnx
from avg_rt.export.verify import random_history
from avg_rt.model import Generator, generator_flops
from avg_rt.predict import rollout
from avg_rt.runners import Runner
from avg_rt.runners.onnxrt import OnnxRuntimeRunner
from avg_rt.runners.pyt import TorchRunner


@dataclass(frozen=True)
class SpeedOptions:
    preset: str = "small"
    sizes: tuple[tuple[int, int], ...] = ((32, 32), (210, 160))
    batches: tuple[int, ...] = (1, 8)
    steps: int = 16
    repeats: int = 10
    device: str = "auto"
    train_steps: int = 3
    train_presets: tuple[str, ...] = ("small", "paper")
    name: str = "speed-quick"
    out: Path = RESULTS
    runners: tuple[str, ...] = ()  # only these runner names (default: every one available)
    extra: dict[str, Any] = field(default_factory=dict)


def step_latencies(runner: Runner, x: torch.Tensor, repeats: int) -> list[float]:
    """Seconds per `predict`, after 3 warm-up calls; CUDA events on GPU."""
    if runner.device.type != "cuda":
        return timed(lambda: runner.predict(x), runner.device, repeats, warmup=3)
    for _ in range(3):
        runner.predict(x)
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runner.predict(x)
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / 1e3)
    return out


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of a large matrix product on `device` (the roofline we compare to)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 5

    def products() -> None:
        for _ in range(reps):
            a @ b

    (seconds,) = timed(products, device, 1, warmup=1)
    return 2 * n**3 * reps / seconds


def cpu_has_bf16() -> bool:
    """Whether this CPU computes BF16 natively (AVX-512 BF16 or AMX), where torch's BF16
    autocast can pay on CPU."""
    from avg_rt.doctor import cpu_flags

    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def int8_graphs(fp32: Path, history_len: int, seed: int = 2000) -> tuple[Path, Path]:
    """The CPU and TensorRT INT8 forms of `fp32`, beside it, calibrated on 32 windows of a
    Ms. Pac-Man episode played with `seed` (a game neither the training data nor the quality
    benchmark uses), never on random data."""
    from avg_rt.data.atari import AtariConfig, play
    from avg_rt.data.sources import Video
    from avg_rt.export.pipeline import INT8_FOR_CPU, INT8_FOR_TENSORRT
    from avg_rt.export.to_int8 import calibration_windows, quantize

    frames = np.stack(list(play(AtariConfig(max_frames=400, seed=seed), 0)))
    windows = calibration_windows([Video(f"ms_pacman seed {seed}", frames)], history_len, 32)
    cpu = quantize(fp32, fp32.with_name(INT8_FOR_CPU), windows, "cpu")
    return cpu, quantize(fp32, fp32.with_name(INT8_FOR_TENSORRT), windows, "tensorrt")


def runners(
    ckpt: Path, onnx_dir: Path, device: torch.device, profile: ShapeRanges
) -> Iterator[tuple[Runner, dict[str, Any]]]:
    """Every available backend and precision, with how each rollout should run. TensorRT
    engines get one optimization profile, `profile`, over the sizes and batches measured."""
    gen, _ = checkpoint.load_generator(ckpt)
    fp32 = save_onnx(to_onnx(gen), onnx_dir / "generator.onnx")
    fp16 = save_onnx(to_onnx(gen, fp16=True), onnx_dir / "generator.fp16.onnx")
    # Built on first use (emulator frames and calibration): a GPU without onnxruntime-gpu or
    # TensorRT has no INT8 runner, and need not spend its lease on them.
    int8_pair = functools.cache(lambda: int8_graphs(fp32, gen.cfg.history_len))
    if device.type == "cpu":
        int8, int8_sym = int8_pair()
        yield TorchRunner(ckpt), {}
        if cpu_has_bf16():
            yield TorchRunner(ckpt, amp="bf16"), {}
        yield OnnxRuntimeRunner(fp32), {}
        yield OnnxRuntimeRunner(fp16), {}
        yield OnnxRuntimeRunner(int8), {}
        yield OnnxRuntimeRunner(int8_sym), {}
        return
    yield TorchRunner(ckpt, device), {"cuda_graph": False}
    yield TorchRunner(ckpt, device), {"cuda_graph": True}
    yield TorchRunner(ckpt, device, tf32=True), {"cuda_graph": True}
    yield TorchRunner(ckpt, device, channels_last=True, amp="fp16"), {"cuda_graph": True}
    yield TorchRunner(ckpt, device, amp="bf16"), {"cuda_graph": True}
    yield TorchRunner(ckpt, device, compile=True, channels_last=True), {"cuda_graph": False}
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        for path in (fp32, fp16, int8_pair()[1]):
            yield OnnxRuntimeRunner(path, device), {}
            yield OnnxRuntimeRunner(path, device, cuda_graph=True), {"cuda_graph": True}
    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        for path in (fp32, fp16, int8_pair()[1]):
            yield OnnxRuntimeRunner(path, device, tensorrt=True), {}
    if importlib.util.find_spec("tensorrt") is not None:
        from avg_rt.data.frames import FrameFormat
        from avg_rt.export.to_trt import build_engine
        from avg_rt.runners.trt import TensorRTRunner

        for path, precision in ((fp32, "fp32"), (fp16, "fp16"), (int8_pair()[1], "int8")):
            plan = path.with_suffix(".plan")
            build_engine(
                path,
                plan,
                profile,
                gen.cfg.in_channels,
                gen.cfg.history_len,
                precision,
                onnx_dir / "timing.cache",
                frames=FrameFormat.of(gen.cfg),
            )
            for graph in (False, True):
                yield TensorRTRunner(plan, device), {"cuda_graph": graph}


DEVICE_CHOICES = ("all", "cpu", "cuda")


def check_devices(devices: str) -> None:
    """RunnerError where `devices` (DEVICE_CHOICES) asks for a GPU this machine lacks: a
    CUDA-only benchmark must not write an empty report. Scripts call it first."""
    from avg_rt.errors import RunnerError

    if devices == "cuda" and not torch.cuda.is_available():
        raise RunnerError("--device cuda", "torch sees no CUDA GPU here (run `avg-rt doctor`)")


def all_runners(
    checkpoint: Path, onnx_dir: Path, batch: int, h: int, w: int, devices: str = "all"
) -> Iterator[tuple[Runner, dict[str, Any]]]:
    """`runners` on CPU and then, with a GPU, on CUDA (`devices`: one of DEVICE_CHOICES), with
    TensorRT engines for exactly `batch` x `h` x `w`; their files go to `onnx_dir`/cpu and
    `onnx_dir`/cuda. "cuda" without a GPU is an error, not an empty benchmark."""
    check_devices(devices)
    profile = ShapeRanges(Range(batch, batch, batch), Range(h, h, h), Range(w, w, w))
    here = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in (d for d in here if devices in ("all", d)):
        (onnx_dir / device).mkdir()
        yield from runners(checkpoint, onnx_dir / device, torch.device(device), profile)


def measure(
    runner: Runner,
    how: dict[str, Any],
    size: tuple[int, int],
    batch: int,
    opts: SpeedOptions,
    flops_frame: int,
    peak: float,
) -> dict[str, Any]:
    """One row: rollout fps, step latency, memory, fraction of peak."""
    h, w = size
    dev = runner.device
    hist = random_history((batch, 4, 3, h, w), 0).to(dev)
    x = hist.reshape(batch, 12, h, w).contiguous()
    lat = step_latencies(runner, x, opts.repeats)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    # One warm-up rollout (and graph capture), then the median of 3.
    ran: dict[str, str] = {}
    times = timed(lambda: rollout(runner, hist, opts.steps, execution=ran, **how), dev, 3, warmup=1)
    seconds = float(np.median(times))
    median = float(np.median(lat))
    return {
        "runner": runner.name + (" +graph" if how.get("cuda_graph") else ""),
        "size": f"{h}x{w}",
        "batch": batch,
        "rollout_fps": batch * opts.steps / seconds,
        "step_ms_median": 1e3 * median,
        "step_ms_p95": 1e3 * float(np.percentile(lat, 95)),
        "peak_mem_mib": torch.cuda.max_memory_allocated(dev) / 2**20
        if dev.type == "cuda"
        else None,
        "fraction_of_peak": flops_frame * batch / median / peak,
        "steps_ran": ran_as(ran),
    }


def training_speed(opts: SpeedOptions, device: torch.device) -> list[dict[str, Any]]:
    """Clips/s of the sampler and adversarial training steps/s of each preset (batch 8)."""
    from avg_rt.data.atari import AtariConfig, play
    from avg_rt.data.clips import ClipSampler, clips_to_float
    from avg_rt.data.sources import Video
    from avg_rt.model import Discriminator
    from avg_rt.train.loop import d_optimizer
    from avg_rt.train.steps import d_step, g_step

    videos = [
        Video(f"episode {i}", np.stack(list(play(AtariConfig(max_frames=300), i))))
        for i in range(2)
    ]
    sampler = ClipSampler(videos, 5, 32, np.random.default_rng(0))
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 2.0:
        sampler.sample(8)
        n += 8
    clips_per_s = n / (time.perf_counter() - t0)
    rows: list[dict[str, Any]] = [{"what": "clip sampler", "per_s": clips_per_s, "unit": "clips"}]
    for preset in opts.train_presets:
        # The preset's own training: its crop, unrolled length and D optimizer.
        cfg = dataclasses.replace(PRESETS[preset], batch=8)
        G, D = Generator(cfg.model).to(device), Discriminator(cfg.model).to(device)
        opt_g, opt_d = torch.optim.Adam(G.parameters()), d_optimizer(D, cfg)
        clip_len = cfg.model.history_len + cfg.unroll
        clips = ClipSampler(videos, clip_len, cfg.crop, np.random.default_rng(0)).sample(8)
        batch = clips_to_float(clips, device)

        def step() -> None:  # timed within this iteration, so the late binding is safe
            d_step(G, D, opt_d, batch, cfg, cfg.unroll)  # noqa: B023
            g_step(G, D, opt_g, batch, cfg, cfg.unroll)  # noqa: B023

        times = timed(step, device, opts.train_steps, warmup=1)
        sps = len(times) / sum(times)
        rows.append(
            {
                "what": f"training steps, {preset} preset, adversarial, batch 8",
                "per_s": sps,
                "unit": "steps",
                "sampler_headroom": clips_per_s / (16 * sps),
            }
        )
    return rows


def run(opts: SpeedOptions) -> dict[str, Any]:
    """Measure every configuration; write JSON and Markdown."""
    from avg_rt.runners import resolve_device

    device = resolve_device(opts.device)
    cfg = PRESETS[opts.preset]
    peak = peak_flops(device)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        torch.manual_seed(0)
        checkpoint.save(ckpt, cfg, 0, {"generator": Generator(cfg.model).state_dict()})
        profile = ShapeRanges(
            Range(min(opts.batches), max(opts.batches), max(opts.batches)),
            *(
                Range(
                    min(s[i] for s in opts.sizes), opts.sizes[-1][i], max(s[i] for s in opts.sizes)
                )
                for i in (0, 1)
            ),
        )
        for runner, how in runners(ckpt, Path(tmp), device, profile):
            if opts.runners and runner.name not in opts.runners:
                continue
            with runner:
                for size in opts.sizes:
                    flops = generator_flops(cfg.model, *size)
                    for batch in opts.batches:
                        try:
                            rows.append(measure(runner, how, size, batch, opts, flops, peak))
                        except torch.OutOfMemoryError:
                            rows.append(
                                {
                                    "runner": runner.name,
                                    "size": f"{size[0]}x{size[1]}",
                                    "batch": batch,
                                    "error": "out of memory",
                                }
                            )
                            torch.cuda.empty_cache()
                        print(_row(rows[-1]), flush=True)
                        # After each row: a run cut short (a GPU lease's end) keeps it.
                        _save(opts, device, peak, rows, None)
    return _save(opts, device, peak, rows, training_speed(opts, device))


def _save(
    opts: SpeedOptions,
    device: torch.device,
    peak: float,
    rows: list[dict[str, Any]],
    training: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Write the report so far; `training` None: not measured yet (said in the table)."""
    complete = training is not None
    report = {
        "environment": environment(),
        "options": {k: str(v) for k, v in vars(opts).items()},
        "device": str(device),
        "peak_flops": peak,
        "rows": rows,
        "training": training or [],
    }
    save(opts.name, report, _table(report, opts), opts.out, complete)
    return report | {"complete": complete}


def ran_as(execution: dict[str, str]) -> str:
    """How a rollout's steps ran, for tables: 'cuda-graph' or 'eager (why)'."""
    why = execution.get("why")
    return f"{execution['steps']} ({why})" if why else execution["steps"]


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['runner']} | {r['size']} | {r['batch']} | {r['error']} | | | | | |"
    mem = f"{r['peak_mem_mib']:.0f}" if r["peak_mem_mib"] is not None else "-"
    return (
        f"| {r['runner']} | {r['size']} | {r['batch']} | {r['rollout_fps']:.1f} | "
        f"{r['step_ms_median']:.2f} | {r['step_ms_p95']:.2f} | {mem} | "
        f"{100 * r['fraction_of_peak']:.1f}% | {r.get('steps_ran', '')} |"
    )


def _table(report: dict[str, Any], opts: SpeedOptions) -> str:
    lines = [
        f"Speed of the `{opts.preset}` generator on {report['device']}: {opts.steps}-step "
        f"rollouts, step latency over {opts.repeats} calls; % of peak = model FLOP/s against "
        f"a {report['peak_flops'] / 1e9:.0f} GFLOP/s FP32 matrix product measured in the "
        f"same run (TF32, FP16, BF16 and INT8 rows can pass 100%: their arithmetic is faster "
        "than FP32's).",
        "",
        "| runner | frame | batch | rollout frames/s | step ms (median) | step ms (p95) | "
        "peak MiB | % of peak | steps ran |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in report["rows"]]
    lines += ["", "| training | per second | sampler headroom |", "|---|---|---|"]
    for t in report["training"]:
        head = f"x{t['sampler_headroom']:.1f}" if "sampler_headroom" in t else ""
        lines.append(f"| {t['what']} | {t['per_s']:.2f} {t['unit']} | {head} |")
    return "\n".join(lines)
