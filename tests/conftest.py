import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

import envs  # noqa: F401  (registers the gymnasium ids)
from envs.env import XTrainerEnv
from usb_scene import STILL_OPERATOR, USB_ENV_STATE_DIM


@pytest.fixture
def reach_env():
    env = XTrainerEnv(task="reach")
    yield env
    env.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def still_policy(tmp_path_factory):
    """A state-only USB policy that holds the home pose (tiny action std): the oracle sees it
    stall, rolls back and lets the expert finish the task."""
    import torch

    from flowpro.policies import BuiltinConfig, BuiltinVLA

    env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
    obs, _ = env.reset(seed=0)
    env.close()
    policy = BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=USB_ENV_STATE_DIM, d_model=32,
                                      n_layers=1, n_heads=2))
    policy.action_norm.set_stats(torch.tensor(obs["agent_pos"]), torch.zeros(20))
    out = tmp_path_factory.mktemp("still") / "policy"
    policy.save(out)
    return out


@pytest.fixture(scope="session")
def usb_pairs(tmp_path_factory, still_policy):
    """Two real pairs collected by the oracle from the still policy (round 1)."""
    from flowpro.collect import collect

    root = tmp_path_factory.mktemp("pairs") / "round1"
    collect("usb", still_policy, 2, 1, root, workers=1, operator_kwargs=STILL_OPERATOR, progress=False, pictures=1)
    return root
