"""Demonstration datasets: LeRobotDataset v3.0 round trip, resume, refusal, Ctrl-C."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from envs.dataset import DatasetMismatch
from envs.env import XTrainerEnv
from envs.expert_eval import main as expert_eval_main
from envs.record import main as record_main
from envs.record import record
from envs.rollout import ExpertPolicy, rollout

REPO = Path(__file__).resolve().parents[1]


def _load(root, repo_id):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend="pyav")


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_usb_demo_round_trips_through_lerobot(tmp_path):
    root = tmp_path / "usb"
    summary = record("usb", 1, "id", root, seed=3, progress=False)
    assert summary["episodes"] == 1
    ds = _load(root, "flowpro/usb_id_demos")
    assert ds.num_episodes == 1 and ds.fps == 30
    frame = ds[0]
    for cam in ("top", "left_wrist", "right_wrist"):
        assert tuple(frame[f"observation.images.{cam}"].shape) == (3, 96, 96)
    assert frame["task"] == "pick up the power strip and plug the USB lamp into it"
    assert frame["role"] == "sft" and not bool(frame["intervention"]) and int(frame["episode_seed"]) == 3
    # The stored actions are exactly the expert's (the simulation is deterministic).
    env = XTrainerEnv(task="usb", obs_mode="state")
    result = rollout(env, ExpertPolicy(env, 3), seed=3, n_action_steps=1, record=True)
    stored = np.stack([ds[i]["action"].numpy() for i in range(ds.num_frames)])
    assert stored.shape[0] == len(result.trajectory)
    assert np.allclose(stored, np.stack([s.action for s in result.trajectory]).astype(np.float32))
    env.close()


def test_resume_continues_with_the_next_seed(tmp_path):
    root = tmp_path / "reach"
    record("reach", 2, "id", root, progress=False)
    record("reach", 4, "id", root, progress=False)
    ds = _load(root, "flowpro/reach_id_demos")
    assert ds.num_episodes == 4
    seeds = [int(ds[int(i)]["episode_seed"]) for i in ds.meta.episodes["dataset_from_index"]]
    assert seeds == [0, 1, 2, 3]


def test_recording_other_task_into_dataset_is_refused(tmp_path):
    root = tmp_path / "demos"
    record("reach", 1, "id", root, progress=False)
    before = _tree_digest(root)
    with pytest.raises(DatasetMismatch, match="task: has 'reach', asked 'usb'"):
        record("usb", 1, "id", root, progress=False)
    assert _tree_digest(root) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetMismatch, match="not a FlowPRO dataset"):
        record("reach", 1, "id", foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_unknown_names_give_clear_cli_errors(tmp_path, capsys):
    assert record_main(["--task", "nope", "--episodes", "1", "--root", str(tmp_path / "x")]) == 2
    assert "valid tasks:" in capsys.readouterr().err
    assert expert_eval_main(["--task", "usb", "--split", "train", "--episodes", "1"]) == 2
    assert "valid splits: id, ood" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_ctrl_c_leaves_valid_dataset_and_rerun_continues(tmp_path):
    root = tmp_path / "reach"
    cmd = [sys.executable, "-m", "envs.record", "--task", "reach", "--episodes", "200", "--root", str(root)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A shell that started pytest in the background leaves SIGINT ignored; the child must get Ctrl-C.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    info = root / "meta/info.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (info.exists() and json.loads(info.read_text())["total_episodes"] >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again" in err
    k = _load(root, "flowpro/reach_id_demos").num_episodes
    assert k >= 2
    assert not root.with_name(root.name + ".partial").exists()
    record("reach", k + 1, "id", root, progress=False)
    ds = _load(root, "flowpro/reach_id_demos")
    seeds = [int(ds[int(i)]["episode_seed"]) for i in ds.meta.episodes["dataset_from_index"]]
    assert seeds == list(range(k + 1))


def test_execution_noise_moves_the_robot_off_the_commanded_pose():
    from envs.geometry import POS, arm_slice
    from envs.record import ExecutionNoise

    env = XTrainerEnv(task="reach", obs_mode="state")
    backend = ExecutionNoise(env, sigma_m=0.01, hold_steps=1000)  # one offset for the whole test
    backend.reset(seed=0)
    command = env.ee_pose()
    for _ in range(45):
        backend.act(command)
    offset = backend._offset
    reached = env.ee_pose()
    for i, arm in enumerate(("left", "right")):
        moved = reached[arm_slice(arm)][POS] - command[arm_slice(arm)][POS]
        assert np.linalg.norm(offset[3 * i:3 * i + 3]) > 1e-3
        assert np.allclose(moved, offset[3 * i:3 * i + 3], atol=1e-3)  # executed = command + offset
    env.close()


def test_dart_dataset_is_marked_and_not_mixed_with_clean_demos(tmp_path):
    noisy = tmp_path / "noisy"
    record("reach", 1, "id", noisy, obs_mode="state", progress=False, action_noise_m=0.01)
    assert json.loads((noisy / "meta/flowpro.json").read_text())["action_noise_m"] == 0.01
    with pytest.raises(DatasetMismatch, match="action_noise_m"):
        record("reach", 2, "id", noisy, obs_mode="state", progress=False)
