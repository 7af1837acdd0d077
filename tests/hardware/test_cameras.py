"""Camera sources and the rig: 180° rotation of the top and right-wrist images, resizing to the
policy's resolution, newest-frame reading, and errors that name the camera and its device."""

import time

import numpy as np
import pytest

from hardware.cameras import (
    ROTATED_CAMERAS,
    CameraError,
    CameraRig,
    OpenCVSource,
    RealSenseSource,
    SyntheticSource,
    make_rig,
    make_source,
    to_policy_image,
)


def _marked(h=48, w=64) -> np.ndarray:
    """A frame with a red top-left block and a green bottom-right one."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:8, :8] = (255, 0, 0)
    img[-8:, -8:] = (0, 255, 0)
    return img


def test_top_and_right_wrist_are_rotated_and_all_resized():
    sources = {cam: SyntheticSource([_marked()]) for cam in ("top", "left_wrist", "right_wrist")}
    with CameraRig(sources, image_size=(24, 32), threaded=False) as rig:
        images = rig()
    assert set(ROTATED_CAMERAS) == {"top", "right_wrist"}
    for cam, img in images.items():
        assert img.shape == (24, 32, 3) and img.dtype == np.uint8
        red_corner = (0, 0) if cam == "left_wrist" else (-1, -1)  # rotated: red block ends bottom-right
        np.testing.assert_array_equal(img[red_corner], [255, 0, 0], err_msg=cam)


def test_rotation_is_exact_and_a_matching_size_is_left_alone():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    np.testing.assert_array_equal(to_policy_image(img, rotate=True, size=None), np.rot90(img, 2))
    np.testing.assert_array_equal(to_policy_image(img, rotate=False, size=(4, 6)), img)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        to_policy_image(img[..., 0], rotate=False, size=None)


def test_opencv_source_reads_a_recorded_video_as_rgb(tmp_path):
    import cv2

    path = str(tmp_path / "top.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for _ in range(3):
        bgr = np.zeros((48, 64, 3), dtype=np.uint8)
        bgr[:, :32] = (255, 0, 0)  # blue in OpenCV's BGR order
        writer.write(bgr)
    writer.release()
    with CameraRig({"left_wrist": make_source(path)}, image_size=(48, 64), threaded=False) as rig:
        img = rig()["left_wrist"]
    assert img.shape == (48, 64, 3)
    assert img[24, 5, 2] > 200 and img[24, 5, 0] < 40  # blue comes back in the blue (RGB) channel
    assert img[24, 60].max() < 40


def test_a_camera_that_cannot_be_opened_names_the_camera_and_device():
    good = SyntheticSource([_marked()])
    rig = CameraRig({"top": good, "right_wrist": OpenCVSource("/dev/video_does_not_exist")}, threaded=False)
    with pytest.raises(CameraError, match=r"right_wrist camera: cannot open OpenCV camera '/dev/video_does_not_exist'"):
        rig.open()
    assert not rig.is_open and good._closed.is_set()  # the camera already opened was closed again
    with pytest.raises(CameraError, match="not open"):
        rig()


def test_realsense_without_its_package_is_a_clear_error():
    try:
        import pyrealsense2  # noqa: F401
        pytest.skip("pyrealsense2 is installed here")
    except ImportError:
        pass
    src = make_source("realsense:123456")
    assert isinstance(src, RealSenseSource)
    with pytest.raises(CameraError, match=r"RealSense camera '123456': the pyrealsense2 package is not installed"):
        src.open()


def test_make_source_specs():
    assert make_source(2).index_or_path == 2
    assert make_source("2").index_or_path == 2
    assert make_source("/dev/video4").index_or_path == "/dev/video4"
    assert make_source("opencv:7").index_or_path == 7
    assert isinstance(make_source("synthetic", 64, 48), SyntheticSource)
    with pytest.raises(ValueError, match="unknown camera"):
        make_rig({"front": "synthetic"})


def test_threaded_rig_returns_the_newest_frame():
    src = SyntheticSource(period_s=0.005, size=(48, 64))
    with CameraRig({"left_wrist": src}, threaded=True) as rig:
        time.sleep(0.05)
        first = int(rig()["left_wrist"][0, 0, 1])
        time.sleep(0.05)
        second = int(rig()["left_wrist"][0, 0, 1])
    assert second >= first + 5  # the reader kept up; frames were not queued


def test_a_hung_camera_is_reported_stale():
    src = SyntheticSource(stall_after=2, size=(48, 64), device="synthetic top")
    with CameraRig({"top": src}, threaded=True, max_age_s=0.05) as rig:
        time.sleep(0.1)
        with pytest.raises(CameraError, match=r"top camera \(synthetic top\) is stale: newest frame is \d+ ms old"):
            rig()


def test_an_unplugged_camera_is_reported_with_its_error():
    src = SyntheticSource(fail_after=5, period_s=0.01, size=(48, 64), device="synthetic right")
    with CameraRig({"right_wrist": src}, threaded=True) as rig:
        rig()  # fine while it delivers
        time.sleep(0.1)
        with pytest.raises(CameraError, match=r"right_wrist camera \(synthetic right\) failed: .*unplugged"):
            rig()
