"""Frame sources: where videos come from.

A source yields `VideoSpec`s: a name (a path or label, used in every error) and a `decode`
callable returning uint8 frames (T, H, W, 3). Decoding is deferred so that a cache can skip it
and so that one bad video can be reported without stopping the others. `load_video` decodes and
checks one spec; `load_videos` all of them, strictly.

`open_source(spec)` dispatches on what it is given:
- a folder of frame folders (the TF project's `Train/` or `Test/`), a folder of images (one
  video), or a folder of video files;
- a video file (.mp4, .avi, .gif, ...), read with imageio's ffmpeg plugin;
- a `.npy` (one video, (T, H, W, C)) or `.npz` (one video per array);
- a numpy array (T, H, W, C), a list of such arrays, or any iterable of frames (the hook for
  live programs such as an emulator). Frames may be grayscale, RGB or RGBA, uint8 or float in
  [0, 1]; all become RGB uint8.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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
    """A decoded video: uint8 frames (T, H, W, 3), possibly a read-only memory map."""

    name: str
    frames: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


class FrameSource(Protocol):
    """Anything that yields videos to decode."""

    def __iter__(self) -> Iterator[VideoSpec]: ...


def to_rgb_uint8(frame: Any, name: str) -> np.ndarray:
    """One frame as (H, W, 3) uint8: grayscale is repeated, alpha dropped, floats in [0, 1]
    scaled to 0..255. Anything else raises DataError naming `name`."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise DataError(
            name, f"frame of shape {a.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(name, f"frames must be uint8 or float in [0, 1], got {a.dtype}")
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
            raise DataError(name, "float frames must lie in [0, 1]")
        a = np.round(a * 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def stack_frames(
    frames: Iterable[Any], name: str, frame_names: Sequence[str] | None = None
) -> np.ndarray:
    """Stack frames into (T, H, W, 3) uint8, refusing mixed sizes with the offending frame named."""
    out: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        label = frame_names[i] if frame_names else f"{name} (frame {i})"
        rgb = to_rgb_uint8(frame, label)
        if out and rgb.shape != out[0].shape:
            h, w = out[0].shape[:2]
            raise DataError(
                label,
                f"frame is {rgb.shape[0]}x{rgb.shape[1]} but earlier frames of "
                f"this video are {h}x{w}",
            )
        out.append(rgb)
    if not out:
        raise DataError(name, "video has no frames")
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
    spec: VideoSpec, min_frames: int = 1, cache_dir: Path | None = None, why: str = ""
) -> Video:
    """Decode one video (through the memory-map cache when `cache_dir` is given) and check it
    has at least `min_frames` frames (`why`: what they are for, said in the error). Raises
    DataError naming the video."""
    if cache_dir is not None and spec.fingerprint is not None:
        from avg_rt.data.cache import cached_frames

        frames = cached_frames(spec, cache_dir)
    else:
        frames = spec.decode()
    if len(frames) < min_frames:
        because = f" ({why})" if why else ""
        raise DataError(
            spec.name, f"video has {len(frames)} frames, at least {min_frames} needed{because}"
        )
    return Video(spec.name, frames)


def load_videos(
    source: FrameSource, min_frames: int = 1, cache_dir: Path | None = None, why: str = ""
) -> list[Video]:
    """Decode every video of `source`; the first bad one raises DataError."""
    return [load_video(spec, min_frames, cache_dir, why) for spec in source]
