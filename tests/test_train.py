"""SFT training (resume, NaN handling, bad datasets) and closed-loop evaluation, on Reach."""

import json

import pytest
import torch

from benchmarks.evaluate import evaluate
from benchmarks.evaluate import main as evaluate_main
from envs.record import record
from flowpro.data import ChunkDataset
from flowpro.policies import BuiltinConfig, FlowPolicy
from flowpro.train import SFTConfig, train_sft

TINY = json.dumps({"d_model": 32, "n_layers": 1, "n_heads": 2})


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "reach"
    record("reach", 3, "id", root, obs_mode="state", progress=False)
    return root


def _cfg(tmp_path, demos, **kw):
    base = dict(task="reach", dataset=str(demos), out=str(tmp_path / "run"), state_only=True, steps=6,
                batch_size=8, warmup=2, save_every=2, log_every=1, model=TINY)
    return SFTConfig(**{**base, **kw})


def _fail_on_call(monkeypatch, n, make_error):
    real = FlowPolicy.per_sample_loss
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        out = real(self, *a, **k)
        if calls["n"] == n:
            return make_error(out)
        return out

    monkeypatch.setattr(FlowPolicy, "per_sample_loss", flaky)


def test_sft_resume_matches_uninterrupted_run(tmp_path, reach_demos, capsys, monkeypatch):
    full = train_sft(_cfg(tmp_path / "a", reach_demos), progress=False)

    def crash(_):
        raise KeyboardInterrupt  # the process dies during step 4 (0-based), after the step-4 checkpoint

    with monkeypatch.context() as m:
        _fail_on_call(m, 5, crash)
        with pytest.raises(KeyboardInterrupt):
            train_sft(_cfg(tmp_path / "b", reach_demos), progress=False)
    resumed = train_sft(_cfg(tmp_path / "b", reach_demos), progress=False)
    assert "resuming from" in capsys.readouterr().err
    a, b = FlowPolicy.load(full), FlowPolicy.load(resumed)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    rows = (tmp_path / "b/run/metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3", "4", "5"]


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, reach_demos, monkeypatch):
    _fail_on_call(monkeypatch, 5, lambda out: out * float("nan"))
    with pytest.raises(FloatingPointError, match=r"sft step 4: non-finite loss nan \(dataset indices \["):
        train_sft(_cfg(tmp_path, reach_demos), progress=False)
    last = json.loads((tmp_path / "run/checkpoints/last.json").read_text())
    assert last["step"] == 4
    FlowPolicy.load(tmp_path / "run/checkpoints" / last["dir"] / "policy")


def test_dataset_policy_mismatch_names_both(reach_demos):
    with pytest.raises(ValueError, match=r"cameras: dataset has \[\], policy expects \['left_wrist'"):
        ChunkDataset(reach_demos, BuiltinConfig())
    cfg = BuiltinConfig(use_images=False, cameras=(), env_state_dim=9)
    with pytest.raises(ValueError, match=r"observation.environment_state: dataset has \(6,\), policy expects \(9,\)"):
        ChunkDataset(reach_demos, cfg, use_images=False, env_state=True)


def test_chunks_are_padded_at_episode_ends(reach_demos):
    ds = ChunkDataset(reach_demos, BuiltinConfig(use_images=False, cameras=(), env_state_dim=6),
                      use_images=False, env_state=True)
    end = int(ds.episode_end[0])
    sample = ds[end - 5]
    assert sample["action_is_pad"].tolist() == [False] * 5 + [True] * 25
    assert torch.equal(sample["action"][5:], sample["action"][4].expand(25, -1))  # hold the last action


def test_evaluate_writes_rollouts_and_summary(tmp_path, reach_demos, capsys):
    policy_dir = train_sft(_cfg(tmp_path, reach_demos, steps=2), progress=False)
    results = evaluate("reach", policy_dir.parent, [5, 6], "id", workers=1)
    assert [r["seed"] for r in results] == [5, 6]
    assert all(set(r) >= {"success", "completion_time_s", "failures_seen", "terminated_by"} for r in results)
    out = tmp_path / "eval.jsonl"
    assert evaluate_main(["--task", "reach", "--policy", str(policy_dir.parent), "--rollouts", "2",
                          "--workers", "1", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and len(summary["wilson95"]) == 2
    assert evaluate_main(["--task", "reach", "--policy", str(tmp_path / "nothing")]) == 2


def test_temporal_ensemble_averages_overlapping_predictions():
    import numpy as np

    from benchmarks.evaluate import TemporalEnsemble

    class Counting:
        """Chunk i predicts the value 10 * i for every step (chunk length 3)."""

        def __init__(self):
            self.i = 0

        def reset(self):
            self.i = 0

        def predict_chunk(self, obs, instruction):
            self.i += 1
            return np.full((3, 2), 10.0 * (self.i - 1))

    ens = TemporalEnsemble(Counting(), k=0.0)  # k = 0: plain mean
    ens.reset()
    outs = [ens.predict_chunk(None, "")[0, 0] for _ in range(4)]
    # step 0: {0}; step 1: {0, 10}; step 2: {0, 10, 20}; step 3: chunk 0 expired -> {10, 20, 30}
    assert outs == [0.0, 5.0, 10.0, 20.0]
    ens = TemporalEnsemble(Counting(), k=1.0)
    ens.reset()
    ens.predict_chunk(None, "")
    w = np.exp(-np.arange(2.0))
    assert np.isclose(ens.predict_chunk(None, "")[0, 0], (0 * w[0] + 10 * w[1]) / w.sum())  # oldest weighs most


def test_relative_action_statistics_describe_chunks_relative_to_their_state(reach_demos):
    cfg = BuiltinConfig(use_images=False, cameras=(), env_state_dim=6, relative_actions=True)
    ds = ChunkDataset(reach_demos, cfg, use_images=False, env_state=True)
    rel = torch.stack([ds[i]["action"] - ds[i]["observation.state"] for i in range(len(ds))])
    assert torch.allclose(ds.stats["action"]["mean"][:9], rel.reshape(-1, 20).mean(0)[:9], atol=1e-5)
    assert torch.allclose(ds.stats["action"]["std"][:3], rel.reshape(-1, 20).std(0)[:3], rtol=1e-3)


def test_a_worker_switches_policy_when_asked_for_another(tmp_path, reach_demos):
    """With one worker the calling process evaluates several policies in turn (e.g. after each
    round): its cached policy must follow the request, not the first one it loaded."""
    from benchmarks.evaluate import worker_env_policy

    first = train_sft(_cfg(tmp_path / "a", reach_demos, steps=2), progress=False)
    second = train_sft(_cfg(tmp_path / "b", reach_demos, steps=2, seed=1), progress=False)
    cache: dict = {}
    _, p1 = worker_env_policy(cache, "reach", "id", str(first))
    _, again = worker_env_policy(cache, "reach", "id", str(first))
    _, p2 = worker_env_policy(cache, "reach", "id", str(second))
    assert again is p1 and p2 is not p1
    assert not torch.equal(next(p1.parameters()), next(p2.parameters()))


TINY_SMOLVLA = json.dumps({"tiny_vlm": {"image_size": 32}, "resize_imgs_with_padding": [32, 32], "num_vlm_layers": 2,
                           "image_size": [32, 32]})


@pytest.fixture(scope="module")
def reach_rgb_demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "reach_rgb"
    record("reach", 2, "id", root, image_size=(32, 32), progress=False)
    return root


@pytest.mark.parametrize(("policy", "model", "kind"), [
    ("smolvla", TINY_SMOLVLA, "SmolVLAAdapter"),
    ("pi05", json.dumps({"image_size": [32, 32], "image_resolution": [32, 32]}), "Pi0Adapter"),
])
def test_sft_trains_the_lerobot_adapters_and_the_checkpoint_drives_a_rollout(tmp_path, reach_rgb_demos, policy,
                                                                            model, kind):
    torch.manual_seed(0)
    out = train_sft(_cfg(tmp_path, reach_rgb_demos, policy=policy, model=model, state_only=False, steps=4,
                         batch_size=4))
    loaded = FlowPolicy.load(out)
    assert type(loaded).__name__ == kind
    assert loaded.config.variant == "pi05" if policy == "pi05" else loaded.config.tiny_vlm
    metrics = (tmp_path / "run/metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 4 and "nan" not in "".join(metrics).lower()
    [result] = evaluate("reach", out, [0], "id", workers=1)
    assert result["seed"] == 0 and isinstance(result["success"], bool)


def test_state_only_is_refused_for_a_camera_policy(tmp_path, reach_demos):
    with pytest.raises(ValueError, match="state-only is a variant of the built-in policy; smolvla reads the cameras"):
        train_sft(_cfg(tmp_path, reach_demos, policy="smolvla", model=TINY_SMOLVLA))


def test_training_threads_are_pinned_for_the_block_and_put_back():
    import torch

    from flowpro.training import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with torch_threads(0):
            pass
