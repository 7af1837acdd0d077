"""Batched evaluation (several environments in lock-step, one policy call per re-plan) and the
USB task's once-per-step view of the state."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from benchmarks.evaluate import BatchPolicyRunner, PolicyRunner, evaluate, sample_chunks
from envs.env import XTrainerEnv
from envs.geometry import GRIP, arm_slice, geodesic_angle
from envs.rollout import ExpertPolicy, rollout, rollout_batch
from envs.tasks.usb import AXIS_TOL_RAD, SEATED_TOL, SOCKET_DEPTH, STALL_PROGRESS_M, STALL_WINDOW_S, UsbTask
from flowpro.policies import BuiltinConfig, BuiltinVLA
from usb_scene import USB_ENV_STATE_DIM

SEEDS = [1000, 1001, 1002, 1003, 1004]
TIME_LIMIT_S = 1.0  # 30 control steps: two re-plans of 15


@pytest.fixture(scope="module")
def wandering_policy(tmp_path_factory):
    """An untrained state-only USB policy whose chunks spread 2 cm / 0.02 around the home pose:
    every rollout moves differently, driven by its own noise."""
    torch.manual_seed(0)
    env = XTrainerEnv(task="usb", obs_mode="state")
    obs, _ = env.reset(seed=0)
    env.close()
    policy = BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=USB_ENV_STATE_DIM, d_model=32,
                                      n_layers=1, n_heads=2))
    policy.action_norm.set_stats(torch.tensor(obs["agent_pos"]), torch.full((20,), 0.02))
    out = tmp_path_factory.mktemp("wandering") / "policy"
    policy.save(out)
    return out


@pytest.fixture(scope="module")
def usb_envs():
    envs = [XTrainerEnv(task="usb", obs_mode="state", time_limit_s=TIME_LIMIT_S) for _ in range(3)]
    yield envs
    for env in envs:
        env.close()


class RecordingRunner:
    """A real :class:`PolicyRunner` that keeps every chunk it returns (for comparing trajectories)."""

    def __init__(self, runner: PolicyRunner):
        self.runner, self.chunks = runner, []

    def reset(self) -> None:
        self.runner.reset()

    def predict_chunk(self, obs, instruction):
        chunk = self.runner.predict_chunk(obs, instruction)
        self.chunks.append(chunk)
        return chunk


class RecordingBatch:
    """A real :class:`BatchPolicyRunner` that keeps each episode's chunks; ``poison`` puts NaN into
    one episode's chunk at its given re-plan, as a diverged policy might."""

    def __init__(self, runner: BatchPolicyRunner, poison: tuple[int, int] | None = None):
        self.runner, self.poison = runner, poison
        self.chunks: dict[int, list[np.ndarray]] = {}
        self.batch_sizes: list[int] = []

    def predict_chunks(self, episodes, observations, instruction):
        chunks = self.runner.predict_chunks(episodes, observations, instruction)
        self.batch_sizes.append(len(episodes))
        for i, chunk in zip(episodes, chunks):
            self.chunks.setdefault(i, []).append(chunk)
            if self.poison == (i, len(self.chunks[i]) - 1):
                chunk[3, 5] = np.nan
        return chunks


def _unbatched(env, policy, seeds):
    out = []
    for seed in seeds:
        runner = RecordingRunner(PolicyRunner(policy, seed))
        result = rollout(env, runner, seed=seed, options={"split": "id"}, n_action_steps=15)
        out.append((result.summary(), runner.chunks))
    return out


def test_lock_step_rollouts_reproduce_the_unbatched_path_exactly(wandering_policy, usb_envs):
    """Per-rollout policy calls through the lock-step loop: the same chunks, bit for bit, and the
    same result dicts as one rollout after another; the batch refills as episodes end."""
    from flowpro.policies import FlowPolicy

    policy = FlowPolicy.load(wandering_policy)
    reference = _unbatched(usb_envs[0], policy, SEEDS)
    batch = RecordingBatch(BatchPolicyRunner(policy, SEEDS, batched=False))
    results = rollout_batch(usb_envs, batch, SEEDS, options={"split": "id"}, n_action_steps=15)
    assert [r.summary() for r in results] == [summary for summary, _ in reference]
    for i, (_, chunks) in enumerate(reference):
        assert len(batch.chunks[i]) == len(chunks) == 2
        assert all(np.array_equal(a, b) for a, b in zip(batch.chunks[i], chunks))
    assert batch.batch_sizes == [3, 3, 2, 2]  # seeds 1000-1002, then 1003-1004 in the freed slots
    # the chunks really differ between rollouts (each its own noise and state)
    assert not np.array_equal(batch.chunks[0][0], batch.chunks[1][0])


def test_one_batched_policy_call_matches_batch_size_one_calls_to_float_rounding(wandering_policy, usb_envs):
    """Not bitwise on CPU (a one-row matrix product takes another MKL kernel than a batch's), but
    the same noise per row and chunks equal to well below a micrometre."""
    from flowpro.policies import FlowPolicy

    policy = FlowPolicy.load(wandering_policy)
    torch.set_num_threads(1)
    observations = [env.reset(seed=s)[0] for env, s in zip(usb_envs, SEEDS)]
    instruction = usb_envs[0].task_description
    alone = [PolicyRunner(policy, s).predict_chunk(o, instruction) for s, o in zip(SEEDS, observations)]
    together = sample_chunks([PolicyRunner(policy, s) for s in SEEDS[:3]], observations, instruction)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(alone, together))
    assert diff < 1e-5, diff
    assert not np.array_equal(alone[0], alone[1])


def test_a_crashed_environment_fails_only_its_own_rollout(wandering_policy, usb_envs):
    """A NaN in one rollout's second chunk: validate_action raises inside env.act, that rollout is
    reported failed by error with its seed, and the others end exactly as without the NaN."""
    from flowpro.policies import FlowPolicy

    policy = FlowPolicy.load(wandering_policy)
    clean = rollout_batch(usb_envs, BatchPolicyRunner(policy, SEEDS, batched=False), SEEDS,
                          options={"split": "id"}, n_action_steps=15)
    poisoned = RecordingBatch(BatchPolicyRunner(policy, SEEDS, batched=False), poison=(1, 1))
    results = rollout_batch(usb_envs, poisoned, SEEDS, options={"split": "id"}, n_action_steps=15)
    crashed = results[1].summary()
    assert crashed["seed"] == SEEDS[1] and crashed["success"] is False and crashed["completion_time_s"] is None
    assert crashed["terminated_by"] == "error:ValueError: action contains NaN or inf at indices [5]"
    assert crashed["steps"] == 15 + 3  # the 4th action of its second chunk raised
    for i in (0, 2, 3, 4):
        assert results[i].summary() == clean[i].summary()
    # the freed backend waited for the batch's next re-plan: seeds 1003 and 1004 started together
    assert poisoned.batch_sizes == [3, 3, 2, 2]


def test_evaluate_in_lock_step_matches_the_default_path(wandering_policy):
    """``evaluate(env_batch=...)``: with per-rollout policy calls the same result dicts as today's
    default; with one batched call per re-plan the same seeds, initial states and lengths."""
    kw = dict(split="id", workers=1, time_limit_s=TIME_LIMIT_S)
    default = evaluate("usb", wandering_policy, SEEDS[:4], **kw)
    assert evaluate("usb", wandering_policy, SEEDS[:4], env_batch=3, batched_policy=False, **kw) == default
    batched = evaluate("usb", wandering_policy, SEEDS[:4], env_batch=3, **kw)
    assert [(r["seed"], r["initial_state"], r["steps"]) for r in batched] == \
        [(r["seed"], r["initial_state"], r["steps"]) for r in default]


def test_evaluate_rejects_bad_batch_options(wandering_policy):
    with pytest.raises(ValueError, match="env_batch must be >= 1"):
        evaluate("usb", wandering_policy, SEEDS, env_batch=0)
    with pytest.raises(ValueError, match="temporal ensembling"):
        evaluate("usb", wandering_policy, SEEDS, env_batch=2, ensemble_k=0.01)


# ---------------------------------------------------------------------------- the task view
class HeadUsbTask(UsbTask):
    """The USB predicates as they were before the view: each one rescans the contacts and
    recomputes the plug's pose itself (the straightforward recomputation to compare with)."""

    def view(self, data):
        return None

    def is_success(self, data, view=None) -> bool:
        ps = self.plug_state(data)
        return (ps.depth >= SOCKET_DEPTH - SEATED_TOL and ps.tilt <= AXIS_TOL_RAD
                and bool(np.all(np.abs(ps.lateral) <= self.clearance + 2e-4)))

    def stage(self, data, memo, view=None) -> str:
        ps = self.plug_state(data)
        if self.is_success(data):
            return "seated"
        if ps.depth > 0 and bool(np.all(np.abs(ps.lateral) < 0.002)):
            return "insert"
        strip_ok = self.held(data, "left", "strip") and self.strip_lifted(data)
        lamp_ok = self.held(data, "right", "lamp") and self.lamp_out_of_holder(data)
        if strip_ok and lamp_ok:
            return "align"
        if self.held(data, "left", "strip") or self.held(data, "right", "lamp"):
            return "lift"
        return "grasp"

    def failures(self, data, memo, view=None) -> list[str]:
        memo["step"] += 1
        out: list[str] = []
        for arm, obj, lifted in (("left", "strip", self.strip_lifted(data)),
                                 ("right", "lamp", self.lamp_out_of_holder(data))):
            held = self.held(data, arm, obj)
            geoms = self.strip_geoms if obj == "strip" else self.lamp_geoms
            touching = bool(self.contacts(data, self.finger_geoms[arm], geoms))
            if self.gripper_opening(data, arm) < 0.004 and not touching and not lifted:
                out.append(f"{obj}_grasp_missed")
            rel = np.linalg.inv(self.tool_pose(data, arm)) @ self.object_pose(data, obj)
            if held and lifted and obj not in memo["grasp_rel"]:
                memo["grasp_rel"][obj] = rel
            if obj in memo["grasp_rel"]:
                ref = memo["grasp_rel"][obj]
                moved = (np.linalg.norm(rel[:3, 3] - ref[:3, 3]) > 0.01
                         or geodesic_angle(rel[:3, :3], ref[:3, :3]) > np.deg2rad(10))
                if moved or not held:
                    out.append(f"{obj}_slip")
        if self._strip_dropped(data):
            out.append("strip_dropped")
        if self._lamp_dropped(data):
            out.append("lamp_dropped")
        ps = self.plug_state(data)
        on_strip = bool(self.contacts(data, {self.plug_geom}, self.strip_geoms))
        if on_strip and ps.depth <= 0.0005 and np.any(np.abs(ps.lateral) > self.clearance):
            out.append("bezel_contact")
        near_socket = ps.depth > -0.003 and bool(np.all(np.abs(ps.lateral) < 0.004))
        if near_socket and 0.0005 < ps.depth < SOCKET_DEPTH - SEATED_TOL and ps.tilt > np.deg2rad(2.0):
            out.append("tilted_entry")
        if not near_socket:
            memo["best_depth"], memo["best_depth_step"] = -np.inf, memo["step"]
        elif ps.depth > memo["best_depth"] + STALL_PROGRESS_M:
            memo["best_depth"], memo["best_depth_step"] = ps.depth, memo["step"]
        elif (not self.is_success(data)
              and (memo["step"] - memo["best_depth_step"]) * self.control_dt > STALL_WINDOW_S):
            out.append("stalled")
        return out


def _perturbed(action: np.ndarray, k: int) -> np.ndarray:
    """Spoil the expert's actions: grippers shut early (missed grasps), the plug's target 4 mm off
    in x and y from step 230, the left gripper opened from step 440 (slip, dropped strip)."""
    a = action.copy()
    left, right = arm_slice("left"), arm_slice("right")
    if k < 40:
        a[left][GRIP] = a[right][GRIP] = 0.0
    if k >= 230:
        a[right][0:2] += 0.004
    if k >= 440:
        a[left][GRIP] = 1.0
    return a


def _expert_run(task, steps: int, perturb: bool):
    """The USB expert for up to ``steps`` control steps, rolled back once from step 200 to step 100
    (spoilt by step number when ``perturb``); every observation, info and physics state."""
    env = XTrainerEnv(task=task, obs_mode="state")
    expert = ExpertPolicy(env, seed=3)
    env.reset(seed=3)
    expert.reset()
    trace = []
    for k in range(steps):
        if k == 100:
            snap, expert_state = env.snapshot(), expert.expert.get_state()
        if k == 200:
            trace.append((env.restore(snap), None, env.snapshot().physics))
            expert.expert.set_state(expert_state)
        action = expert.predict_chunk(None, "")[0]
        obs, info = env.act(_perturbed(action, env.step_count) if perturb else action)
        trace.append((obs, info, env.snapshot().physics))
        if info["is_success"] or info["terminal_failure"]:
            break
    env.close()
    return trace


@pytest.mark.parametrize("perturb, stages_reached, failures_seen", [
    (False, {"grasp", "lift", "align", "insert", "seated"}, set()),
    (True, {"grasp", "lift", "align"}, {"strip_grasp_missed", "lamp_grasp_missed", "strip_slip", "strip_dropped"}),
])
def test_the_once_per_step_view_leaves_expert_runs_bitwise_unchanged(perturb, stages_reached, failures_seen):
    """The expert to success, and a spoilt expert through missed grasps to a dropped strip, each
    rolled back once: stages, failures, observations and physics are bit for bit those of
    predicates that rescan the contacts and recompute the plug's pose themselves."""
    new, head = _expert_run(UsbTask(), 700, perturb), _expert_run(HeadUsbTask(), 700, perturb)
    assert len(new) == len(head) > 400
    stages, failures = set(), set()
    for (obs_a, info_a, phys_a), (obs_b, info_b, phys_b) in zip(new, head):
        assert np.array_equal(phys_a, phys_b)
        assert obs_a.keys() == obs_b.keys() and all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)
        assert info_a == info_b
        if info_a is not None:
            stages.add(info_a["stage"])
            failures.update(info_a["failures"])
    assert stages == stages_reached and failures == failures_seen
