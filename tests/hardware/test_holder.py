"""The command holder keeps the 0.5 s command watchdog fed while a slow policy computes a chunk,
without moving the arms, and still lets the watchdog catch a policy that never answers."""

import time

import numpy as np
import pytest

from envs.geometry import ARMS
from envs.rollout import rollout
from hardware.backend import RealXTrainer
from hardware.dobot_client import DobotConfig
from hardware.emulator import XTrainerEmulator
from hardware.emulator_process import EmulatorProcess
from hardware.holder import CommandHolder
from hardware.safety import SafetyStop


@pytest.fixture
def emus():
    bench = EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0).start()
    yield bench.arms
    bench.close()


def _backend(emus, **kwargs) -> RealXTrainer:
    configs = {arm: DobotConfig(e.host, "V3", e.ports["dashboard"], e.ports["motion"], e.ports["feedback"],
                                timeout_s=1.0) for arm, e in emus.items()}
    return RealXTrainer(configs, task_description="reach", command_timeout_s=0.3, **kwargs).connect()


class SlowHold:
    """Holds the current pose but takes ``think_s`` per chunk (a large policy on a slow machine)."""

    def __init__(self, think_s: float):
        self.think_s, self.calls = think_s, 0

    def reset(self):
        pass

    def predict_chunk(self, obs, instruction):
        self.calls += 1
        time.sleep(self.think_s)
        return np.repeat(obs["agent_pos"][None], 6, axis=0)


def _max_gap(times: list[float]) -> float:
    return float(np.max(np.diff(times)))


def test_slow_policy_rollout_completes_while_the_holder_streams_the_held_target(emus):
    backend = _backend(emus, time_limit_s=0.4)
    try:
        policy = SlowHold(think_s=0.6)  # twice the command timeout
        t0 = time.monotonic()
        result = rollout(backend, policy, n_action_steps=6)
        assert result.terminated_by == "time_limit" and result.steps == 12 and policy.calls == 2
        assert all(backend.safe[a].tripped is None for a in ARMS)
        assert backend.holder.resends >= 10  # ~30 Hz over the two 0.6 s pauses
        for arm in ARMS:
            times = [t for t in emus[arm].servoj_times if t >= t0]
            assert _max_gap(times) < 0.15, f"{arm}: ServoJ stream paused for {_max_gap(times):.3f} s"
            # Held targets are the last commanded ones: the arm stands still.
            held = [c for c in emus[arm].commands_seen if c.startswith("ServoJ")][-5:]
            assert len(set(held)) == 1
    finally:
        backend.close()


def test_without_holding_the_same_slow_policy_trips_the_watchdog(emus):
    backend = _backend(emus, time_limit_s=0.4, max_hold_s=0.0)
    try:
        with pytest.raises(SafetyStop, match=r"no command for \d+ ms \(limit 300 ms\)"):
            rollout(backend, SlowHold(think_s=0.6), n_action_steps=6)
        assert backend.holder.resends == 0
    finally:
        backend.close()


def test_a_policy_silent_longer_than_max_hold_is_still_stopped(emus):
    backend = _backend(emus, max_hold_s=0.2)
    try:
        obs, _ = backend.reset()
        backend.act(obs["agent_pos"])
        backend.safe["left"].stopped.wait(1.5)  # 0.2 s held + 0.3 s command timeout
        assert "no command for" in backend.safe["left"].tripped and backend.holder.expired == 1
        assert backend.holder.resends >= 3
        assert emus["left"].commands_seen[-1] == "ResetRobot()"
    finally:
        backend.close()


def test_holder_error_is_reported_and_disarms():
    errors = []

    def failing():
        raise RuntimeError("feedback gone")

    h = CommandHolder(failing, 0.01, on_error=errors.append)
    try:
        time.sleep(0.1)
        assert len(errors) == 1 and "feedback gone" in str(h.error) and h.resends == 0
        with h.lock:
            h.commanded()
        time.sleep(0.1)
        assert len(errors) == 2  # re-armed by a real command, fails again
    finally:
        h.close()
    with pytest.raises(ValueError, match="period_s"):
        CommandHolder(lambda: None, 0.0)
