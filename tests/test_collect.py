"""Intervention-and-rollback collection with the oracle operator (issue 5)."""

import numpy as np
import pytest
import torch

from envs.dataset import EpisodeWriter, finished_episodes
from envs.env import XTrainerEnv
from envs.rollout import ExpertPolicy
from flowpro.collect import collect, intervention_rollout
from flowpro.data import ACTION_L, PreferenceDataset
from flowpro.operator import OracleOperator
from usb_scene import STILL_OPERATOR as OPERATOR, USB_ENV_STATE_DIM
from flowpro.policies import BuiltinConfig
from flowpro.policies.base import ACTION, ACTION_PAD
from flowpro.tuples import load_pairs


class LampDroppingExpert(ExpertPolicy):
    """The scripted expert, perturbed: once both objects are up it opens the right gripper."""

    def predict_chunk(self, obs, instruction):
        a = self.expert.act(self.env)
        if self.env.task.stage(self.env.data, self.env.memo) == "align":
            a[19] = 1.0
        return a[None]


@pytest.fixture(scope="module")
def usb_env():
    env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
    yield env
    env.close()


def test_oracle_rolls_back_before_a_predicted_failure_and_the_expert_corrects(usb_env):
    env = usb_env
    operator = OracleOperator(env.task, margin_steps=(10, 20))
    pairs, summary = intervention_rollout(env, LampDroppingExpert(env, 0), operator, seed=3, n_action_steps=1)
    assert summary["interventions"] == 1 and summary["outcome"] == "corrected", summary
    (pair,) = pairs
    iv = pair.intervention
    assert iv.reason.startswith("lamp") and pair.corrected
    assert pair.loser[-1].info["failures"], "tau^l must end in the predicted failure"
    assert not pair.loser[0].info["failures"], "the rollback state precedes the error"
    assert len(pair.loser) == iv.k_back
    onset = next(i for i, s in enumerate(pair.loser) if s.info["failures"])
    assert 10 <= onset <= 20  # rolled back to the error's onset minus the random margin
    # the correction starts from exactly the rolled-back state and reaches the goal
    assert np.array_equal(pair.winner[0].obs["agent_pos"], pair.loser[0].obs["agent_pos"])
    assert np.array_equal(pair.winner[0].obs["environment_state"], pair.loser[0].obs["environment_state"])
    assert pair.winner[-1].info["is_success"]


def test_k_back_varies_with_the_random_margin(usb_env):
    ks = set()
    for seed in range(3):
        operator = OracleOperator(usb_env.task, margin_steps=(5, 40))
        pairs, _ = intervention_rollout(usb_env, LampDroppingExpert(usb_env, seed), operator, seed=seed, n_action_steps=1)
        ks.add(pairs[0].intervention.k_back)
    assert len(ks) > 1


def test_stage_handback_returns_control_to_the_policy(usb_env):
    operator = OracleOperator(usb_env.task, margin_steps=(10, 10), handback="stage")
    pairs, summary = intervention_rollout(usb_env, LampDroppingExpert(usb_env, 0), operator, seed=3,
                                          n_action_steps=1, max_interventions=2)
    # after the hand-back the perturbed policy drops the lamp again: a second intervention
    assert summary["interventions"] == 2 and all(p.corrected for p in pairs)
    stages = usb_env.task.stages
    for p in pairs:  # each correction ends once the stage of its intervention is passed
        assert stages.index(p.winner[-1].info["stage"]) > stages.index(p.intervention.stage)
    assert summary["outcome"].startswith("failure")  # no third intervention: the policy fails


def test_operator_settings_are_checked(usb_env):
    with pytest.raises(ValueError, match="handback"):
        OracleOperator(usb_env.task, handback="never")
    with pytest.raises(ValueError, match="margin"):
        OracleOperator(usb_env.task, margin_steps=(10, 5))


def _actions(root):
    return [(p.pair_id, p.actions_l.round(6).tolist(), p.actions_w.round(6).tolist()) for p in load_pairs(root)]


def test_collection_writes_pairs_resumes_and_loses_no_completed_pair(tmp_path, still_policy, usb_pairs, monkeypatch):
    full = usb_pairs
    pairs = load_pairs(full)
    assert [p.pair_id for p in pairs] == [0, 1]
    assert (full / "pictures/pair_000000_rollback.png").exists() and (full / "pictures/pair_000000_bridges.png").exists()

    # A crash while writing the second pair: the first stays, the rerun completes identically.
    part = tmp_path / "part"
    real_append, calls = EpisodeWriter._append, []

    def crash_on_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_append(self, *a, **k)

    monkeypatch.setattr(EpisodeWriter, "_append", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        collect("usb", still_policy, 2, 1, part, workers=1, operator_kwargs=OPERATOR, progress=False)
    assert finished_episodes(part) == 1
    monkeypatch.setattr(EpisodeWriter, "_append", real_append)
    collect("usb", still_policy, 2, 1, part, workers=1, operator_kwargs=OPERATOR, progress=False)
    assert _actions(part) == _actions(full)

    # The tuples the trainer streams: a^w under "action", a^l under "action_l", states from the pair.
    cfg = BuiltinConfig(use_images=False, cameras=(), env_state_dim=USB_ENV_STATE_DIM)
    ds = PreferenceDataset(full, cfg, env_state=True)
    assert ds.pairs == 2 and len(ds) > 0
    for i in range(0, len(ds), 7):
        x = ds[i]
        assert x[ACTION].shape == x[ACTION_L].shape == (30, 20) and x[ACTION_PAD].shape == (30,)
        if x["source"] == "w":
            assert torch.equal(x[ACTION], x[ACTION_L])
    case1 = np.flatnonzero(ds.source == "l")
    if len(case1):
        k = int(case1[0])
        assert torch.allclose(ds[k]["observation.state"], ds.state[ds.frame[k]])
