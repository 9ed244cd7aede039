"""A fake `tensorrt` module and fake CUDA calls that enforce the documented contracts, so that
misuse of the TensorRT 10/11 API or of torch.cuda fails on a CPU-only machine.

The fake checks what the real libraries check and what their documentation requires of the
caller: argument types, that a network was parsed before it is built, that every input has a
profile, that a timing cache from another GPU or TensorRT version is refused
(`set_timing_cache` returns False and the config then has no cache), that an execution context
may be None (out of memory), that shapes and tensor addresses are set before
`execute_async_v3`, and, as torch does, that `torch.cuda.set_device` gets an index. Its
"engine" predicts the last input frame, computed from the raw buffers it was given (host memory
here), so a wrong address or a strided input gives a wrong answer, as on a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch

MAGIC = b"FAKE-TRT-PLAN\n"


@dataclass
class FakeGPU:
    """The machine the fakes pretend to be: GPUs (name, compute capability) and a log."""

    gpus: list[tuple[str, str]] = field(default_factory=lambda: [("Fake H100", "9.0")])
    version: str = "10.13.0"
    current: int = 0
    context_oom: bool = False  # create_execution_context() gives None
    alignment: int = 256  # what set_tensor_address accepts (TensorRT: 256 bytes)
    stream: int = 0  # the handle of torch's current stream (0: the legacy default stream)
    calls: list[str] = field(default_factory=list)
    enqueued_on: list[int] = field(default_factory=list)  # stream handles

    # -- torch.cuda --------------------------------------------------------------------
    def index(self, device: Any, what: str) -> int:
        """torch's rule (`_get_device_index(..., optional=False)`): an int or an indexed
        CUDA device."""
        if isinstance(device, int):
            i = device
        elif isinstance(device, torch.device) and device.index is not None:
            i = device.index
        else:
            raise ValueError(
                f"{what}: Expected a torch.device with a specified index or an integer, "
                f"but got:{device}"
            )
        if not 0 <= i < len(self.gpus):
            raise RuntimeError(f"{what}: invalid device ordinal {i}")
        return i

    def patch_torch(self, monkeypatch: Any) -> None:
        gpu = self

        class Stream:
            handles = iter(range(0x1000, 0x2000, 0x10))

            def __init__(self, device: Any = None, handle: int | None = None):
                self.cuda_stream = next(Stream.handles) if handle is None else handle
                self.waits: list[int] = []

            def wait_stream(self, other: Stream) -> None:
                gpu.calls.append(f"stream {self.cuda_stream:#x} waits {other.cuda_stream:#x}")

            def synchronize(self) -> None:
                gpu.calls.append(f"stream {self.cuda_stream:#x} synchronized")

        def set_device(device: Any) -> None:
            gpu.current = gpu.index(device, "set_device")
            gpu.calls.append(f"set_device {gpu.current}")

        def get_device_properties(device: Any) -> types.SimpleNamespace:
            name, cc = gpu.gpus[gpu.index(device, "get_device_properties")]
            major, minor = (int(x) for x in cc.split("."))
            return types.SimpleNamespace(name=name, major=major, minor=minor)

        def current_stream(device: Any = None) -> Stream:
            if device is None:  # the runners name their device: the current one may differ
                raise AssertionError("current_stream() without a device")
            return Stream(handle=gpu.stream)

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpu.gpus))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: gpu.current)
        monkeypatch.setattr(torch.cuda, "set_device", set_device)
        monkeypatch.setattr(torch.cuda, "get_device_properties", get_device_properties)
        monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)

    # -- tensorrt ----------------------------------------------------------------------
    def tensorrt(self) -> types.ModuleType:
        """A module with the parts of the TensorRT API avg-rt uses, checked as documented."""
        gpu = self
        major = int(self.version.split(".")[0])
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.version  # type: ignore[attr-defined]

        class Logger:
            WARNING = 2

            def __init__(self, severity: int = 2):
                self.severity = severity

        flag_names = ["TF32"] + (["FP16", "INT8"] if major < 11 else [])
        BuilderFlag = enum.IntEnum("BuilderFlag", flag_names)  # noqa: N806 (TensorRT's names)
        NetworkFlag = enum.IntEnum(  # noqa: N806
            "NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"], start=0
        )
        MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"])  # noqa: N806

        def need(value: Any, kind: type | tuple[type, ...], what: str) -> None:
            if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
                raise TypeError(f"{what}: incompatible function arguments ({type(value)})")

        def identity() -> str:
            return f"{gpu.version}/{gpu.gpus[gpu.current][1]}"

        class Network:
            def __init__(self, flags: int):
                need(flags, int, "create_network")
                self.flags, self.inputs = flags, []  # type: list[str]

        class OnnxParser:
            def __init__(self, network: Network, logger: Logger):
                need(network, Network, "OnnxParser"), need(logger, Logger, "OnnxParser")
                self.network, self.errors = network, []  # type: list[str]

            def parse(self, model: bytes) -> bool:
                need(model, bytes, "OnnxParser.parse")
                graph = onnx.load_from_string(model).graph
                self.network.inputs = [i.name for i in graph.input]
                return True

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, i: int) -> str:
                return self.errors[i]

        class TimingCache:
            def __init__(self, origin: str):
                self.origin = origin

            def serialize(self) -> bytes:
                return b"cache " + self.origin.encode()

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                need(name, str, "set_shape")
                dims = [tuple(d) for d in (lo, opt, hi)]
                for d in dims:
                    for v in d:
                        need(v, int, "set_shape dims")
                if len({len(d) for d in dims}) != 1 or not all(
                    a <= b <= c for a, b, c in zip(*dims)
                ):
                    raise ValueError(f"set_shape {name}: need min <= opt <= max, got {dims}")
                self.shapes[name] = tuple(dims)

        class Config:
            def __init__(self) -> None:
                self.profiles: list[Profile] = []
                self.cleared: set[Any] = set()
                self.cache: TimingCache | None = None
                self.workspace = 0

            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                need(pool, MemoryPoolType, "set_memory_pool_limit"), need(size, int, "size")
                self.workspace = size

            def clear_flag(self, flag: Any) -> None:
                need(flag, BuilderFlag, "clear_flag")
                self.cleared.add(flag)

            def add_optimization_profile(self, profile: Profile) -> int:
                need(profile, Profile, "add_optimization_profile")
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def create_timing_cache(self, data: bytes) -> TimingCache | None:
                need(data, bytes, "create_timing_cache")
                if not data:
                    return TimingCache(identity())
                if not data.startswith(b"cache "):
                    return None  # not a timing cache at all
                return TimingCache(data[6:].decode())

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                need(cache, TimingCache, "set_timing_cache"), need(ignore_mismatch, bool, "i")
                if cache.origin != identity() and not ignore_mismatch:
                    self.cache = None  # rejected: the config has none
                    return False
                self.cache = cache
                return True

            def get_timing_cache(self) -> TimingCache | None:
                return self.cache

        class Builder:
            def __init__(self, logger: Logger):
                need(logger, Logger, "Builder")

            def create_network(self, flags: int = 0) -> Network:
                return Network(flags)

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes:
                need(network, Network, "build_serialized_network")
                need(config, Config, "build_serialized_network")
                if not network.inputs:
                    raise AssertionError("build_serialized_network before a parsed network")
                if len(config.profiles) != 1 or set(config.profiles[0].shapes) != set(
                    network.inputs
                ):
                    raise AssertionError("dynamic inputs need one profile with every input")
                if major < 11 and not network.flags & (1 << int(NetworkFlag.STRONGLY_TYPED)):
                    raise AssertionError("a weakly typed network: the FP16 graph would be lost")
                gpu.calls.append("build")
                head = {"profile": config.profiles[0].shapes, "built_for": identity()}
                return MAGIC + json.dumps(head).encode()

        class Context:
            def __init__(self, engine: Engine):
                self.engine = engine
                self.shapes: dict[str, tuple[int, ...]] = {}
                self.addresses: dict[str, int] = {}

            def set_input_shape(self, name: str, shape: Any) -> bool:
                need(name, str, "set_input_shape")
                shape = tuple(shape)
                for v in shape:
                    need(v, int, "set_input_shape dims")
                lo, _, hi = self.engine.profile[name]
                if len(shape) != len(lo) or not all(a <= v <= b for a, v, b in zip(lo, shape, hi)):
                    return False
                self.shapes[name] = shape
                return True

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                need(name, str, "set_tensor_address"), need(ptr, int, "set_tensor_address")
                if ptr == 0 or ptr % gpu.alignment:
                    return False  # TensorRT logs the error and refuses
                self.addresses[name] = ptr
                return True

            def execute_async_v3(self, stream_handle: int) -> bool:
                need(stream_handle, int, "execute_async_v3")
                (name,) = self.engine.profile
                if name not in self.shapes or len(self.addresses) != 2:
                    raise AssertionError("execute_async_v3 before every shape and address")
                gpu.enqueued_on.append(stream_handle)
                gpu.calls.append(f"enqueue on {stream_handle:#x}")
                b, c, h, w = self.shapes[name]
                out_name = next(n for n in self.addresses if n != name)
                x = _view(self.addresses[name], (b, c, h, w))
                _view(self.addresses[out_name], (b, 3, h, w))[:] = x[:, -3:]
                return True

        class Engine:
            def __init__(self, profile: dict[str, Any]):
                self.profile = {k: [tuple(d) for d in v] for k, v in profile.items()}

            def create_execution_context(self) -> Context | None:
                return None if gpu.context_oom else Context(self)

        class Runtime:
            def __init__(self, logger: Logger):
                need(logger, Logger, "Runtime")

            def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
                need(plan, bytes, "deserialize_cuda_engine")
                if not plan.startswith(MAGIC):
                    return None
                head = json.loads(plan[len(MAGIC) :])
                if head["built_for"] != identity():
                    return None
                return Engine(head["profile"])

        trt.Logger = Logger  # type: ignore[attr-defined]
        trt.BuilderFlag = BuilderFlag  # type: ignore[attr-defined]
        trt.NetworkDefinitionCreationFlag = NetworkFlag  # type: ignore[attr-defined]
        trt.MemoryPoolType = MemoryPoolType  # type: ignore[attr-defined]
        trt.Builder = Builder  # type: ignore[attr-defined]
        trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
        trt.Runtime = Runtime  # type: ignore[attr-defined]
        return trt


def _view(ptr: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array over the memory at `ptr` (host memory: the fake GPU's)."""
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape)
