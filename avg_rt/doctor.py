"""`avg-rt doctor`: what this machine can run, checked by running it.

Each backend runs a tiny generator (exported to ONNX and, where TensorRT is present, built
into an engine, in a temporary folder) and is compared with PyTorch on the CPU; a backend that
fails says why in one line and which package fixes it, matched to the CUDA major of the
installed torch (onnxruntime-gpu 1.31+ and `tensorrt-cu13` are CUDA 13 builds; a CUDA 12
torch needs onnxruntime-gpu below 1.31 and `tensorrt-cu12`: they cannot load side by side).
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from avg_rt import __version__

OK, ABSENT, BROKEN, INFO = "ok", "not here", "BROKEN", "info"
TORCH_URL = "https://pytorch.org/get-started/locally/"


@dataclass(frozen=True)
class Row:
    part: str
    status: str  # OK, ABSENT (not asked for, not present), BROKEN, INFO
    detail: str
    fix: str = ""


def cuda_major() -> int | None:
    """The CUDA major version torch was built for (None: a CPU build)."""
    return int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None


def gpu_extra() -> str:
    """The pip requirement of the GPU backends that load next to this torch."""
    return "'avg-rt[gpu-cu12]'" if cuda_major() == 12 else "'avg-rt[gpu]'"


def gpu_install() -> str:
    """What to run for the GPU backends here: the extra for torch's CUDA major, after removing
    the CPU onnxruntime (it shares onnxruntime-gpu's module), after a CUDA torch if needed."""
    major = cuda_major()
    if major is not None and major not in (12, 13):
        return f"torch is built for CUDA {major}: the GPU extras need a CUDA 12 or 13 torch"
    command = f"pip install {gpu_extra()}"
    if _version("onnxruntime"):
        command = f"pip uninstall -y onnxruntime onnxruntime-gpu && {command}"
    if major is None:
        return f"install a CUDA build of torch ({TORCH_URL}), then {command}"
    return command


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tensorrt_dist() -> str:
    """The installed TensorRT distribution's name, or ''."""
    return next((d for d in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12") if _version(d)), "")


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux; empty elsewhere)."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def _cpu_features() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in cpu_flags()) or "no AVX2 (or not Linux)"


def _driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return _line(e)
    return f"driver {out.stdout.split()[0]}" if out.returncode == 0 and out.stdout else "unknown"


def environment(want_cuda: bool) -> list[Row]:
    """Versions and hardware: Python, torch, GPU, onnxruntime, TensorRT."""
    rows = [
        Row("avg-rt", INFO, f"{__version__}, Python {platform.python_version()}"),
        Row("CPU", INFO, f"{platform.machine()}, {_cpu_features()}"),
    ]
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    rows.append(Row("torch", OK, f"{torch.__version__} ({cuda})"))
    if torch.cuda.is_available():
        names = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            names.append(f"cuda:{i} {p.name} (sm {p.major}.{p.minor}, {p.total_memory >> 30} GiB)")
        rows.append(Row("GPU", OK, f"{'; '.join(names)}; {_driver()}"))
    else:
        fix = (
            f"install a CUDA build of torch ({TORCH_URL})"
            if not torch.version.cuda
            else "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
        )
        status = BROKEN if want_cuda else ABSENT
        rows.append(Row("GPU", status, f"torch sees no CUDA GPU ({cuda})", fix))
    ort_cpu, ort_gpu = _version("onnxruntime"), _version("onnxruntime-gpu")
    if ort_cpu and ort_gpu:
        rows.append(
            Row(
                "onnxruntime",
                BROKEN,
                f"both onnxruntime {ort_cpu} and onnxruntime-gpu {ort_gpu} are installed "
                "(one module: whichever was installed last wins)",
                gpu_install(),
            )
        )
    try:
        import onnxruntime as ort

        package = "onnxruntime-gpu" if ort_gpu else "onnxruntime"
        providers = ", ".join(
            p.removesuffix("ExecutionProvider") for p in ort.get_available_providers()
        )
        detail = f"{package} {ort.__version__}; available providers: {providers}"
        rows.append(Row("onnxruntime", OK, detail))
    except ImportError as e:
        fix = gpu_install() if ort_gpu else "pip install 'avg-rt[cpu]'"
        rows.append(Row("onnxruntime", BROKEN, _line(e), fix))
    trt_dist = _tensorrt_dist()
    try:
        import tensorrt

        rows.append(Row("tensorrt", OK, f"{tensorrt.__version__} ({trt_dist})"))
    except ImportError as e:
        status = BROKEN if trt_dist else ABSENT  # optional unless installed and failing
        detail = _line(e) if trt_dist else "not installed (optional; NVIDIA GPUs only)"
        rows.append(Row("tensorrt", status, detail, gpu_install()))
    return rows


def _tiny_checkpoint(folder: Path) -> Path:
    """A small untrained generator (fixed seed; not the delta form, whose zero last layers would
    make every backend agree trivially)."""
    import dataclasses

    from avg_rt import checkpoint
    from avg_rt.config import PRESETS, ModelConfig
    from avg_rt.model import Generator

    cfg = ModelConfig(
        g_maps=((8,), (8,)), g_kernels=((3, 3), (3, 3)), d_maps=((8,), (8,)),
        d_kernels=((3,), (3,)), d_fc=((8,), (8,)), init="torch",
    )  # fmt: skip
    torch.manual_seed(0)
    gen = Generator(cfg)
    path = folder / "tiny.pt"
    train_cfg = dataclasses.replace(PRESETS["small"], model=cfg)
    checkpoint.save(path, train_cfg, 0, {"generator": gen.state_dict()})
    return path


def _check(part: str, run: Callable[[], str], fix: str, required: bool) -> Row:
    try:
        return Row(part, OK, run())
    except Exception as e:  # any backend failure is reported, not raised
        return Row(part, BROKEN if required else ABSENT, _line(e), fix)


def backends(want_cuda: bool) -> list[Row]:
    """Run the tiny generator on every backend this machine has (or was asked for)."""
    from avg_rt.checkpoint import load_generator
    from avg_rt.export.to_onnx import save_onnx, to_onnx
    from avg_rt.runners import open_runner

    history = torch.rand(2, 12, 40, 48) * 2 - 1
    with tempfile.TemporaryDirectory(prefix="avg-rt-doctor-") as tmp:
        folder = Path(tmp)
        ckpt = _tiny_checkpoint(folder)
        gen, _ = load_generator(ckpt)
        with torch.no_grad():
            reference = gen(history)
        onnx32 = save_onnx(to_onnx(gen), folder / "tiny.onnx")

        def against_torch(path: Path, device: str, atol: float) -> Callable[[], str]:
            def run() -> str:
                with open_runner(path, device=device) as runner:
                    out = runner.predict(history.to(runner.device).contiguous()).float().cpu()
                err = (out - reference).abs().max().item()
                if not err <= atol:
                    raise RuntimeError(f"differs from PyTorch by {err:.2g} (limit {atol:g})")
                return f"{runner.name}: ran, max |diff| from PyTorch CPU {err:.1g}"

            return run

        ort_fix = gpu_install()
        rows = [
            _check("run torch cpu", against_torch(ckpt, "cpu", 0.0), "", True),
            _check("run onnxruntime cpu", against_torch(onnx32, "cpu", 1e-4), "", True),
        ]
        if not (torch.cuda.is_available() or want_cuda):
            return rows
        torch_fix = f"install a CUDA build of torch ({TORCH_URL})"
        rows.append(_check("run torch cuda", against_torch(ckpt, "cuda", 1e-4), torch_fix, True))
        rows.append(
            _check(
                "run onnxruntime cuda",
                _ort_cuda(against_torch(onnx32, "cuda", 1e-4)),
                ort_fix,
                want_cuda or bool(_version("onnxruntime-gpu")),  # installed: it must work
            )
        )
        trt_fix = f"{gpu_install()} (TensorRT's wheels come from pypi.nvidia.com)"
        rows.append(
            _check(
                "run tensorrt",
                _tensorrt(onnx32, folder, against_torch),
                trt_fix,
                bool(_tensorrt_dist()),  # installed: it must work
            )
        )
        return rows


def _ort_cuda(run: Callable[[], str]) -> Callable[[], str]:
    """`run`, unless this onnxruntime has no CUDA provider at all (the CPU package)."""

    def check() -> str:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            package = "onnxruntime-gpu" if _version("onnxruntime-gpu") else "onnxruntime"
            raise RuntimeError(f"{package} {ort.__version__} has no CUDA provider")
        return run()

    return check


def _tensorrt(
    onnx_path: Path, folder: Path, against_torch: Callable[[Path, str, float], Callable[[], str]]
) -> Callable[[], str]:
    def run() -> str:
        from avg_rt.export.shapes import Range, ShapeRanges
        from avg_rt.export.to_trt import build_engine

        plan = folder / "tiny.plan"
        ranges = ShapeRanges(Range(1, 2, 2), Range(40, 40, 40), Range(48, 48, 48))
        build_engine(onnx_path, plan, ranges, 12, 4, "fp32", folder / "timing.cache")
        return against_torch(plan, "cuda", 1e-4)()

    return run


def diagnose(want_cuda: bool = False) -> list[Row]:
    """Every row of the report; `want_cuda`: a missing CUDA backend is a failure."""
    return environment(want_cuda) + backends(want_cuda)


def render(rows: list[Row]) -> str:
    """A plain table (survives pipes), then one `fix:` line per row that has one."""
    width = max(len(r.part) for r in rows)
    lines = [f"{r.part:<{width}}  {r.status:<8}  {r.detail}" for r in rows]
    fixes = [
        f"{'fix' if r.status == BROKEN else 'to add'} {r.part}: {r.fix}"
        for r in rows
        if r.fix and r.status in (BROKEN, ABSENT)
    ]
    return "\n".join(lines + ([""] + fixes if fixes else []))
