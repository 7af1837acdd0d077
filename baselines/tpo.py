"""TPO baseline: trajectory-wise preferences, GRAPE-style, in the RPRO objective (docs/method.md §Baselines;
paper Eq. 26-27).

The reward of a trajectory is the sum of per-state implicit rewards,
``R(tau) = sum_{s in tau} r_theta(s, a_s)``, and the PRO objective (contrastive term plus the
reward anchor) compares ``R(tau^w)`` with ``R(tau^l)`` over whole pairs; the SFT term is the
mean flow-matching loss on ``tau^w``. Summing over every state of both trajectories does not fit
in memory, so each pair contributes ``tpo_states`` states per trajectory, evenly spaced from a
random offset (``S`` states of ``tau^w`` with their chunks along ``tau^w``; ``S`` states of the
prefix of ``tau^l`` with their chunks along ``tau^l``). Pairs whose ``tau^l`` has no usable state
(at most ``H`` frames) are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flowpro.data import ACTION_L
from flowpro.methods import Method, register_method
from flowpro.losses import loss_terms, pro_loss
from flowpro.mixing import CURRENT, PREVIOUS, round_ratios
from flowpro.policies.base import ACTION
from flowpro.tuples import SOURCE_L, SOURCE_W


def _spaced(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` evenly spaced indices into ``range(n)`` from a random offset."""
    step = n / k
    return np.minimum((rng.random() * step + step * np.arange(k)).astype(int), n - 1)


class TrajectoryPairs(torch.utils.data.Dataset):
    """One item per pair: ``2 S`` rows, the first ``S`` on ``tau^w``, the next ``S`` on ``tau^l``."""

    def __init__(self, ds: Any, states: int, seed: int = 0):
        self.ds, self.s = ds, states
        self.rng = np.random.default_rng(seed)
        self.items = []
        for pid in np.unique(ds.pair_of):
            w = np.flatnonzero((ds.pair_of == pid) & (ds.source == SOURCE_W))
            ll = np.flatnonzero((ds.pair_of == pid) & (ds.source == SOURCE_L))
            if len(w) and len(ll):
                self.items.append((w, ll))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        w, ll = self.items[i]
        rows = [self.ds[int(j)] for j in w[_spaced(len(w), self.s, self.rng)]]
        for j in ll[_spaced(len(ll), self.s, self.rng)]:
            x = dict(self.ds[int(j)])
            x[ACTION] = x[ACTION_L]
            rows.append(x)
        out = torch.utils.data.default_collate([{k: v for k, v in r.items() if k not in ("source", "index", "task")}
                                                for r in rows])
        out["task"] = rows[0]["task"]
        return out


@register_method("tpo")
class TPO(Method):

    @property
    def items_per_batch(self) -> int:
        return max(1, self.cfg.batch_size // (2 * self.cfg.tpo_states))

    def buffers(self, current, previous, sft):
        s, seed = self.cfg.tpo_states, self.cfg.seed
        out = {CURRENT: TrajectoryPairs(current, s, seed)}
        if previous:
            out[PREVIOUS] = torch.utils.data.ConcatDataset([TrajectoryPairs(d, s, seed) for d in previous])
        empty = [n for n, d in out.items() if len(d) == 0]
        if empty:
            raise ValueError(f"tpo: no pair with a usable tau^l (longer than H) in buffer(s) {empty}")
        return out

    def ratios(self, k, buffers):
        return {n: r for n, r in round_ratios(k, self.cfg.sft_share).items() if n in buffers}

    def batch_loss(self, policy, reference, batch, generator, log_terms):
        c, s = self.cfg, self.cfg.tpo_states
        p, r = batch[ACTION].shape[:2]
        flat = {k: v.flatten(0, 1) for k, v in batch.items() if torch.is_tensor(v) and k != ACTION_L}
        flat["task"] = [t for t in batch["task"] for _ in range(r)]
        noise, t = policy.sample_noise(p * r, generator), policy.sample_time(p * r, generator)
        l_theta = policy.per_sample_loss(flat, noise, t).view(p, r)
        with torch.inference_mode():
            l_ref = reference.per_sample_loss(flat, noise, t).view(p, r)
        l_ref = l_ref.clone()
        sums = (l_theta[:, :s].sum(1), l_theta[:, s:].sum(1), l_ref[:, :s].sum(1), l_ref[:, s:].sum(1))
        weights = dict(beta=c.beta, reg_weight=c.reg_weight)
        pro, stats = pro_loss(*sums, **weights)
        sft = l_theta[:, :s].mean()
        loss = c.lambda_pro * pro + c.lambda_sft * sft
        stats.update(loss=float(loss.detach()), sft=float(sft.detach()))
        terms = {}
        if log_terms:
            terms = {k: c.lambda_pro * v for k, v in loss_terms("pro", *sums, **weights).items()}
            terms["sft"] = c.lambda_sft * sft
        return loss, stats, terms
