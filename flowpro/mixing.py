"""Fixed-ratio mini-batch mixing over FlowPRO's three buffers (paper §3.4 and App. G; docs/method.md §Batch mixing).

Every mini-batch holds the same number of samples from each buffer: round 1 draws
``D^1_pref : D_SFT = 80 : 20``; rounds >= 2 draw ``D^k_pref : D^{<k}_pref : D_SFT = 70 : 15 : 15``.
Fractional counts are settled by the largest-remainder rule, so the counts are exact and the
same for every batch. Within a buffer, indices are drawn uniformly with replacement from a
seeded generator: the same seed gives the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

CURRENT, PREVIOUS, SFT = "current", "previous", "sft"


def round_ratios(k: int, sft_share: float | None = None) -> dict[str, float]:
    """The mixing ratios for round ``k`` (1-based): the paper's (80 : 20, then 70 : 15 : 15), or with
    ``sft_share`` that share of each batch from ``D_SFT`` and the rest split between the current
    and earlier rounds' buffers 70 : 15 as the paper does."""
    if k < 1:
        raise ValueError(f"rounds are numbered from 1, got {k}")
    if sft_share is None:
        return {CURRENT: 0.8, SFT: 0.2} if k == 1 else {CURRENT: 0.7, PREVIOUS: 0.15, SFT: 0.15}
    if not 0.0 <= sft_share < 1.0:
        raise ValueError(f"sft_share must be in [0, 1), got {sft_share}")
    rest = 1.0 - sft_share
    return {CURRENT: rest, SFT: sft_share} if k == 1 else \
        {CURRENT: rest * 70 / 85, PREVIOUS: rest * 15 / 85, SFT: sft_share}


def batch_counts(ratios: dict[str, float], batch_size: int) -> dict[str, int]:
    """Samples per buffer in one batch: proportional to ``ratios``, summing to ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
        raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios}")
    total = sum(ratios.values())
    exact = {name: batch_size * r / total for name, r in ratios.items()}
    counts = {name: int(np.floor(v)) for name, v in exact.items()}
    # Largest remainder; ties go to the buffer listed first, so the result is deterministic.
    order = sorted(exact, key=lambda n: -(exact[n] - counts[n]))
    for name in order[: batch_size - sum(counts.values())]:
        counts[name] += 1
    return counts


@dataclass
class MixingSampler:
    """Yields batches as lists of ``(buffer name, index)``; iterate for as many steps as needed."""

    sizes: dict[str, int]
    ratios: dict[str, float]
    batch_size: int
    seed: int = 0
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.ratios) - set(self.sizes)
        if unknown:
            raise ValueError(f"ratios name buffers that do not exist: {sorted(unknown)}; buffers: {sorted(self.sizes)}")
        self.counts = batch_counts(self.ratios, self.batch_size)
        empty = [n for n, c in self.counts.items() if c > 0 and self.sizes[n] == 0]
        if empty:
            raise ValueError(f"buffer(s) {empty} are empty but their ratio asks for samples in every batch")
        self._rng = np.random.default_rng(self.seed)

    def __iter__(self) -> Iterator[list[tuple[str, int]]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> list[tuple[str, int]]:
        batch: list[tuple[str, int]] = []
        for name, count in self.counts.items():
            if count:
                batch += [(name, int(i)) for i in self._rng.integers(0, self.sizes[name], count)]
        return batch

    def state(self) -> dict:
        """Generator state, for resumable training."""
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state
