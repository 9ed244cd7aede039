"""Per-video uint8 memory-map cache, for data sets larger than RAM.

Each decoded video is stored once as `<cache_dir>/<name>-<fingerprint>.npy` and opened read-only
with `mmap_mode="r"`, so the operating system pages frames in as the sampler touches them. The
fingerprint covers the source files' paths, sizes and modification times: when they change the
file name changes, the stale cache of that video is removed and the video is decoded again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from avg_rt.data.frames import RGB8, FrameFormat
from avg_rt.data.sources import VideoSpec
from avg_rt.files import atomic_path


def cache_path(spec: VideoSpec, cache_dir: Path, fmt: FrameFormat = RGB8) -> Path:
    """Where `spec`'s frames, as `fmt`, are cached: a readable stem plus the source's
    fingerprint and the format."""
    assert spec.fingerprint is not None
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name)[-60:].strip("_.") or "video"
    key = f"{spec.name}|{spec.fingerprint}" + ("" if fmt == RGB8 else f"|{fmt}")
    return cache_dir / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


def cached_frames(spec: VideoSpec, cache_dir: Path, fmt: FrameFormat = RGB8) -> np.ndarray:
    """`spec`'s frames as `fmt` (what the model reads) in a read-only memory map, decoding,
    converting and caching them on first use."""
    path = cache_path(spec, cache_dir, fmt)
    if not path.exists():
        frames = fmt.conform(spec.decode(), spec.name)
        cache_dir.mkdir(parents=True, exist_ok=True)
        stem = path.name.rsplit("-", 1)[0]
        for stale in cache_dir.glob(f"{stem}-*.npy"):
            stale.unlink(missing_ok=True)  # same video, older source files
        with atomic_path(path, overwrite=True) as tmp:
            np.save(tmp, frames)
    return np.load(path, mmap_mode="r")
