"""Training samples from a LeRobotDataset: the observation at frame ``t`` and the action chunk
``a[t : t + H]`` (padded past the episode end by holding the last action, ``action_is_pad``
marks the padding; SPEC §5).

The whole dataset is read once into memory (decoded images included, when they fit), so a
training step costs no decoding; samples are plain tensors in the policy's batch format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowpro.policies.base import ACTION, ACTION_PAD, OBS_ENV, OBS_STATE, PolicyConfig, image_key
from flowpro.tuples import chunk_at

IMAGE_CACHE_LIMIT_BYTES = 8 * 2**30


def _repo_id(root: Path) -> str:
    info = json.loads((root / "meta/info.json").read_text())
    return info.get("repo_id") or f"local/{root.name}"


class ChunkDataset(torch.utils.data.Dataset):
    """Chunked samples of one LeRobotDataset for a given policy configuration."""

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

    def __len__(self) -> int:
        return len(self.state)

    def __getitem__(self, i: int) -> dict[str, Any]:
        chunk, pad = chunk_at(self.action, i, self.config.chunk_size, end=int(self.episode_end[i]))
        sample: dict[str, Any] = {
            OBS_STATE: self.state[i],
            ACTION: chunk,
            ACTION_PAD: torch.from_numpy(pad),
            "task": self.tasks[i],
            "index": i,
        }
        if self.env is not None:
            sample[OBS_ENV] = self.env[i]
        for cam, imgs in self.images.items():
            sample[image_key(cam)] = imgs[i].float() / 255.0
        return sample
