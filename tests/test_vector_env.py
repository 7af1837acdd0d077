"""gymnasium vector envs of the USB task (issue 17): the step info keeps one schema from reset on,
so a vector env steps on when one env's episode ends before the other's (its autoreset)."""

from functools import partial

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers FlowPRO/USB-v0)
from envs.env import OBS_MODES, XTrainerEnv


def _schema(info: dict) -> dict:
    """Each key's type, recursively (what gymnasium's vector envs batch info by)."""
    return {k: _schema(v) if isinstance(v, dict) else type(v) for k, v in info.items()}


@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("action_mode", ["ee", "joint"])
def test_reset_and_step_infos_have_one_schema(obs_mode, action_mode):
    env = XTrainerEnv(task="usb", obs_mode=obs_mode, action_mode=action_mode, image_size=(32, 32))
    try:
        obs, info = env.reset(seed=0)
        hold = obs["agent_pos"] if action_mode == "ee" else obs["joint_pos"]
        _, _, _, _, step_info = env.step(hold)
    finally:
        env.close()
    assert _schema(info) == _schema(step_info)
    assert "completion_time_s" not in info and not info["is_success"]  # there once the task succeeds
    assert info["ik"]["left"]["pos_err_m"] == 0.0  # no IK target at the reset: nothing missed
    if action_mode == "ee":
        assert step_info["ik"]["left"]["pos_err_m"] < 1e-3 and step_info["ik"]["right"]["reachable"]


@pytest.mark.timeout(120)  # the old failure hung the async vector env after its worker died
@pytest.mark.parametrize("vector", [gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv])
def test_a_vector_env_steps_on_when_one_episode_ends_first(vector):
    """Env 0's episode is cut at 0.3 s (9 steps), env 1's at 0.6 s: env 0 ends and autoresets while
    env 1 steps on. Before the fix this raised in gymnasium's info batching (``ik`` None at a
    reset, a dict at a step)."""
    fns = [partial(gym.make, "FlowPRO/USB-v0", obs_mode="state", time_limit_s=t) for t in (0.3, 0.6)]
    venv = vector(fns)
    try:
        obs, _ = venv.reset(seed=[0, 1])
        hold = np.array(obs["agent_pos"])
        ended = []
        for t in range(24):
            obs, _, terminated, truncated, info = venv.step(hold)
            ended += [(t, i) for i in range(2) if terminated[i] or truncated[i]]
        # env 0 ends at step 8, resets at step 9 (gymnasium's next-step autoreset) and ends again 9
        # steps later; env 1 steps on throughout and ends at step 17
        assert ended == [(8, 0), (17, 1), (18, 0)]
        assert info["ik"]["left"]["pos_err_m"].shape == (2,) and info["_ik"].all()
    finally:
        venv.close()
