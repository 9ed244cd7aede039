"""Frame sources: where videos come from.

A source yields `VideoSpec`s: a name (a path or label, used in every error) and a `decode`
callable returning frames (T, H, W, C) as the files hold them. Decoding is deferred so that a
cache can skip it and so that one bad video can be reported without stopping the others.
`load_video` decodes and checks one spec; `load_videos` all of them, strictly.

`open_source(spec)` dispatches on what it is given:
- a folder of frame folders (the TF project's `Train/` or `Test/`), a folder of images (one
  video), or a folder of video files;
- a video file (.mp4, .avi, .gif, ...), read with imageio's ffmpeg plugin;
- a `.npy` (one video, (T, H, W, C)) or `.npz` (one video per array);
- a numpy array (T, H, W, C), a list of such arrays, or any iterable of frames (the hook for
  programs; `avg_rt.data.live` streams them while training runs). `load_video` makes frames
  what the model reads (`FrameFormat`): by default RGB uint8 from grayscale, RGB or RGBA,
  uint8 or float in [0, 1]; other channel counts, and float data in a declared range.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from avg_rt.data.frames import RGB8, FrameFormat
from avg_rt.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".mpg", ".mpeg", ".m4v"}
ARRAY_SUFFIXES = {".npy", ".npz"}


@dataclass(frozen=True)
class VideoSpec:
    """A video not yet decoded. `fingerprint` changes when the underlying files change
    (None where there are no files, e.g. in-memory arrays: such videos are never cached)."""

    name: str
    decode: Callable[[], np.ndarray]
    fingerprint: str | None = None


@dataclass(frozen=True)
class Video:
    """A decoded video: frames (T, H, W, C), uint8 (8-bit) or float32, possibly a read-only
    memory map."""

    name: str
    frames: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


class FrameSource(Protocol):
    """Anything that yields videos to decode."""

    def __iter__(self) -> Iterator[VideoSpec]: ...


def stack_frames(
    frames: Iterable[Any], name: str, frame_names: Sequence[str] | None = None
) -> np.ndarray:
    """Stack frames (H, W[, C]) into (T, H, W, C) as they are: dtype and channels kept (a
    video that mixes grayscale, RGB and RGBA images becomes RGB); `FrameFormat.conform` makes
    them what the model reads. Mixed sizes are refused with the offending frame named."""
    out: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        label = frame_names[i] if frame_names else f"{name} (frame {i})"
        a = np.asarray(frame)
        if a.dtype == np.float64:  # (float32 holds any frame; a video of float64 is 8x uint8)
            a = a.astype(np.float32)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise DataError(label, f"frame of shape {a.shape} is not (H, W) or (H, W, C)")
        if out and a.shape[:2] != out[0].shape[:2]:
            h, w = out[0].shape[:2]
            raise DataError(
                label,
                f"frame is {a.shape[0]}x{a.shape[1]} but earlier frames of this video are {h}x{w}",
            )
        out.append(a)
    if not out:
        raise DataError(name, "video has no frames")
    if len({a.shape[2] for a in out}) > 1:
        if not {a.shape[2] for a in out} <= {1, 3, 4}:
            raise DataError(name, "frames of this video have different channel counts")
        out = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, :3] for a in out]
    return np.stack(out)


def _natural_key(path: Path) -> list[Any]:
    # frame_9.png sorts before frame_10.png.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _fingerprint(files: Sequence[Path]) -> str:
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "L", "RGBA"):
                return np.asarray(im)
            return np.asarray(im.convert("RGBA" if "A" in im.getbands() else "RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(path, f"unreadable image ({e})") from None


def image_folder_spec(folder: Path, files: Sequence[Path]) -> VideoSpec:
    """A video made of the image `files` of `folder`, in natural sort order."""
    files = sorted(files, key=_natural_key)

    def decode() -> np.ndarray:
        return stack_frames((_read_image(f) for f in files), str(folder), [str(f) for f in files])

    return VideoSpec(str(folder), decode, _fingerprint(files))


def video_file_spec(path: Path) -> VideoSpec:
    """A video file decoded with imageio (ffmpeg plugin for movies, pillow for GIF)."""

    def decode() -> np.ndarray:
        import imageio.v3 as iio

        try:
            frames = iio.imread(path, index=None)
        except Exception as e:  # imageio raises many types for a broken file
            raise DataError(
                path, f"unreadable video ({type(e).__name__}: {e})".splitlines()[0]
            ) from None
        return stack_frames(frames, str(path))

    return VideoSpec(str(path), decode, _fingerprint([path]))


def array_file_specs(path: Path) -> list[VideoSpec]:
    """`.npy`: one video; `.npz`: one video per array, named `path:key`."""
    fp = _fingerprint([path])
    try:
        if path.suffix == ".npy":
            arrays = {"": np.load(path, mmap_mode="r", allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable array file ({e})") from None
    specs = []
    for key, arr in arrays.items():
        name = f"{path}:{key}" if key else str(path)
        specs.append(VideoSpec(name, _array_decoder(arr, name), f"{fp}:{key}"))
    return specs


def _array_decoder(array: np.ndarray, name: str) -> Callable[[], np.ndarray]:
    def decode() -> np.ndarray:
        if array.ndim not in (3, 4):
            raise DataError(name, f"expected frames (T, H, W[, C]), got shape {array.shape}")
        return stack_frames(array, name)

    return decode


def _failing_spec(path: Path, problem: str) -> VideoSpec:
    """A video that cannot be decoded: the error surfaces when it is loaded, so callers that
    skip bad videos (rollouts) go on with the others."""

    def decode() -> np.ndarray:
        raise DataError(path, problem)

    return VideoSpec(str(path), decode)


class FolderSource:
    """Videos in a folder: each subfolder of images is a video, each video or array file is one
    (or more, for .npz); images directly in the folder form one video."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __iter__(self) -> Iterator[VideoSpec]:
        if not self.root.is_dir():
            raise DataError(self.root, "not a folder")
        entries = sorted(self.root.iterdir(), key=_natural_key)
        images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        found = False
        if images:
            found = True
            yield image_folder_spec(self.root, images)
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.is_dir():
                frames = [
                    f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                ]
                if frames:
                    found = True
                    yield image_folder_spec(p, frames)
                elif any(p.iterdir()):
                    continue  # e.g. a results folder beside the data: not a video
                else:
                    found = True
                    yield _failing_spec(p, "empty video folder (no image frames)")
            elif p.suffix.lower() in VIDEO_SUFFIXES:
                found = True
                yield video_file_spec(p)
            elif p.suffix.lower() in ARRAY_SUFFIXES:
                found = True
                yield from array_file_specs(p)
        if not found:
            raise DataError(
                self.root,
                "no videos found (expected frame folders, images, video files or .npy/.npz)",
            )


class ArraySource:
    """In-memory videos: one array (T, H, W[, C]) or a sequence of them (names `label[i]`)."""

    def __init__(self, videos: np.ndarray | Sequence[np.ndarray], name: str = "array"):
        self.videos = [videos] if isinstance(videos, np.ndarray) else list(videos)
        self.name = name

    def __iter__(self) -> Iterator[VideoSpec]:
        single = len(self.videos) == 1
        for i, v in enumerate(self.videos):
            name = self.name if single else f"{self.name}[{i}]"
            yield VideoSpec(name, _array_decoder(np.asarray(v), name))


class IterableSource:
    """One video read from any iterable of frames (a generator, an emulator, a socket reader),
    up to `max_frames` of it."""

    def __init__(self, frames: Iterable[Any], name: str = "stream", max_frames: int | None = None):
        self.frames, self.name, self.max_frames = frames, name, max_frames

    def __iter__(self) -> Iterator[VideoSpec]:
        def decode() -> np.ndarray:
            it = iter(self.frames)
            if self.max_frames is not None:
                it = (f for _, f in zip(range(self.max_frames), it))
            return stack_frames(it, self.name)

        yield VideoSpec(self.name, decode)


def open_source(spec: str | Path | np.ndarray | Iterable[Any]) -> FrameSource:
    """A FrameSource for a path, an array, a list of arrays or an iterable of frames."""
    match spec:
        case str() | Path():
            path = Path(spec)
            if not path.exists():
                raise DataError(path, "no such file or folder")
            if path.is_dir():
                return FolderSource(path)
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                return _ListSource([video_file_spec(path)])
            if suffix in ARRAY_SUFFIXES:
                return _ListSource(array_file_specs(path))
            raise DataError(
                path,
                f"unsupported file type {suffix!r} (expected a folder, a video file or .npy/.npz)",
            )
        case np.ndarray():
            return ArraySource(spec)
        case list() if spec and all(isinstance(v, np.ndarray) and v.ndim == 4 for v in spec):
            return ArraySource(spec)
        case _:
            return IterableSource(spec)


class _ListSource:
    def __init__(self, specs: list[VideoSpec]):
        self.specs = specs

    def __iter__(self) -> Iterator[VideoSpec]:
        return iter(self.specs)


def load_video(
    spec: VideoSpec,
    min_frames: int = 1,
    cache_dir: Path | None = None,
    why: str = "",
    fmt: FrameFormat = RGB8,
) -> Video:
    """Decode one video (through the memory-map cache when `cache_dir` is given) as frames of
    `fmt` and check it has at least `min_frames` frames (`why`: what they are for, said in
    the error). Raises DataError naming the video."""
    if cache_dir is not None and spec.fingerprint is not None:
        from avg_rt.data.cache import cached_frames

        frames = cached_frames(spec, cache_dir, fmt)  # converted before it was cached
    else:
        frames = fmt.conform(spec.decode(), spec.name)
    if len(frames) < min_frames:
        because = f" ({why})" if why else ""
        raise DataError(
            spec.name, f"video has {len(frames)} frames, at least {min_frames} needed{because}"
        )
    return Video(spec.name, frames)


def load_videos(
    source: FrameSource,
    min_frames: int = 1,
    cache_dir: Path | None = None,
    why: str = "",
    fmt: FrameFormat = RGB8,
) -> list[Video]:
    """Decode every video of `source` as frames of `fmt`; the first bad one raises DataError."""
    return [load_video(spec, min_frames, cache_dir, why, fmt) for spec in source]
