import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

import envs  # noqa: F401  (registers the gymnasium ids)
from envs.env import XTrainerEnv


@pytest.fixture
def reach_env():
    env = XTrainerEnv(task="reach")
    yield env
    env.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
