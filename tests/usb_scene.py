"""Shared test constants of the USB scene, imported by tests and conftest alike (a conftest is not a
module to import from: each test folder has its own)."""

import envs  # noqa: F401  (first: selects headless rendering before mujoco loads)
from envs.env import XTrainerEnv


def _usb_env_state_dim() -> int:
    env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
    try:
        return env.observation_space["environment_state"].shape[0]
    finally:
        env.close()


USB_ENV_STATE_DIM = _usb_env_state_dim()  # the USB task's privileged-state width
STILL_OPERATOR = {"stall_s": 1.5, "margin_steps": (5, 40)}
