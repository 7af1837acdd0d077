"""Training samples from LeRobotDatasets, in the policy's batch format.

- :class:`ChunkDataset`: demonstrations (``D_SFT``): the observation at frame ``t`` and the
  action chunk ``a[t : t + H]`` (padded past the episode end by holding the last action,
  ``action_is_pad`` marks the padding; docs/method.md §Padding).
- :class:`PreferenceDataset`: the per-state tuples ``(s, a^w, a^l, mask, source)`` of the pairs
  of one collection round (docs/method.md §Preference tuples, Cases 1-2), ``a^w`` under ``action`` and ``a^l`` under
  ``action_l``. A demonstration sample is the Case-3 identical pair (``action_l`` absent means
  ``a^l = a^w``).

A dataset is read once into memory (decoded images included, when they fit), so a training
step costs no decoding; samples are plain tensors.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowpro.policies.base import ACTION, ACTION_PAD, OBS_ENV, OBS_STATE, PolicyConfig, image_key, to_relative
from flowpro.tuples import SOURCE_L, build_pair_tuples, chunk_at, split_pairs

IMAGE_CACHE_LIMIT_BYTES = 8 * 2**30


def _repo_id(root: Path) -> str:
    info = json.loads((root / "meta/info.json").read_text())
    return info.get("repo_id") or f"local/{root.name}"


ACTION_L = "action_l"  # a^l of a preference tuple; a^w is under ACTION


class EpisodeFrames(torch.utils.data.Dataset):
    """The frames of one LeRobotDataset in memory, checked against a policy configuration."""

    def __init__(self, root: str | Path, config: PolicyConfig, repo_id: str | None = None,
                 use_images: bool = True, env_state: bool = False):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(root)
        if not (self.root / "meta/info.json").exists():
            raise FileNotFoundError(f"{self.root} is not a LeRobotDataset (no meta/info.json)")
        self.config, self.use_images = config, use_images
        ds = LeRobotDataset(repo_id or _repo_id(self.root), root=self.root, video_backend="pyav")
        self.meta = ds.meta
        self._check_features(ds.meta.features, use_images, env_state)
        hf = ds.hf_dataset.with_format(None)
        self.state = torch.tensor(np.asarray(hf[OBS_STATE], dtype=np.float32))
        self.action = torch.tensor(np.asarray(hf[ACTION], dtype=np.float32))
        self.env = torch.tensor(np.asarray(hf[OBS_ENV], dtype=np.float32)) if env_state else None
        episode = np.asarray(hf["episode_index"])
        self.hf = hf
        task_index = np.asarray(hf["task_index"])
        tasks = ds.meta.tasks  # DataFrame indexed by task text
        by_index = {int(i): str(t) for t, i in zip(tasks.index, tasks["task_index"])}
        self.tasks = [by_index[int(i)] for i in task_index]
        # End (exclusive) of each frame's episode, for chunking without crossing episodes.
        ends = np.empty_like(episode)
        boundaries = np.flatnonzero(np.diff(episode)) + 1
        for start, stop in zip(np.r_[0, boundaries], np.r_[boundaries, len(episode)]):
            ends[start:stop] = stop
        self.episode_end = torch.tensor(ends)
        self.images: dict[str, torch.Tensor] = {}
        if use_images:
            h, w = config.image_size
            need = len(episode) * len(config.cameras) * 3 * h * w
            if need > IMAGE_CACHE_LIMIT_BYTES:
                raise MemoryError(f"decoded images need {need / 2**30:.1f} GiB, over the "
                                  f"{IMAGE_CACHE_LIMIT_BYTES / 2**30:.0f} GiB cache limit; record smaller images")
            for cam in config.cameras:
                frames = hf[image_key(cam)]
                self.images[cam] = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in frames])
                                                    ).permute(0, 3, 1, 2).contiguous()
        self.stats = {key: {"mean": torch.tensor(np.asarray(ds.meta.stats[key]["mean"], dtype=np.float32)),
                            "std": torch.tensor(np.asarray(ds.meta.stats[key]["std"], dtype=np.float32))}
                      for key in (OBS_STATE, ACTION, *((OBS_ENV,) if env_state else ()))}
        if config.relative_actions:
            self.stats[ACTION] = self._relative_action_stats()

    def _check_features(self, features: dict, use_images: bool, env_state: bool) -> None:
        c = self.config
        problems = []
        for key, dim in ((OBS_STATE, c.state_dim), (ACTION, c.action_dim), *(((OBS_ENV, c.env_state_dim),) if env_state else ())):
            if key not in features:
                problems.append(f"{key}: missing in the dataset, the policy needs {dim} dims")
            elif tuple(features[key]["shape"]) != (dim,):
                problems.append(f"{key}: dataset has {tuple(features[key]['shape'])}, policy expects ({dim},)")
        if use_images:
            have = sorted(k.removeprefix("observation.images.") for k in features if k.startswith("observation.images."))
            if sorted(c.cameras) != have:
                problems.append(f"cameras: dataset has {have}, policy expects {sorted(c.cameras)}")
            else:
                for cam in c.cameras:
                    shape = tuple(features[image_key(cam)]["shape"][:2])
                    if shape != tuple(c.image_size):
                        problems.append(f"{image_key(cam)}: dataset images are {shape}, policy expects {tuple(c.image_size)}")
        if problems:
            raise ValueError(f"dataset {self.root} does not match the policy config: " + "; ".join(problems))

    def _relative_action_stats(self) -> dict[str, torch.Tensor]:
        """Mean/std of every chunk step relative to its state, over all frames (docs/method.md
        §Action representation)."""
        n, h = len(self.state), self.config.chunk_size
        idx = torch.minimum(torch.arange(n)[:, None] + torch.arange(h), self.episode_end[:, None] - 1)
        rel = to_relative(self.action[idx], self.state).reshape(-1, self.action.shape[-1])
        return {"mean": rel.mean(0), "std": rel.std(0)}

    def __len__(self) -> int:
        return len(self.state)

    def observation(self, i: int) -> dict[str, Any]:
        """The observation part of a sample at frame ``i``."""
        sample: dict[str, Any] = {OBS_STATE: self.state[i], "task": self.tasks[i], "index": i}
        if self.env is not None:
            sample[OBS_ENV] = self.env[i]
        for cam, imgs in self.images.items():
            sample[image_key(cam)] = imgs[i].float() / 255.0
        return sample


class ChunkDataset(EpisodeFrames):
    """Demonstration samples: the observation at each frame and its action chunk."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        chunk, pad = chunk_at(self.action, i, self.config.chunk_size, end=int(self.episode_end[i]))
        return {**self.observation(i), ACTION: chunk, ACTION_PAD: torch.from_numpy(pad)}


class PreferenceDataset(EpisodeFrames):
    """The preference tuples of one pair dataset (written by :mod:`flowpro.collect`).

    Tuples are built once at load time (Smooth Interpolation, docs/method.md §Preference tuples);
    ``source`` says whether the state lies on ``tau^l`` (Case 1) or ``tau^w`` (Case 2). Pairs whose ``tau^l`` is not
    longer than ``H`` give no Case-1 tuples: they are counted in ``short_pairs`` and warned about.
    ``max_bridge_gap`` keeps only Case-1 states within that distance of the correction
    (:func:`flowpro.tuples.build_pair_tuples`).
    """

    def __init__(self, root: str | Path, config: PolicyConfig, repo_id: str | None = None,
                 use_images: bool = True, env_state: bool = False, m: int | None = None,
                 max_bridge_gap: float | None = None):
        super().__init__(root, config, repo_id, use_images, env_state)
        h = config.chunk_size
        role = np.asarray(self.hf["role"])
        role = np.asarray([r[0] if isinstance(r, list) else r for r in role])
        pair_id = np.asarray(self.hf["pair_id"]).reshape(len(role), -1)[:, 0]
        pairs = split_pairs(pair_id, role, self.state.double().numpy(), self.action.double().numpy())
        frames, a_w, a_l, pads, sources, pair_of, gaps = [], [], [], [], [], [], []
        self.short_pairs = 0
        for p in pairs:
            t = build_pair_tuples(p.states_l, p.actions_l, p.states_w, p.actions_w, h, m, max_bridge_gap)
            self.short_pairs += len(p.states_l) <= h
            on_l = t.source == SOURCE_L
            frame = np.empty(len(t), dtype=np.int64)  # dataset frame of each tuple's state
            frame[on_l], frame[~on_l] = p.index_l[t.frame[on_l]], p.index_w[t.frame[~on_l]]
            frames.append(frame)
            a_w.append(t.a_w), a_l.append(t.a_l), pads.append(t.pad), sources.append(t.source), gaps.append(t.gap)
            pair_of.append(np.full(len(t), p.pair_id))
        if self.short_pairs:
            warnings.warn(f"{self.root}: {self.short_pairs} of {len(pairs)} pairs have tau^l of at most H={h} "
                          "frames and give no Case-1 tuples", stacklevel=2)
        self.pairs = len(pairs)
        self.frame = torch.from_numpy(np.concatenate(frames))
        self.a_w = torch.from_numpy(np.concatenate(a_w)).float()
        self.a_l = torch.from_numpy(np.concatenate(a_l)).float()
        self.pad = torch.from_numpy(np.concatenate(pads))
        self.source = np.concatenate(sources)
        self.pair_of = np.concatenate(pair_of)  # the pair each tuple comes from
        self.bridge_gap = np.concatenate(gaps)  # Case 1: metres from M to J (flowpro.tuples.bridge_gap)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.observation(int(self.frame[i])), ACTION: self.a_w[i], ACTION_L: self.a_l[i],
                ACTION_PAD: self.pad[i], "source": str(self.source[i])}
