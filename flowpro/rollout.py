"""The policy at run time: a saved :class:`FlowPolicy` driving the rollout loop.

:class:`PolicyRunner` adapts a policy to :mod:`envs.rollout`'s ``ChunkPolicy`` (numpy in, numpy
out), :class:`BatchPolicyRunner` to its ``BatchChunkPolicy``, :class:`TemporalEnsemble` re-plans
every step; :func:`worker_env_policy` builds a worker's environment and policy once, and
:func:`evaluate` runs closed-loop rollouts of a saved policy in parallel (the simulated bench's
evaluation, and ``python -m benchmarks.evaluate``'s).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import envs  # noqa: F401  (headless rendering before mujoco loads)
from envs.rollout import parallel_map, worker_pool
from envs.tasks import TaskSpec, check_split, spec_text


def resolve_policy_dir(path: str | Path) -> Path:
    """Accept a run directory (``<run>/policy``) or a policy directory."""
    p = Path(path)
    for candidate in (p, p / "policy"):
        if (candidate / "config.json").exists() and (candidate / "model.safetensors").exists():
            return candidate
    raise FileNotFoundError(f"no policy checkpoint (config.json + model.safetensors) in {p} or {p / 'policy'}")


class PolicyRunner:
    """Adapts a :class:`FlowPolicy` to the rollout loop's ``ChunkPolicy`` (numpy in, numpy out)."""

    def __init__(self, policy, seed: int = 0, condition: int | None = None):
        import torch

        self.policy, self.torch = policy.eval(), torch
        self.generator = torch.Generator().manual_seed(seed)
        self.condition = condition

    def reset(self) -> None:
        pass

    def obs_to_batch(self, obs: dict[str, Any], instruction: str) -> dict[str, Any]:
        torch, c = self.torch, self.policy.config
        batch: dict[str, Any] = {"observation.state": torch.as_tensor(obs["agent_pos"], dtype=torch.float32)[None],
                                 "task": [instruction]}
        if c.env_state_dim:
            batch["observation.environment_state"] = torch.as_tensor(obs["environment_state"], dtype=torch.float32)[None]
        for cam in c.cameras:
            img = torch.from_numpy(np.ascontiguousarray(obs["pixels"][cam])).permute(2, 0, 1).float() / 255.0
            batch[f"observation.images.{cam}"] = img[None]
        return batch

    def predict_chunk(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        return sample_chunks([self], [obs], instruction)[0]


def sample_chunks(runners: list[PolicyRunner], observations: list[dict[str, Any]],
                  instruction: str) -> list[np.ndarray]:
    """One policy call for several rollouts of the same policy: their observations stacked, each
    row's noise drawn from its own runner's generator (as its batch-size-1 call would draw it)."""
    torch, policy = runners[0].torch, runners[0].policy
    rows = [r.obs_to_batch(obs, instruction) for r, obs in zip(runners, observations, strict=True)]
    batch = {k: sum((row[k] for row in rows), []) if k == "task" else torch.cat([row[k] for row in rows])
             for k in rows[0]}
    noise = torch.cat([policy.sample_noise(1, r.generator) for r in runners])
    conditions = [r.condition for r in runners]
    cond = None if conditions[0] is None else torch.tensor(conditions)
    with torch.inference_mode():
        chunks = policy.sample_actions(batch, noise=noise, condition=cond)
    return [chunk.numpy().astype(np.float64) for chunk in chunks]


class BatchPolicyRunner:
    """The ``BatchChunkPolicy`` of :func:`envs.rollout.rollout_batch`: one :class:`PolicyRunner`
    per seed. ``batched=True`` makes one policy call for all rollouts that re-plan together;
    ``batched=False`` calls each rollout's runner alone, exactly the unbatched path. The two differ
    by float rounding only: on CPU the matrix products of a batch-size-1 call take other kernels
    (matrix-vector for one row, other blockings for a few rows) than those of a larger batch."""

    def __init__(self, policy, seeds: list[int], batched: bool = True, condition: int | None = None):
        self.runners = [PolicyRunner(policy, seed, condition) for seed in seeds]
        self.batched = batched

    def predict_chunks(self, episodes: list[int], observations: list[dict[str, Any]],
                       instruction: str) -> list[np.ndarray]:
        runners = [self.runners[i] for i in episodes]
        if self.batched:
            return sample_chunks(runners, observations, instruction)
        return [r.predict_chunk(obs, instruction) for r, obs in zip(runners, observations, strict=True)]


class TemporalEnsemble:
    """ACT-style temporal ensembling (Zhao et al. 2023): re-plan every step and execute the
    weighted mean of every stored chunk's prediction for the current step, weights
    ``exp(-k * i)`` with ``i = 0`` for the oldest chunk. Use with ``n_action_steps=1``."""

    def __init__(self, runner: Any, k: float = 0.01):
        self.runner, self.k = runner, k
        self._chunks: list[tuple[np.ndarray, int]] = []

    def reset(self) -> None:
        self.runner.reset()
        self._chunks = []

    def predict_chunk(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        chunk = self.runner.predict_chunk(obs, instruction)
        self._chunks = [(c, age + 1) for c, age in self._chunks if age + 1 < len(c)] + [(chunk, 0)]
        preds = np.stack([c[age] for c, age in self._chunks])
        w = np.exp(-self.k * np.arange(len(preds)))
        return ((preds * w[:, None]).sum(0) / w.sum())[None]


EVAL_SEED = 1000  # evaluation scenes: seeds 1000, 1001, ... (demos use 0, 1, ...; collection 10^4 and up)
_WORKER: dict[str, Any] = {}


def worker_env_policy(cache: dict[str, Any], task: str, split: str, policy_dir: str,
                      privileged_obs: bool = False, time_limit_s: float | None = None) -> tuple[Any, Any]:
    """The environment and policy of one worker process (the first of :func:`worker_envs_policy`)."""
    environments, policy = worker_envs_policy(cache, task, split, policy_dir, 1, privileged_obs, time_limit_s)
    return environments[0], policy


def worker_envs_policy(cache: dict[str, Any], task: str, split: str, policy_dir: str, n_envs: int,
                       privileged_obs: bool = False, time_limit_s: float | None = None) -> tuple[list[Any], Any]:
    """``n_envs`` environments and the policy of one worker process, built on first use and kept in
    ``cache`` for as long as the same task, split and policy are asked for (with one worker the
    "worker" is the calling process, which may evaluate several policies in turn); the environments
    observe what the policy reads (cameras or privileged state). ``task``: a task spec's text
    (``"usb"``, ``"usb:clearance_m=0.001"``), the data a worker receives."""
    import torch

    from envs.env import XTrainerEnv
    from flowpro.policies import FlowPolicy

    key = (task, split, str(policy_dir), privileged_obs, time_limit_s)
    if cache.get("key") != key:
        for env in cache.get("envs", []):
            env.close()
        cache.clear()
        cache["key"], cache["envs"] = key, []
        torch.set_num_threads(1)  # one worker per core
        cache["policy"] = FlowPolicy.load(policy_dir)
    c = cache["policy"].config
    while len(cache["envs"]) < n_envs:
        cache["envs"].append(XTrainerEnv(task=task, split=split, obs_mode="rgb" if c.cameras else "state",
                                         image_size=tuple(c.image_size), time_limit_s=time_limit_s,
                                         privileged_obs=privileged_obs or bool(c.env_state_dim)))
    return cache["envs"][:n_envs], cache["policy"]


def _rollout_one(task: str, split: str, policy_dir: str, n_action_steps: int | None, ensemble_k: float | None,
                 time_limit_s: float | None, seed: int) -> dict:
    from envs.rollout import rollout

    env, policy = worker_env_policy(_WORKER, task, split, policy_dir, time_limit_s=time_limit_s)
    runner: Any = PolicyRunner(policy, seed)
    if ensemble_k is not None:
        runner, n_action_steps = TemporalEnsemble(runner, ensemble_k), 1
    result = rollout(env, runner, seed=seed, options={"split": split},
                     n_action_steps=n_action_steps or policy.config.n_action_steps)
    return result.summary()


def _rollout_shard(task: str, split: str, policy_dir: str, n_action_steps: int | None, time_limit_s: float | None,
                   env_batch: int, batched: bool, seeds: list[int]) -> list[dict]:
    """One worker's share of the seeds, ``env_batch`` environments in lock-step."""
    from envs.rollout import rollout_batch

    environments, policy = worker_envs_policy(_WORKER, task, split, policy_dir, min(env_batch, len(seeds)),
                                              time_limit_s=time_limit_s)
    results = rollout_batch(environments, BatchPolicyRunner(policy, seeds, batched), seeds, options={"split": split},
                            n_action_steps=n_action_steps or policy.config.n_action_steps)
    return [r.summary() for r in results]


def evaluate(task: str | TaskSpec, policy_dir: str | Path, seeds: list[int], split: str = "id",
             workers: int | None = None, n_action_steps: int | None = None,
             ensemble_k: float | None = None, env_batch: int = 1, batched_policy: bool = True,
             time_limit_s: float | None = None) -> list[dict]:
    """Closed-loop rollouts of a saved policy, one per seed; ``n_action_steps`` overrides the
    policy's; ``ensemble_k`` switches to temporal ensembling (re-plan every step). ``task``: a name or
    a variant (``"usb:clearance_m=0.001,lead_m=0.0"``, a :class:`~envs.tasks.TaskSpec`), which reaches
    the workers as its text.

    ``env_batch > 1`` runs that many environments per worker in lock-step
    (:func:`envs.rollout.rollout_batch`), where a crashed simulation fails only its own rollout,
    with one policy call per re-plan for all of them (``batched_policy``; ``False`` calls the policy
    once per rollout, which reproduces ``env_batch=1`` exactly). A batched call's chunks differ
    from batch-size-1 calls by float rounding (see :class:`BatchPolicyRunner`), so its rollouts are
    not bitwise those of the default path. ``time_limit_s`` shortens episodes (tests, speed runs)."""
    task = spec_text(task)  # a bad option fails here, before any worker starts
    check_split(split)
    if env_batch < 1:
        raise ValueError(f"env_batch must be >= 1, got {env_batch}")
    if env_batch > 1 and ensemble_k is not None:
        raise ValueError("temporal ensembling (ensemble_k) runs with env_batch=1 only")
    policy_dir = str(resolve_policy_dir(policy_dir))
    if env_batch == 1 or not seeds:
        return parallel_map(partial(_rollout_one, task, split, policy_dir, n_action_steps, ensemble_k, time_limit_s),
                            seeds, workers)
    workers = min(workers or os.cpu_count() or 1, max(len(seeds), 1))
    size = -(-len(seeds) // workers)
    shards = [seeds[i:i + size] for i in range(0, len(seeds), size)]
    run = partial(_rollout_shard, task, split, policy_dir, n_action_steps, time_limit_s, env_batch, batched_policy)
    with worker_pool(workers) as pool:
        return [r for shard in pool.map(run, shards) for r in shard]
