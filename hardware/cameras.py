"""The X-Trainer's three RGB cameras as the real backend's image source (docs/platform.md §Cameras).

docs/platform.md §Cameras: top + left-wrist + right-wrist cameras, 640×480; the X-Trainer's own software rotates
the **top and right-wrist** images by 180° (:data:`ROTATED_CAMERAS`), and the policies are trained
on images resized to their resolution (``image_size`` = (height, width), as in the simulator).

Sources (:class:`FrameSource`; :func:`make_source` parses a device spec):

- :class:`OpenCVSource`: ``cv2.VideoCapture`` on a device index, ``/dev/videoN`` or a video file
  (the default; OpenCV is installed with the project);
- :class:`RealSenseSource`: an Intel RealSense colour stream by serial number, when the
  ``pyrealsense2`` package is installed (``realsense:<serial>``);
- :class:`SyntheticSource`: recorded frames (looped) or a generated test pattern, for tests and
  demos without cameras (``synthetic``).

:class:`CameraRig` opens the three sources, reads each on its own thread keeping only the newest
frame (as the Dobot feedback reader does: a slow control loop must never see an old image), and
when called returns ``{camera: HxWx3 uint8 RGB}`` rotated and resized, which is what
:class:`hardware.backend.RealXTrainer` takes as ``cameras``. A camera that cannot be opened, stops
delivering frames, or delivers frames older than ``max_age_s`` raises :class:`CameraError` naming
the camera and its device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from envs.xtrainer import CAMERAS
from hardware.errors import HardwareError

ROTATED_CAMERAS = ("top", "right_wrist")  # docs/platform.md §Cameras: rotated by 180° by the X-Trainer software
NATIVE_SIZE = (480, 640)  # (height, width) of the X-Trainer cameras


class CameraError(HardwareError, RuntimeError):
    """A camera could not be opened or stopped delivering frames; the message names the device."""


class FrameSource(Protocol):
    """One RGB stream. ``device`` names it in errors; ``read`` blocks until the next frame."""

    device: str

    def open(self) -> None: ...

    def read(self) -> np.ndarray:
        """The next frame, HxWx3 uint8 RGB."""
        ...

    def close(self) -> None: ...


class OpenCVSource:
    """``cv2.VideoCapture`` on a device index, a device path or a video file."""

    def __init__(self, device: int | str, width: int = 640, height: int = 480, fps: float = 30.0):
        self.index_or_path, self.width, self.height, self.fps = device, width, height, fps
        self.device = f"OpenCV camera {device!r}"
        self._cap = None

    def open(self) -> None:
        try:
            import cv2
        except ImportError as e:
            raise CameraError(f"{self.device}: OpenCV (the cv2 module) is not installed") from e
        cap = cv2.VideoCapture(self.index_or_path)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open {self.device}: no such device or file, it is in use, or this "
                              "OpenCV build cannot read it (check the device path / index and its permissions)")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def read(self) -> np.ndarray:
        if self._cap is None:
            raise CameraError(f"{self.device} is not open")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise CameraError(f"{self.device} delivered no frame (unplugged, or the end of a recording)")
        return np.ascontiguousarray(frame[..., ::-1])  # OpenCV gives BGR

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class RealSenseSource:
    """The colour stream of an Intel RealSense camera (needs the ``pyrealsense2`` package)."""

    def __init__(self, serial: str, width: int = 640, height: int = 480, fps: int = 30, timeout_ms: int = 1000):
        self.serial, self.width, self.height, self.fps, self.timeout_ms = serial, width, height, fps, timeout_ms
        self.device = f"RealSense camera {serial!r}"
        self._pipeline = None

    def open(self) -> None:
        try:
            import pyrealsense2 as rs
        except ImportError as e:
            raise CameraError(f"cannot open {self.device}: the pyrealsense2 package is not installed "
                              "(use an OpenCV device instead, or install pyrealsense2)") from e
        pipeline, config = rs.pipeline(), rs.config()
        config.enable_device(self.serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, int(self.fps))
        try:
            pipeline.start(config)
        except RuntimeError as e:
            raise CameraError(f"cannot open {self.device}: {e}") from e
        self._pipeline = pipeline

    def read(self) -> np.ndarray:
        if self._pipeline is None:
            raise CameraError(f"{self.device} is not open")
        try:
            frames = self._pipeline.wait_for_frames(self.timeout_ms)
        except RuntimeError as e:
            raise CameraError(f"{self.device} delivered no frame: {e}") from e
        return np.asanyarray(frames.get_color_frame().get_data()).copy()

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None


class SyntheticSource:
    """Recorded frames (looped) or, without frames, a test pattern whose top-left block encodes the
    frame number; ``period_s`` paces it like a real camera. ``stall_after`` frames, it blocks
    forever (a hung camera); ``fail_after`` frames, it raises (an unplugged one)."""

    def __init__(self, frames: Sequence[np.ndarray] | None = None, *, size: tuple[int, int] = NATIVE_SIZE,
                 period_s: float = 0.0, device: str = "synthetic camera", stall_after: int | None = None,
                 fail_after: int | None = None):
        self.frames = [np.asarray(f, dtype=np.uint8) for f in frames] if frames is not None else None
        if self.frames is not None and not self.frames:
            raise ValueError("frames is empty")
        self.size, self.period_s, self.device = size, period_s, device
        self.stall_after, self.fail_after = stall_after, fail_after
        self.count = 0
        self._closed = threading.Event()

    def open(self) -> None:
        self._closed.clear()

    def read(self) -> np.ndarray:
        if self.fail_after is not None and self.count >= self.fail_after:
            raise CameraError(f"{self.device} delivered no frame (unplugged)")
        if self.stall_after is not None and self.count >= self.stall_after:
            self._closed.wait()
            raise CameraError(f"{self.device} is closed")
        if self.period_s:
            time.sleep(self.period_s)
        n, self.count = self.count, self.count + 1
        if self.frames is not None:
            return self.frames[n % len(self.frames)].copy()
        img = np.zeros((*self.size, 3), dtype=np.uint8)
        img[:, :, 2] = np.linspace(0, 255, self.size[1], dtype=np.uint8)[None]  # blue ramp left→right
        img[:16, :16] = (255, n % 256, 0)
        return img

    def close(self) -> None:
        self._closed.set()


def make_source(spec: int | str, width: int = 640, height: int = 480, fps: float = 30.0) -> FrameSource:
    """A source from a device spec: ``0`` / ``"0"`` / ``"/dev/video2"`` / ``"video.mp4"`` /
    ``"opencv:<index or path>"`` (OpenCV), ``"realsense:<serial>"``, ``"synthetic"``."""
    if isinstance(spec, int):
        return OpenCVSource(spec, width, height, fps)
    kind, sep, rest = spec.partition(":")
    if sep and kind == "realsense":
        return RealSenseSource(rest, width, height, int(fps))
    if sep and kind == "opencv":
        spec = rest
    elif spec == "synthetic":
        return SyntheticSource(size=(height, width), period_s=1.0 / fps)
    return OpenCVSource(int(spec) if spec.isdigit() else spec, width, height, fps)


def to_policy_image(img: np.ndarray, *, rotate: bool, size: tuple[int, int] | None) -> np.ndarray:
    """Rotate by 180° (top and right-wrist cameras, docs/platform.md §Cameras) and resize to
    ``size`` = (height, width)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {img.shape} dtype {img.dtype}")
    if rotate:
        img = img[::-1, ::-1]
    if size is not None and tuple(img.shape[:2]) != tuple(size):
        import cv2

        h, w = size
        interp = cv2.INTER_AREA if h <= img.shape[0] and w <= img.shape[1] else cv2.INTER_LINEAR
        img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)
    return np.ascontiguousarray(img)


class _LatestFrame:
    """Reads a source on a thread and keeps only its newest frame."""

    def __init__(self, camera: str, source: FrameSource):
        self.camera, self.source = camera, source
        self.frame: np.ndarray | None = None
        self.received_s = float("-inf")
        self.error: BaseException | None = None
        self.frames = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"camera-{camera}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except BaseException as e:  # noqa: BLE001 -- kept and raised by the reader
                with self._cond:
                    self.error = e
                    self._cond.notify_all()
                return
            with self._cond:
                self.frame, self.received_s = frame, time.monotonic()
                self.frames += 1
                self._cond.notify_all()

    def wait_first(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.frame is not None or self.error is not None, timeout_s)

    def latest(self) -> tuple[np.ndarray | None, float]:
        """The newest frame and its age (s)."""
        with self._cond:
            return self.frame, time.monotonic() - self.received_s

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout=timeout_s)


class CameraRig:
    """The X-Trainer's cameras: ``rig()`` → ``{camera: image}`` rotated and resized (docs/platform.md §Cameras).

    ``threaded=True`` reads every source on its own thread and returns the newest frames,
    refusing any older than ``max_age_s``; ``threaded=False`` reads each source in the call.
    """

    def __init__(self, sources: Mapping[str, FrameSource], image_size: tuple[int, int] | None = None, *,
                 rotate: Sequence[str] = ROTATED_CAMERAS, threaded: bool = True, max_age_s: float = 0.5,
                 first_frame_timeout_s: float = 5.0):
        unknown = sorted(set(sources) - set(CAMERAS))
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the X-Trainer's cameras are {list(CAMERAS)}")
        self.sources = {cam: sources[cam] for cam in CAMERAS if cam in sources}
        self.image_size, self.rotate = (tuple(image_size) if image_size else None), set(rotate)
        self.threaded, self.max_age_s, self.first_frame_timeout_s = threaded, max_age_s, first_frame_timeout_s
        self._readers: dict[str, _LatestFrame] = {}
        self._opened: list[FrameSource] = []

    @property
    def is_open(self) -> bool:
        return bool(self._opened)

    def open(self) -> CameraRig:
        """Open every camera (closing those already open if one fails) and wait for first frames."""
        try:
            for cam, src in self.sources.items():
                try:
                    src.open()
                except CameraError as e:
                    raise CameraError(f"{cam} camera: {e}") from e
                self._opened.append(src)
            if self.threaded:
                for cam, src in self.sources.items():
                    self._readers[cam] = _LatestFrame(cam, src)
                for cam, r in self._readers.items():
                    if not r.wait_first(self.first_frame_timeout_s):
                        raise CameraError(f"{cam} camera ({r.source.device}) delivered no frame within "
                                          f"{self.first_frame_timeout_s} s")
                    self._raise_if_failed(r)
        except BaseException:
            self.close()
            raise
        return self

    def _raise_if_failed(self, r: _LatestFrame) -> None:
        if r.error is not None:
            raise CameraError(f"{r.camera} camera ({r.source.device}) failed: {r.error}") from r.error

    def raw(self) -> dict[str, np.ndarray]:
        """The newest frame of every camera as delivered (not rotated or resized)."""
        if not self._opened:
            raise CameraError("the cameras are not open: call open() first")
        if not self.threaded:
            out = {}
            for cam, src in self.sources.items():
                try:
                    out[cam] = src.read()
                except CameraError as e:
                    raise CameraError(f"{cam} camera: {e}") from e
            return out
        out = {}
        for cam, r in self._readers.items():
            frame, age = r.latest()
            self._raise_if_failed(r)
            if age > self.max_age_s:
                raise CameraError(f"{cam} camera ({r.source.device}) is stale: newest frame is "
                                  f"{age * 1000:.0f} ms old (limit {self.max_age_s * 1000:.0f} ms)")
            out[cam] = frame
        return out

    def __call__(self) -> dict[str, np.ndarray]:
        """``{camera: HxWx3 uint8 RGB}``, rotated (top, right wrist) and resized to ``image_size``."""
        return {cam: to_policy_image(img, rotate=cam in self.rotate, size=self.image_size)
                for cam, img in self.raw().items()}

    def close(self) -> None:
        # Let the readers finish their current read before releasing a device under them; a reader
        # stuck in read() (a hung camera) is unblocked by closing its source.
        for r in self._readers.values():
            r.stop()
        for r in self._readers.values():
            r.join(0.2)
        for src in self._opened:
            try:
                src.close()
            except Exception:  # noqa: BLE001 -- closing the others matters more
                pass
        for r in self._readers.values():
            r.join(0.5)
        self._readers.clear()
        self._opened.clear()

    def __enter__(self) -> CameraRig:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def make_rig(devices: Mapping[str, int | str], image_size: tuple[int, int] | None = None, *,
             width: int = 640, height: int = 480, fps: float = 30.0,
             source_factory: Callable[..., FrameSource] = make_source, **kwargs) -> CameraRig:
    """A rig from ``{camera: device spec}`` (see :func:`make_source`)."""
    return CameraRig({cam: source_factory(spec, width, height, fps) for cam, spec in devices.items()},
                     image_size, **kwargs)
