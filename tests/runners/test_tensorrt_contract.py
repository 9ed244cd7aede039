"""The TensorRT build and run code against a fake `tensorrt` and fake CUDA calls that enforce
the documented API (tests/fake_gpu.py): API misuse fails here, on a CPU, instead of in a
user's first minute on a GPU. The real thing runs in test_conformance.py where it exists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from avg_rt.export.shapes import Range, ShapeRanges
from fake_gpu import FakeGPU

from avg_rt.data.clips import round_to_8bit
from avg_rt.errors import RunnerError
from avg_rt.predict import rollout
from avg_rt.runners.trt import TensorRTRunner

RANGES = ShapeRanges(Range(1, 2, 4), Range(32, 40, 64), Range(32, 48, 64))


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGPU:
    fake = FakeGPU(gpus=[("Fake H100", "9.0"), ("Fake L4", "8.9")])
    fake.patch_torch(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", fake.tensorrt())
    return fake


def build(onnx_path: Path, out: Path, cache: Path | None = None) -> Path:
    from avg_rt.export.to_trt import build_engine

    plan = out / "generator.plan"
    build_engine(onnx_path, plan, RANGES, 12, 4, "fp32", cache or out / "timing.cache")
    return plan


def test_build_writes_plan_metadata_and_timing_cache(gpu, onnx_files, tmp_path):
    plan = build(onnx_files["fp32"], tmp_path)
    meta = json.loads(plan.with_suffix(".json").read_text())
    assert meta["profile"] == {"batch": [1, 2, 4], "height": [32, 40, 64], "width": [32, 48, 64]}
    assert (meta["tensorrt_version"], meta["compute_capability"]) == ("10.13.0", "9.0")
    assert (tmp_path / "timing.cache").read_bytes() == b"cache 10.13.0/9.0"


def test_build_with_a_timing_cache_from_another_gpu(gpu, onnx_files, tmp_path):
    """Review item 3: TensorRT refuses a cache from another GPU or version (the --overwrite
    path copies the old one in); the build goes on without it and writes a fresh one."""
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"cache 10.8.0/8.6")
    with pytest.warns(UserWarning, match="rejected this timing cache"):
        plan = build(onnx_files["fp32"], tmp_path, cache)
    assert plan.is_file() and cache.read_bytes() == b"cache 10.13.0/9.0"
    cache.write_bytes(b"\x00damaged")
    (tmp_path / "again").mkdir()
    with pytest.warns(UserWarning, match="rejected this timing cache"):
        build(onnx_files["fp32"], tmp_path / "again", cache)


@pytest.mark.parametrize("version", ["10.13.0", "11.4.0"])
def test_build_is_strongly_typed_on_10_and_11(monkeypatch, onnx_files, tmp_path, version):
    """TensorRT 10 keeps an FP16 graph's types only in a strongly typed network; 11 has no
    FP16 flag at all (the fake has none to misuse)."""
    fake = FakeGPU(version=version)
    fake.patch_torch(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", fake.tensorrt())
    build(onnx_files["fp16"], tmp_path)
    assert fake.calls[-1] == "build"


def test_runner_takes_cuda_without_an_index(gpu, onnx_files, tmp_path):
    """Review item 1: every caller passes "cuda"; torch.cuda.set_device refuses a device
    without an index."""
    plan = build(onnx_files["fp32"], tmp_path)
    with TensorRTRunner(plan, "cuda") as runner:
        assert runner.device == torch.device("cuda", 0) and runner.history_len == 4


def test_runner_checks_the_gpu_it_will_run_on(gpu, onnx_files, tmp_path):
    """Review item 1: the engine's GPU is compared with the device asked for, set first (the
    current device is another GPU here)."""
    gpu.current = 1
    plan = build(onnx_files["fp32"], tmp_path)  # built on GPU 1, sm 8.9
    gpu.current = 0
    with TensorRTRunner(plan, "cuda:1") as runner:
        assert runner.device == torch.device("cuda", 1)
    assert "set_device 1" in gpu.calls
    with pytest.raises(RunnerError, match=r"sm 8\.9.*sm 9\.0.*rebuild it here"):
        TensorRTRunner(plan, "cuda:0").__enter__()


def test_runner_without_memory_for_a_context_says_so(gpu, onnx_files, tmp_path):
    """Review item 5: create_execution_context() gives None when the profile's largest
    shapes do not fit; one clear error, not an AttributeError later."""
    plan = build(onnx_files["fp32"], tmp_path)
    gpu.context_oom = True
    with pytest.raises(RunnerError, match="could not create an execution context"):
        TensorRTRunner(plan, "cuda").__enter__()


def _on_host(runner: TensorRTRunner, gpu: FakeGPU) -> TensorRTRunner:
    """The fake GPU's memory is host memory: the runner's tensors live on the CPU, whose
    allocator aligns to 64 bytes (CUDA's to 512)."""
    runner.device = torch.device("cpu")
    gpu.alignment = 64
    return runner


def test_rollout_through_the_engine_and_off_the_legacy_stream(gpu, onnx_files, tmp_path):
    """Shapes and addresses are set before each enqueue (the fake computes from the raw
    buffers), and work asked on torch's legacy default stream (handle 0, where TensorRT
    synchronises the device) goes to the runner's own stream, ordered both ways (item 5)."""
    plan = build(onnx_files["fp32"], tmp_path)
    history = torch.rand(2, 4, 3, 40, 48) * 2 - 1
    with TensorRTRunner(plan, "cuda") as runner:
        preds = rollout(_on_host(runner, gpu), history, steps=3, cuda_graph=False)
        own = runner._stream.cuda_stream
    last = round_to_8bit(history[:, -1])  # the fake engine predicts the last frame
    torch.testing.assert_close(preds[:, 0], history[:, -1], rtol=0, atol=0)
    torch.testing.assert_close(preds[:, 2], last, rtol=0, atol=0)
    assert gpu.enqueued_on == [own] * 3
    step = [f"stream {own:#x} waits 0x0", f"enqueue on {own:#x}", f"stream 0x0 waits {own:#x}"]
    assert gpu.calls[-10:] == step * 3 + [f"stream {own:#x} synchronized"]  # in this order


def test_work_on_a_real_stream_stays_there(gpu, onnx_files, tmp_path):
    """On a side stream or under CUDA graph capture (a non-zero handle), the enqueue goes to
    torch's current stream itself: a capture must record it there."""
    plan = build(onnx_files["fp32"], tmp_path)
    gpu.stream = 0x7A0
    with TensorRTRunner(plan, "cuda") as runner:
        _on_host(runner, gpu).predict(torch.rand(1, 12, 40, 48))
    assert gpu.enqueued_on == [0x7A0]
    assert not [c for c in gpu.calls if "waits" in c]


def test_refused_shapes_and_addresses_are_errors_and_not_remembered(gpu, onnx_files, tmp_path):
    """Review follow-up: a shape TensorRT refuses is set again on the next call (not taken for
    set), an input of the wrong channel count is refused before TensorRT sees it, and an
    address TensorRT refuses (set_tensor_address gives False) is an error, not ignored."""
    plan = build(onnx_files["fp32"], tmp_path)
    with TensorRTRunner(plan, "cuda") as runner:
        runner = _on_host(runner, gpu)
        with pytest.raises(RunnerError, match="input has 9 channels, the engine takes 12"):
            runner.predict(torch.rand(1, 9, 40, 48))
        context = runner._context
        refuse = context.set_input_shape
        context.set_input_shape = lambda name, shape: False
        x = torch.rand(1, 12, 40, 48)
        with pytest.raises(RunnerError, match="refused the input shape"):
            runner.predict(x)
        context.set_input_shape = refuse
        torch.testing.assert_close(runner.predict(x), x[:, -3:])  # the shape is set this time
        gpu.alignment = 256
        offset = torch.rand(12 * 40 * 48 + 1)[1:].view(1, 12, 40, 48)  # 4 bytes past a block
        with pytest.raises(RunnerError, match="refused the address of history"):
            runner.predict(offset)


def test_runner_refuses_strided_and_out_of_profile_inputs(gpu, onnx_files, tmp_path):
    """Review item 9: TensorRT reads the raw buffer, so a strided view would give wrong
    frames silently; shapes outside the profile are refused before the enqueue."""
    plan = build(onnx_files["fp32"], tmp_path)
    with TensorRTRunner(plan, "cuda") as runner:
        runner = _on_host(runner, gpu)
        x = torch.rand(1, 12, 40, 96)
        with pytest.raises(RunnerError, match="contiguous float32.*strided"):
            runner.predict(x[..., ::2])
        with pytest.raises(RunnerError, match="contiguous float32"):
            runner.predict(x[..., :48].double().contiguous())
        with pytest.raises(RunnerError, match="width 96 is outside"):
            runner.predict(x)
        torch.testing.assert_close(runner.predict(x[..., :48].contiguous()), x[:, -3:, :, :48])
        assert gpu.enqueued_on == [runner._stream.cuda_stream]  # only the valid input ran


def test_a_capture_refused_by_tensorrt_runs_eagerly_and_says_why(monkeypatch):
    """Review item 4: a TensorRT enqueue refused under capture raises RunnerError; the
    rollout falls back to eager steps with a warning and records why."""
    import avg_rt.predict as predict

    def refuse(*args: object) -> None:
        raise RunnerError("generator.plan", "TensorRT execution failed")

    class Engine:
        device, name, graph_safe, history_len = torch.device("cuda", 0), "tensorrt", True, 4

        def predict(self, history: torch.Tensor) -> torch.Tensor:
            return history[:, -3:]

    monkeypatch.setattr(predict, "_capture", refuse)
    windows = [torch.zeros(1, 12, 8, 8) for _ in range(2)]
    with pytest.warns(UserWarning, match="running eagerly"):
        graphs, why = predict._graphs_or_why(
            Engine(), windows, windows[1], windows[0][:, :3], True, True
        )
    assert graphs is None and why == "capture failed: generator.plan: TensorRT execution failed"


def test_triton_repository_records_what_a_plan_is_bound_to(gpu, onnx_files, tmp_path):
    """Review item 7: a plan loads only in a Triton whose TensorRT is exactly the builder's."""
    from avg_rt.export.triton import write_repository

    plan = build(onnx_files["fp32"], tmp_path)
    (name,) = write_repository(tmp_path / "repo", [plan], 12, RANGES)
    record = json.loads((tmp_path / "repo" / name / "tensorrt.json").read_text())
    assert name == "avg_rt_fp32_trt"
    assert (record["tensorrt_version"], record["compute_capability"]) == ("10.13.0", "9.0")
    assert (tmp_path / "repo" / name / "1" / "model.plan").read_bytes() == plan.read_bytes()
