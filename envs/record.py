"""Record scripted-expert demonstrations as a LeRobotDataset v3.0.

    python -m envs.record --task usb --episodes 50 --split id --root data/usb_demos

Only successful episodes are kept (episode seeds run upward from ``--seed``; failures are
skipped and counted). Resumable: run the same command again after a crash or Ctrl-C and it
continues after the last finished episode, producing the same dataset as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tqdm import tqdm

import envs  # noqa: F401
from envs.dataset import BASE_COLUMNS, EpisodeWriter, dataset_features, make_frame, run_recording_command
from envs.env import XTrainerEnv
from envs.rollout import ExpertPolicy, rollout
from envs.tasks import TaskSpec, check_split, spec_text, task_help, task_name


class ExecutionNoise:
    """Backend wrapper for DART-style demonstrations (Laskey et al. 2017): the robot executes the
    commanded action plus a slowly varying position offset, while the rollout records the
    commanded (clean) action. The closed-loop expert then demonstrates how to recover from the
    small errors a learned policy makes, which plain demonstrations never show."""

    def __init__(self, env: XTrainerEnv, sigma_m: float, hold_steps: int = 10):
        self.env, self.sigma, self.hold = env, sigma_m, hold_steps
        self._offset = np.zeros(6)

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, *, seed=None, options=None):
        self._rng = np.random.default_rng(None if seed is None else seed + 7_919)
        return self.env.reset(seed=seed, options=options)

    def act(self, action):
        if self.env.step_count % self.hold == 0:
            self._offset = self._rng.normal(0.0, self.sigma, 6)
        noisy = np.array(action, dtype=np.float64)
        noisy[[0, 1, 2, 10, 11, 12]] += self._offset
        return self.env.act(noisy)


def record(task: str | TaskSpec, episodes: int, split: str, root: str, *, seed: int = 0,
           image_size: tuple[int, int] = (96, 96), obs_mode: str = "rgb", repo_id: str | None = None,
           use_videos: bool = False, progress: bool = True, action_noise_m: float = 0.0) -> dict:
    """Record until ``root`` holds ``episodes`` successful expert episodes; returns a summary.

    ``action_noise_m > 0`` records DART-style demonstrations (see :class:`ExecutionNoise`). ``task``:
    a name or a variant (``"usb:lead_m=0.0"``), which the dataset's marker records; the dataset is
    named after the task (``flowpro/usb_id_demos``).
    """
    task = spec_text(task)
    check_split(split)
    env = XTrainerEnv(task=task, obs_mode=obs_mode, image_size=image_size, split=split, privileged_obs=True)
    env_state_dim = env.observation_space["environment_state"].shape[0]
    writer = EpisodeWriter(
        root, repo_id or f"flowpro/{task_name(task)}_{split}_demos", task=task, fps=int(round(env.cfg.control_hz)),
        features=dataset_features(image_size if obs_mode == "rgb" else None, env_state_dim, use_videos=use_videos),
        use_videos=use_videos,
        layout={"kind": "sft_demos", "split": split, "model_fingerprint": env.fingerprint, "obs_mode": obs_mode,
                "image_size": list(image_size) if obs_mode == "rgb" else None,
                **({"action_noise_m": action_noise_m} if action_noise_m > 0 else {})})
    backend = ExecutionNoise(env, action_noise_m) if action_noise_m > 0 else env
    done = writer.num_episodes
    next_seed = seed if done == 0 else writer.last_value("episode_seed") + 1
    discarded, frames_written, t0 = 0, 0, time.perf_counter()
    bar = tqdm(total=episodes, initial=min(done, episodes), desc=f"record {task}/{split}", unit="ep",
               disable=not progress)
    try:
        while done < episodes:
            result = rollout(backend, ExpertPolicy(env, next_seed), seed=next_seed, options={"split": split},
                             n_action_steps=1, record=True)
            if result.success:
                columns = {**{k: v for k, (_, v) in BASE_COLUMNS.items()}, "episode_seed": next_seed}
                frames = [make_frame(s.obs, s.action, s.obs["environment_state"], env.task_description, columns)
                          for s in result.trajectory]
                writer.write_episode(frames)
                done += 1
                frames_written += len(frames)
                bar.update(1)
            else:
                discarded += 1
            next_seed += 1
            bar.set_postfix(discarded=discarded)
    finally:
        bar.close()
        env.close()
    return {"root": str(root), "task": task, "split": split, "episodes": done, "discarded_failures": discarded,
            "frames_written_this_run": frames_written, "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help=task_help())
    ap.add_argument("--episodes", type=int, required=True)
    ap.add_argument("--split", default="id")
    ap.add_argument("--root", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"))
    ap.add_argument("--obs-mode", default="rgb", choices=("rgb", "state"))
    ap.add_argument("--repo-id", default=None)
    ap.add_argument("--video", action="store_true", help="store images as MP4 (needs FFmpeg libraries)")
    ap.add_argument("--action-noise", type=float, default=0.0, metavar="METRES",
                    help="DART-style execution noise on tool positions (recorded actions stay clean)")
    args = ap.parse_args(argv)
    return run_recording_command(
        lambda: record(args.task, args.episodes, args.split, args.root, seed=args.seed,
                       image_size=tuple(args.image_size), obs_mode=args.obs_mode, repo_id=args.repo_id,
                       use_videos=args.video, action_noise_m=args.action_noise),
        args.root, "finished episodes")

if __name__ == "__main__":
    sys.exit(main())
