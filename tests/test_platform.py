"""The simulated X-Trainer: kinematics, IK, rollback, observations, gym API, bad input."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.control import IKController
from envs.env import XTrainerEnv
from envs.geometry import ARMS, GRIP, POS, ROT6, arm_slice, geodesic_angle, matrix_to_r6, r6_to_matrix
from envs.kinematics import ARM_SPECS, forward_kinematics
from envs.rollout import ExpertPolicy, rollout
from envs.xtrainer import BenchConfig, build_xml, home_qpos


def _random_q(rng, model, arm):
    ids = [model.joint(f"{arm}/j{i + 1}").id for i in range(6)]
    lo, hi = model.jnt_range[ids, 0], model.jnt_range[ids, 1]
    lo, hi = np.maximum(lo, -np.pi), np.minimum(hi, np.pi)
    return rng.uniform(lo, hi)


def _world_fk(cfg, arm, q):
    base_pos, base_R = cfg.base_pose(arm)
    T = forward_kinematics(q, cfg.arm_spec)
    return base_pos + base_R @ T[:3, 3], base_R @ T[:3, :3]


@pytest.mark.parametrize("arm_model", sorted(ARM_SPECS))
def test_tool_site_matches_dh_chain(arm_model, rng):
    cfg = BenchConfig(arm=arm_model)
    model = mujoco.MjModel.from_xml_string(build_xml(cfg))
    data = mujoco.MjData(model)
    for _ in range(50):
        qs = {a: _random_q(rng, model, a) for a in ARMS}
        for a in ARMS:
            for i in range(6):
                data.qpos[model.joint(f"{a}/j{i + 1}").qposadr[0]] = qs[a][i]
        mujoco.mj_kinematics(model, data)
        for a in ARMS:
            p, R = _world_fk(cfg, a, qs[a])
            site = data.site(f"{a}/tool")
            assert np.linalg.norm(site.xpos - p) < 5e-4
            assert geodesic_angle(site.xmat.reshape(3, 3), R) < np.deg2rad(0.05)


def test_home_pose_points_tool_down_above_table():
    cfg = BenchConfig()
    for a in ARMS:
        p, R = _world_fk(cfg, a, home_qpos(a))
        assert p[2] > cfg.table_height_m + 0.1
        assert R[2, 2] < -0.99  # tool z axis points down


def test_j3_sign_rule_and_model_variants():
    for arm_model in ARM_SPECS:
        model = mujoco.MjModel.from_xml_string(build_xml(BenchConfig(arm=arm_model)))
        assert model.jnt_range[model.joint("left/j3").id, 1] < 0
        assert model.jnt_range[model.joint("right/j3").id, 0] > 0
        assert model.opt.timestep <= 0.002
    with pytest.raises(ValueError, match="unknown arm model"):
        build_xml(BenchConfig(arm="nova9"))


def test_ik_reaches_reachable_targets(rng):
    cfg = BenchConfig()
    ik = IKController(cfg)
    q0 = {a: home_qpos(a) for a in ARMS}
    for _ in range(20):
        targets = {a: _world_fk(cfg, a, home_qpos(a) + rng.uniform(-0.2, 0.2, 6)) for a in ARMS}
        q, reports = ik.solve(q0, targets)
        for a in ARMS:
            p, R = _world_fk(cfg, a, q[a])
            assert np.linalg.norm(p - targets[a][0]) < 1e-3
            assert geodesic_angle(R, targets[a][1]) < np.deg2rad(1.0)
            assert reports[a].reachable


def test_physics_tracks_ee_target(reach_env):
    env = reach_env
    env.reset(seed=0)
    target = env.ee_pose()
    target[arm_slice("left")][POS] += [0.05, -0.05, -0.05]
    target[arm_slice("right")][POS] += [-0.03, 0.02, -0.08]
    for _ in range(45):
        env.act(target)
    pose = env.ee_pose()
    for a in ARMS:
        s = arm_slice(a)
        assert np.linalg.norm(pose[s][POS] - target[s][POS]) < 1e-3
        assert geodesic_angle(r6_to_matrix(pose[s][ROT6]), r6_to_matrix(target[s][ROT6])) < np.deg2rad(1.0)


def _noisy_expert_actions(env, n, seed):
    policy = ExpertPolicy(env, seed)
    policy.reset()
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a = policy.predict_chunk(None, "")[0]
        a[[0, 1, 2, 10, 11, 12]] += rng.normal(0, 0.01, 6)
        a[[GRIP, 10 + GRIP]] = rng.uniform(0, 1, 2)
        yield a


def test_rollback_replays_bitwise(reach_env):
    env = reach_env
    env.reset(seed=3)
    actions = list(_noisy_expert_actions(env, 20, seed=3))
    for a in actions[:8]:
        env.act(a)
    snap = env.snapshot()
    rng_draw = env.np_random.random()  # python-side RNG must be restored as well
    first = [env.act(a) for a in actions[8:]]
    qpos_first = env.data.qpos.copy()
    obs = env.restore(snap)
    assert env.step_count == 8
    assert env.np_random.random() == rng_draw
    second = [env.act(a) for a in actions[8:]]
    for (o1, i1), (o2, i2) in zip(first, second):
        assert np.array_equal(o1["agent_pos"], o2["agent_pos"])
        for cam in o1["pixels"]:
            assert np.array_equal(o1["pixels"][cam], o2["pixels"][cam])
        assert i1["ik"] == i2["ik"]
    assert np.array_equal(qpos_first, env.data.qpos)
    assert obs["agent_pos"].shape == (20,)


def test_three_cameras_render_distinct_nonempty_images(reach_env):
    obs, _ = reach_env.reset(seed=0)
    imgs = obs["pixels"]
    assert set(imgs) == {"top", "left_wrist", "right_wrist"}
    for img in imgs.values():
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert img.std() > 5  # not a blank frame
    assert not np.array_equal(imgs["top"], imgs["left_wrist"])
    assert not np.array_equal(imgs["left_wrist"], imgs["right_wrist"])


def test_state_mode_has_privileged_state_and_no_pixels():
    env = XTrainerEnv(task="reach", obs_mode="state")
    obs, _ = env.reset(seed=0)
    assert "pixels" not in obs and obs["environment_state"].shape == (6,)
    env.close()


def test_gymnasium_ids_and_env_checker():
    env = gym.make("FlowPRO/Reach-v0")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_joint_action_mode_moves_to_joint_targets():
    env = XTrainerEnv(task="reach", obs_mode="state", action_mode="joint")
    env.reset(seed=0)
    target = env.joint_pos().copy()
    target[0] += 0.2
    target[7 + 4] -= 0.2
    for _ in range(30):
        env.act(target)
    assert np.allclose(env.joint_pos()[:6], target[:6], atol=2e-3)
    assert np.allclose(env.joint_pos()[7:13], target[7:13], atol=2e-3)
    env.close()


def test_rollout_loop_with_expert_succeeds(reach_env):
    for seed in range(3):
        result = rollout(reach_env, ExpertPolicy(reach_env, seed), seed=seed, n_action_steps=1)
        assert result.success and result.terminated_by == "success"
        assert 0 < result.completion_time_s <= result.time_s
        assert result.stages_seen == ["reaching", "holding"]


@pytest.mark.parametrize("bad, match", [
    (np.full(20, np.nan), "NaN or inf"),
    (np.zeros(19), "shape"),
    (np.r_[0.0, 0, 1, np.zeros(6), 1, np.zeros(10)], "rotation is invalid"),
])
def test_bad_actions_raise_and_leave_sim_untouched(reach_env, bad, match):
    env = reach_env
    env.reset(seed=0)
    env.act(env.ee_pose())
    before = env.snapshot()
    with pytest.raises(ValueError, match=match):
        env.act(bad)
    after = env.snapshot()
    assert np.array_equal(before.physics, after.physics)
    assert env.step_count == 1


def test_unreachable_target_is_reported_not_raised(reach_env):
    env = reach_env
    env.reset(seed=0)
    target = env.ee_pose()
    target[arm_slice("left")][POS] = [0.9, 0.9, 0.2]  # far outside the reach and under the table
    _, info = env.act(target)
    rep = info["ik"]["left"]
    assert not rep["reachable"] and rep["clamped_to_safety_box"]
    assert info["ik"]["right"]["reachable"]
    assert np.all(np.isfinite(env.data.qpos))


def test_restore_refuses_snapshot_of_other_model(reach_env):
    other = XTrainerEnv(task="reach", arm="nova5", obs_mode="state")
    other.reset(seed=0)
    snap = other.snapshot()
    reach_env.reset(seed=0)
    with pytest.raises(ValueError, match="refusing to restore"):
        reach_env.restore(snap)
    other.close()


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: .*reach"):
        XTrainerEnv(task="nope")
    with pytest.raises(ValueError, match="valid splits: id, ood"):
        XTrainerEnv(task="reach", split="train")
    with pytest.raises(ValueError, match="valid: rgb, state"):
        XTrainerEnv(task="reach", obs_mode="depth")


def test_r6_roundtrip(rng):
    from scipy.spatial.transform import Rotation

    R = Rotation.random(10, random_state=0).as_matrix()
    assert np.allclose(r6_to_matrix(matrix_to_r6(R)), R)


def test_joint_speed_limit_rate_limits_ik_targets():
    env = XTrainerEnv(task="reach", obs_mode="state", max_joint_speed_rad_s=1.5)
    env.reset(seed=0)
    q0 = {a: env._py["q_target"][a].copy() for a in ARMS}
    target = env.ee_pose()
    target[arm_slice("left")][POS] += [0.1, -0.1, -0.1]  # far: IK wants a large joint step
    _, info = env.act(target)
    step = np.abs(env._py["q_target"]["left"] - q0["left"])
    assert step.max() <= 1.5 / 30 + 1e-12 and info["ik"]["left"]["joint_step_clamped"]
    env.close()


def test_tasks_and_experts_come_from_their_registries():
    """A task module registers its task and a separate expert module its expert (no import cycle:
    the acyclic_siblings contract in pyproject.toml); a task with no expert, or an unknown name,
    is named in the error."""
    from envs.tasks import EXPERTS, TASKS, get_task
    from envs.tasks.reach import ReachExpert
    from envs.tasks.usb import UsbTask
    from envs.tasks.usb_expert import UsbExpert

    assert {"reach", "usb"} <= set(TASKS) and EXPERTS["usb"] is UsbExpert and EXPERTS["reach"] is ReachExpert
    task = UsbTask()
    assert get_task(task) is task and isinstance(task.make_expert(), UsbExpert)
    with pytest.raises(ValueError, match="unknown task 'pack'; valid tasks: reach, usb"):
        get_task("pack")

    class Lonely(UsbTask):
        name = "lonely"

    with pytest.raises(ValueError, match="task 'lonely' has no scripted expert; tasks with one: reach, usb"):
        Lonely().make_expert()


def test_every_command_maps_its_outcome_to_one_set_of_exit_codes(capsys):
    """envs.cli.run_command: 0 with the result as JSON, 2 for bad input, 3 for a bench fault (with the
    exception's notes and the command's hint), 130 for Ctrl-C; other errors keep their traceback."""
    import json

    from envs.cli import run_command

    class Fault(Exception):
        pass

    def raises(e):
        def body():
            raise e
        return body

    assert run_command(lambda: {"ok": 1}) == 0 and json.loads(capsys.readouterr().out) == {"ok": 1}
    assert run_command(raises(FileNotFoundError("no such dataset"))) == 2
    assert "error: no such dataset" in capsys.readouterr().err
    fault = Fault("arm stopped")
    fault.add_note("interrupted record: /tmp/x")
    assert run_command(raises(fault), faults=(Fault,), fault_message=lambda e: f"error on the bench: {e}",
                       hint=lambda code: f"hint {code}") == 3
    assert capsys.readouterr().err.splitlines() == ["error on the bench: arm stopped", "interrupted record: /tmp/x",
                                                    "hint 3"]
    assert run_command(raises(KeyboardInterrupt())) == 130 and "interrupted" in capsys.readouterr().err
    with pytest.raises(Fault):
        run_command(raises(Fault("a bug, not a fault of this command")))
