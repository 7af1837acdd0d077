"""The human operator at the real bench: keys, rollback choice, the saved rollback frame, the
scene-restore confirmation, leader-arm corrections, and a whole intervention through the
collection loop with RealXTrainer against the emulators producing a pair (tau^l, tau^w)."""

import os

import numpy as np
import pytest
from test_backend import emulated_bench

from envs.geometry import ARMS, POS, arm_slice
from flowpro.collect import intervention_rollout, pair_frames
from flowpro.operator import Intervention
from hardware.cameras import CameraRig, SyntheticSource
from hardware.dobot_client import DobotConfig, StaleFeedbackError
from hardware.emulator import XTrainerEmulator
from hardware.errors import HardwareError
from hardware.emulator_process import EmulatorProcess
from hardware.human_operator import HumanOperator, HumanOperatorConfig, joints_to_action
from hardware.keys import QueueKeys, ScriptedKeys, StdinKeys
from hardware.teleop import JointTeleoperator, LeaderArms, ScriptedTeleoperator


@pytest.fixture
def bench():
    with emulated_bench() as b:
        yield b


class PushLeft:
    """A policy that pushes the left tool 8 mm along +x per step from where it starts."""

    def reset(self):
        self.target = None

    def predict_chunk(self, obs, instruction):
        if self.target is None:
            self.target = obs["agent_pos"].copy()
        self.target[arm_slice("left")][POS] += [0.008, 0.0, 0.0]
        return self.target[None].copy()


def _rig():
    frames = []
    for k in range(3):  # the scene "changes" from frame to frame
        img = np.zeros((48, 64, 3), dtype=np.uint8)
        img[:, :, 0] = 40 * k
        frames.append(img)
    return CameraRig({cam: SyntheticSource(frames) for cam in ("top", "left_wrist", "right_wrist")},
                     image_size=(24, 32), threaded=False).open()


def test_a_human_intervention_through_the_collection_loop_makes_a_pair(bench, tmp_path):
    import cv2

    backend, _, _ = bench
    backend.time_limit_s, backend.cameras, backend.rollback_speed = 0.8, _rig(), 1.0
    # Nothing for 9 steps, then one more step of rollback and the intervention; confirm the
    # restored scene; 5 correction steps; hand back.
    keys = ScriptedKeys([None] * 9 + ["+", "i", "c"] + [None] * 5 + ["h"])
    deltas = np.zeros((8, 14))  # row 0 is read to check the alignment, rows 1.. for the correction
    deltas[:, 7] = 0.015 * np.arange(8)  # the right leader arm turns J1
    deltas[:, 6], deltas[:, 13] = 0.2, 1.0  # left gripper closing, right open
    teleop = ScriptedTeleoperator(deltas, relative=True)
    log = []
    operator = HumanOperator(teleop, keys, HumanOperatorConfig(k_back=4, k_step=2, frames_dir=str(tmp_path),
                                                               confirm_timeout_s=2.0), log=log.append)
    assert all(callable(getattr(operator, m)) for m in ("reset", "watch", "begin_correction", "correction_action"))
    pairs, summary = intervention_rollout(backend, PushLeft(), operator, seed=7, n_action_steps=1, pictures=True)

    assert summary["interventions"] == 1 and summary["k_back"] == [6] and summary["outcome"] == "time_limit"
    (pair,) = pairs
    assert pair.corrected and pair.intervention == Intervention(9, 4, "human", "operator")
    assert len(pair.loser) == 6 and len(pair.winner) == 5
    # Both trajectories start from the same state: the arms were driven back to step 4's joints.
    np.testing.assert_allclose(pair.winner[0].obs["joint_pos"][:6], pair.loser[0].obs["joint_pos"][:6], atol=3e-3)
    np.testing.assert_allclose(pair.winner[0].obs["joint_pos"][7:13], pair.loser[0].obs["joint_pos"][7:13], atol=3e-3)
    # The correction's actions are the tool poses of the leader joints; the right arm followed J1.
    base = pair.loser[0].obs["joint_pos"]
    for k, step in enumerate(pair.winner):
        row = base + deltas[k + 1]
        row[[6, 13]] = deltas[k + 1][[6, 13]]
        np.testing.assert_allclose(step.action, joints_to_action(backend, row), atol=3e-3)
    assert pair.winner[-1].info["time_s"] == pytest.approx(9 / 30)
    assert backend.observe()["joint_pos"][7] - base[7] > 0.05
    # The frame shown to the operator is the one recorded at the rollback step (all three cameras).
    (frame,) = operator.frames
    sheet = cv2.imread(str(frame))[..., ::-1]
    expected = np.concatenate([pair.loser[0].obs["pixels"][c] for c in ("top", "left_wrist", "right_wrist")], axis=1)
    np.testing.assert_array_equal(sheet, expected)
    assert frame.name == "rollback_0001_step00004.png" and any(str(frame) in m for m in log)
    assert {k: v.shape for k, v in pair.pictures.items()} == {"intervention": (240, 320, 3), "rollback": (240, 320, 3)}
    # Written exactly like a simulated pair.
    frames = pair_frames(pair, "reach", 1, 0)
    assert [f["role"] for f in frames] == ["l"] * 6 + ["w"] * 5
    assert [bool(f["intervention"][0]) for f in frames] == [False] * 6 + [True] * 5
    assert frames[0]["observation.images.top"].shape == (24, 32, 3) and frames[0]["rollback_index"][0] == 4
    backend.cameras.close()


class MisalignedThenAligned:
    """A leader the operator first forgets to align (left J2 0.4 rad off)."""

    def __init__(self, follower):
        self.rows = [follower + np.r_[0, 0.4, np.zeros(12)], follower.copy()]
        self.started = None

    def start(self, follower_joints):
        self.started = follower_joints

    def read_joints(self):
        return self.rows.pop(0) if len(self.rows) > 1 else self.rows[0]


def test_confirm_is_refused_while_the_leader_arms_are_misaligned(bench, tmp_path):
    backend, _, _ = bench
    obs, _ = backend.reset()
    backend.act(obs["agent_pos"])
    follower = backend.observe()["joint_pos"]
    teleop = MisalignedThenAligned(follower)
    assert isinstance(teleop, JointTeleoperator)
    log = []
    keys = ScriptedKeys(["x", "c", None, "\n"])
    op = HumanOperator(teleop, keys, HumanOperatorConfig(frames_dir=str(tmp_path), confirm_timeout_s=2.0), log=log.append)
    op.begin_correction(backend, Intervention(1, 0, "human", "operator"))
    assert keys.exhausted and teleop.started is not None
    assert any("left leader arm's J2 is 0.40 rad from the robot" in m for m in log)
    assert all(not backend.safe[a].watchdog.engaged for a in ARMS)  # paused while the human works
    # ... and the next step re-engages from the measured joints.
    backend.act(joints_to_action(backend, follower))
    assert all(backend.safe[a].watchdog.engaged for a in ARMS)


def test_confirm_times_out_with_a_clear_error(bench, tmp_path):
    backend, _, _ = bench
    backend.reset()
    op = HumanOperator(ScriptedTeleoperator(np.zeros((1, 14)), relative=True), ScriptedKeys([]),
                       HumanOperatorConfig(frames_dir=str(tmp_path), confirm_timeout_s=0.1), log=lambda m: None)
    with pytest.raises(TimeoutError, match="did not confirm the scene restore within 0.1 s") as e:
        op.begin_correction(backend, Intervention(0, 0, "human", "operator"))
    assert isinstance(e.value, HardwareError)  # a session ends on it as on any bench fault


def test_every_bench_fault_derives_from_the_one_hardware_root():
    """A session catches HardwareError alone (hardware/errors.py): every fault class of the drivers,
    the safety layer, the cameras and the operator derives from it; other errors are bugs."""
    from hardware import cameras, dobot_client, dobot_protocol, feetech, safety
    from hardware.errors import OperatorTimeout

    faults = [c for m in (cameras, dobot_client, dobot_protocol, feetech, safety) for c in vars(m).values()
              if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == m.__name__]
    assert len(faults) >= 20 and all(issubclass(c, HardwareError) for c in faults), \
        [c.__name__ for c in faults if not issubclass(c, HardwareError)]
    assert issubclass(OperatorTimeout, TimeoutError) and not issubclass(ValueError, HardwareError)


def test_rollback_keys_are_bounded_and_success_is_marked(bench, tmp_path):
    backend, _, _ = bench
    obs, _ = backend.reset()
    keys = QueueKeys()
    op = HumanOperator(ScriptedTeleoperator(np.zeros((1, 14))), keys,
                       HumanOperatorConfig(k_back=3, k_step=2, max_back=6, frames_dir=str(tmp_path)), log=lambda m: None)
    op.reset(backend, 0)
    keys.press("-", "-", "+", "+", "+", "+", "s")
    assert op.watch(backend, []) is None and op.k_back == 6  # 3 → 1 → 1 → 3 → 5 → 6 → 6
    _, info = backend.act(obs["agent_pos"])
    assert info["is_success"]
    keys.press("i")
    from envs.rollout import StepRecord
    history = [StepRecord(obs, obs["agent_pos"], info)] * 4
    iv = op.watch(backend, history)
    assert (iv.step, iv.rollback_index, iv.k_back) == (3, 0, 4)  # clipped at the episode start
    assert op.frames == []  # no cameras: nothing to save
    with pytest.raises(ValueError, match="k_back"):
        HumanOperatorConfig(k_back=0)


def test_stdin_keys_queue_keys_and_run_immediate_actions():
    r, w = os.pipe()
    stops = []
    with os.fdopen(r) as stream:
        keys = StdinKeys(stream, immediate={" ": lambda: stops.append("stop")})
        with os.fdopen(w, "w") as out:
            out.write("i+ c")
        keys.thread.join(timeout=2.0)
        assert [keys.poll() for _ in range(5)] == ["i", "+", "c", None, None] and stops == ["stop"]
        keys.close()


def test_leader_arms_are_read_only_and_report_staleness():
    bench = EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0).start()
    emus = bench.arms
    try:
        q = np.deg2rad([-80, 10, -95, 5, 90, 90])
        emus["left"].place(np.rad2deg(q))  # a human drags the left leader arm
        feeds = {arm: DobotConfig(e.host, feedback_port=e.ports["feedback"]) for arm, e in emus.items()}
        with LeaderArms(feeds, grippers={"left": lambda: 0.25}) as leader:
            assert leader.readers["left"].wait(lambda fb: abs(fb.q_actual_deg[0] + 80) < 1e-3, 1.0)
            row = leader.read_joints()
            np.testing.assert_allclose(row[:6], q, atol=1e-4)  # the servos' sag under the fingers: ~5e-5 rad
            assert row[6] == 0.25 and row[13] == 1.0
            emus["right"].faults.feedback_paused = True
            leader.readers["right"].wait(lambda fb: False, 0.15)
            with pytest.raises(StaleFeedbackError, match="right leader arm"):
                leader.read_joints()
        assert all(e.commands_seen == [] for e in emus.values())  # nothing was ever sent to a leader
    finally:
        bench.close()
