"""Every runner against the PyTorch generator: same sizes, batches and a short rollout."""

import importlib.util
from pathlib import Path

import pytest
import torch
from avg_rt.export.verify import TOLERANCES, random_history
from conftest import HAS_CUDA, needs_cuda, needs_tensorrt

from avg_rt.checkpoint import load_generator
from avg_rt.data.clips import round_to_8bit
from avg_rt.errors import RunnerError
from avg_rt.metrics import psnr, to_unit
from avg_rt.model import Generator
from avg_rt.predict import rollout
from avg_rt.runners import Runner, open_runner
from avg_rt.runners.onnxrt import OnnxRuntimeRunner
from avg_rt.runners.pyt import TorchRunner


def _ort_cuda() -> bool:
    if not HAS_CUDA or importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu and a GPU")


@pytest.fixture(scope="module")
def engines(onnx_files, tmp_path_factory):
    from avg_rt.export.shapes import Range, ShapeRanges
    from avg_rt.export.to_trt import build_engine

    out = tmp_path_factory.mktemp("trt")
    ranges = ShapeRanges(Range(1, 1, 3), Range(32, 210, 210), Range(32, 160, 160))
    plans = {}
    for precision, path in onnx_files.items():
        plan = out / path.with_suffix(".plan").name
        build_engine(path, plan, ranges, 12, 4, precision, out / "timing.cache")
        plans[precision] = plan
    return plans


RUNNERS = [
    pytest.param(("torch", "cpu", "fp32"), id="torch-cpu"),
    pytest.param(("onnxruntime", "cpu", "fp32"), id="onnxrt-cpu"),
    pytest.param(("onnxruntime", "cpu", "fp16"), id="onnxrt-cpu-fp16"),
    pytest.param(("torch", "cuda", "fp32"), id="torch-cuda", marks=needs_cuda),
    pytest.param(("onnxruntime", "cuda", "fp32"), id="onnxrt-cuda", marks=needs_ort_cuda),
    pytest.param(("onnxruntime", "cuda", "fp16"), id="onnxrt-cuda-fp16", marks=needs_ort_cuda),
    pytest.param(("tensorrt", "cuda", "fp32"), id="tensorrt", marks=needs_tensorrt),
    pytest.param(("tensorrt", "cuda", "fp16"), id="tensorrt-fp16", marks=needs_tensorrt),
]


@pytest.fixture
def make_runner(request, small_checkpoint, onnx_files):
    def make(spec) -> Runner:
        backend, device, precision = spec
        if backend == "torch":
            return open_runner(small_checkpoint, "torch", device)
        if backend == "onnxruntime":
            return open_runner(onnx_files[precision], "onnxruntime", device)
        return open_runner(request.getfixturevalue("engines")[precision], "tensorrt", device)

    return make


def _close(out: torch.Tensor, ref: torch.Tensor, precision: str) -> None:
    assert out.shape == ref.shape and out.dtype == torch.float32
    if precision == "fp32":
        assert (out.cpu() - ref.cpu()).abs().max().item() < 1e-4
    else:
        assert psnr(to_unit(out.cpu()), to_unit(ref.cpu())).min().item() > 40


@pytest.mark.parametrize("spec", RUNNERS)
@pytest.mark.parametrize("size", [(32, 32), (97, 131), (210, 160)])
@pytest.mark.parametrize("batch", [1, 3])
def test_runner_matches_torch(make_runner, small_checkpoint, spec, size, batch):
    gen, _ = load_generator(small_checkpoint)
    x = random_history((batch, 12, *size), seed=batch)
    with torch.inference_mode():
        ref = gen(x)
    with make_runner(spec) as runner:
        assert runner.history_len == 4 and runner.device.type == spec[1]
        out = runner.predict(x.to(runner.device).contiguous())
        assert out.device.type == spec[1]
        _close(out, ref, spec[2])


@pytest.mark.parametrize("spec", RUNNERS)
def test_rollout_agrees_with_torch(make_runner, small_checkpoint, spec):
    hist = random_history((2, 5, 3, 48, 40), seed=7)
    with TorchRunner(small_checkpoint) as ref_runner:
        ref = rollout(ref_runner, hist, steps=4)
    with make_runner(spec) as runner:
        out = rollout(runner, hist, steps=4)
    assert out.shape == (2, 4, 3, 48, 40)
    _close(out, ref, spec[2])


def test_open_runner_errors(tmp_path, onnx_files):
    with pytest.raises(RunnerError, match="no such model file"):
        open_runner(tmp_path / "missing.onnx")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(RunnerError, match="unknown model type '.bin'"):
        open_runner(tmp_path / "m.bin")
    if not HAS_CUDA:
        with pytest.raises(RunnerError, match="no CUDA GPU"):
            open_runner(onnx_files["fp32"], device="cuda")
    not_avg = tmp_path / "other.onnx"
    import onnx

    model = onnx.load(onnx_files["fp32"])
    del model.metadata_props[:]
    onnx.save(model, not_avg)
    with pytest.raises(RunnerError, match="not an avg-rt ONNX export"), OnnxRuntimeRunner(not_avg):
        pass


def test_tensorrt_without_gpu_is_one_clear_error(tmp_path):
    plan = tmp_path / "generator.plan"
    plan.write_bytes(b"x")
    with pytest.raises(RunnerError, match="CUDA only|not installed"):
        with open_runner(plan, "tensorrt", "cpu"):
            pass


@pytest.mark.parametrize("tf32", [False, True])
def test_torch_runner_sets_cudnn_tf32_only_inside_predict(small_checkpoint, tf32):
    """PyTorch lets cuDNN use TF32 by default; FP32 runners switch it off for their forward."""
    seen = []
    before = torch.backends.cudnn.allow_tf32
    with TorchRunner(small_checkpoint, tf32=tf32) as runner:
        assert runner.model is not None
        runner.model.register_forward_pre_hook(
            lambda *_: seen.append(torch.backends.cudnn.allow_tf32)
        )
        runner.predict(random_history((1, 12, 32, 32), 0))
    assert seen == [tf32] and torch.backends.cudnn.allow_tf32 == before
    assert runner.name == ("torch-cpu-tf32" if tf32 else "torch-cpu")


def test_onnxruntime_cuda_provider_tf32_option(onnx_files):
    """onnxruntime's CUDA provider defaults to TF32; FP32 runners ask for IEEE float32."""
    strict = OnnxRuntimeRunner(onnx_files["fp32"], "cuda:1").providers()
    assert strict == [("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 0})]
    fast = OnnxRuntimeRunner(onnx_files["fp32"], "cuda", tf32=True)
    assert fast.providers()[0][1]["use_tf32"] == 1 and fast.name == "onnxrt-cuda-tf32"
    assert OnnxRuntimeRunner(onnx_files["fp32"]).providers() == ["CPUExecutionProvider"]


def test_onnxruntime_fixed_shape_session(onnx_files):
    """The sessions behind onnxruntime's CUDA graphs fix the symbolic dimensions (so the shape
    arithmetic folds away); here on CPU: the same output up to rounding (4e-8), and another
    shape is refused."""
    import numpy as np

    x = random_history((2, 12, 32, 40), 5)
    with OnnxRuntimeRunner(onnx_files["fp32"]) as runner:
        fixed = runner._session(tuple(x.shape))
        out = fixed.run(None, {runner.input_name: x.numpy()})[0]
        np.testing.assert_allclose(out, runner.predict(x).numpy(), rtol=0, atol=1e-6)
        with pytest.raises(Exception, match="dimension"):
            fixed.run(None, {runner.input_name: random_history((1, 12, 32, 40), 5).numpy()})


@needs_ort_cuda
def test_onnxruntime_cuda_graph_equals_eager(onnx_files, recwarn):
    hist = random_history((2, 4, 3, 64, 48), seed=3).cuda()
    # Each session runs cuDNN's own algorithm search and may pick other kernels: the two
    # agree to the FP32 limit on the same window, not bit for bit (and a free rollout would
    # amplify an 8-bit level flip), so each step is compared on the same input.
    x = hist.reshape(2, 12, 64, 48)
    with OnnxRuntimeRunner(onnx_files["fp32"], "cuda") as eager_runner:
        eager = eager_runner.predict(x).clone()
    with OnnxRuntimeRunner(onnx_files["fp32"], "cuda", cuda_graph=True) as runner:
        rollout(runner, hist, steps=3)
        graph = runner.predict(x).clone()
        assert runner._graphs[(2, 12, 64, 48)] is not None  # captured, no fallback
    assert not [w for w in recwarn if "CUDA graph" in str(w.message)]
    torch.testing.assert_close(graph, eager, rtol=0, atol=1e-4)


def test_tf32_is_refused_for_tensorrt_plans(tmp_path):
    plan = tmp_path / "generator.plan"
    plan.write_bytes(b"x")
    with pytest.raises(RunnerError, match="TF32 is not a runtime choice"):
        open_runner(plan, tf32=True)


def shipped_network() -> Generator:
    """The shipped small model's network, without its inference palette: these tests measure
    the convolutions' arithmetic, which the palette's snap would turn into whole-colour flips
    at the pixels next to a near-tie."""
    return load_generator(SHIPPED)[0].network_only().eval()


def test_tf32_rounding_would_break_fp32_parity(monkeypatch):
    """Why FP32 runners refuse TF32: rounding every convolution's inputs and weights to TF32's
    10 mantissa bits (what Ampere tensor cores do) moves one step of the shipped model past
    the FP32 limit on CPU too (the 5x5 select model by 6.8e-4, the 1x1 one shipped before by
    ~5e-3)."""

    def tf32(t: torch.Tensor) -> torch.Tensor:  # round to nearest, 13 low mantissa bits cleared
        bits = t.contiguous().view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)

    gen = shipped_network()
    x = random_history((1, 12, 210, 160), 1)
    with torch.inference_mode():
        ref = gen(x)
        conv = torch.nn.Conv2d._conv_forward
        monkeypatch.setattr(
            torch.nn.Conv2d, "_conv_forward", lambda m, i, w, b: conv(m, tf32(i), tf32(w), b)
        )
        rounded = gen(x)
    limit = TOLERANCES[("fp32", "step")].max_abs
    assert limit is not None
    assert 2 * limit < (rounded - ref).abs().max().item() < 2e-2


@needs_cuda
def test_cuda_fp32_is_ieee_and_tf32_is_opt_in():
    """On Ampere and newer GPUs TF32 moves the trained model's output well past the FP32
    limit (6.8e-4 when emulated on CPU); the default runner stays within it."""
    x = random_history((1, 12, 210, 160), 1)
    with TorchRunner(shipped_network()) as cpu:
        ref = cpu.predict(x).clone()
    with TorchRunner(shipped_network(), "cuda") as strict:
        assert (strict.predict(x.cuda()).cpu() - ref).abs().max().item() < 1e-4
    if torch.cuda.get_device_capability()[0] >= 8:
        with TorchRunner(shipped_network(), "cuda", tf32=True) as fast:
            assert (fast.predict(x.cuda()).cpu() - ref).abs().max().item() > 1e-4


@needs_cuda
def test_cuda_graph_rollout_equals_eager(small_checkpoint):
    hist = random_history((2, 4, 3, 64, 48), seed=3).cuda()
    with TorchRunner(small_checkpoint, "cuda") as runner:
        eager = rollout(runner, hist, steps=6, cuda_graph=False)
        graph = rollout(runner, hist, steps=6, cuda_graph=True)
    torch.testing.assert_close(graph, eager)


SHIPPED = Path(__file__).resolve().parents[2] / "models" / "small" / "checkpoint.pt"


def test_shipped_model_rollouts_agree_on_real_frames(tmp_path):
    """The Done-when of the rollout issue: torch and onnxruntime FP32, 64 free-running steps
    on Ms. Pac-Man at 210x160. Each step's own error (teacher-forced) stays under 1e-4. Free
    running, each backend feeds back its own 8-bit frames, so a value that float rounding puts
    on the other side of a level boundary differs by one level and the recursion spreads it
    (the shipped weights without their palette: none of the 8-bit values differ for the first
    48 steps, at most 0.21% at any step; with the palette none differ in 64 steps, which a
    value that lands on the other side of a near-tie could change). torch against itself with
    oneDNN off drifts the same way (`python benchmarks/parity.py`), so no float32 backend can
    bound single pixels there: the test bounds how many."""
    import numpy as np
    from avg_rt.export.to_onnx import save_onnx, to_onnx

    from avg_rt.data.atari import AtariConfig, play

    frames = np.stack(list(play(AtariConfig(max_frames=140, seed=1000), 0)))[-68:]
    hist = torch.from_numpy(frames[None, :4]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    onnx_path = save_onnx(to_onnx(load_generator(SHIPPED)[0]), tmp_path / "generator.onnx")
    with TorchRunner(SHIPPED) as ref_runner, OnnxRuntimeRunner(onnx_path) as runner:
        ref = rollout(ref_runner, hist, steps=64)
        out = rollout(runner, hist, steps=64)
        # The windows torch's rollout saw: its predictions fed back as 8-bit frames.
        windows = torch.cat([hist, round_to_8bit(ref)], dim=1).unfold(1, 4, 1)[:, :64]
        forced = torch.stack(  # each step fed torch's own window
            [
                runner.predict(windows[:, t].permute(0, 4, 1, 2, 3).reshape(1, 12, 210, 160))
                for t in range(64)
            ],
            dim=1,
        )
    assert (forced - ref).abs().amax().item() < 1e-4
    assert (out - ref).abs().mean(dim=(0, 2, 3, 4)).max().item() < 1e-4
    differing = (round_to_8bit(out) != round_to_8bit(ref)).float().mean(dim=(0, 2, 3, 4))
    assert differing[0].item() < 1e-3 and differing.max().item() < 1e-2


def test_onnxruntime_tensorrt_provider_is_asked_first_and_checked(onnx_files):
    """onnxruntime's TensorRT provider: asked before CUDA (which takes what TensorRT cannot),
    with engine and timing caches; where it does not load, one clear error, not a silent
    fallback to CUDA or CPU."""
    with pytest.raises(RunnerError, match="TensorRT provider runs on CUDA only"):
        OnnxRuntimeRunner(onnx_files["fp32"], "cpu", tensorrt=True)
    runner = OnnxRuntimeRunner(onnx_files["fp32"], torch.device("cuda", 0), tensorrt=True)
    (trt, trt_opts), (cuda, _) = runner.providers()
    assert (trt, cuda) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert trt_opts["trt_engine_cache_enable"] and trt_opts["trt_engine_cache_path"]
    assert runner.name == "onnxrt-trt"
    if not _ort_cuda():  # here: the CPU onnxruntime, which would quietly run it on the CPU
        with pytest.raises(RunnerError, match="provider"):
            runner.__enter__()
