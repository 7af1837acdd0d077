"""Fixed-ratio batch mixing (paper §3.4; docs/method.md §Batch mixing)."""

from collections import Counter
from itertools import islice

import pytest

from flowpro.mixing import CURRENT, PREVIOUS, SFT, MixingSampler, batch_counts, round_ratios


def test_paper_ratios_give_exact_counts_per_batch():
    assert batch_counts(round_ratios(1), 20) == {CURRENT: 16, SFT: 4}
    assert batch_counts(round_ratios(2), 20) == {CURRENT: 14, PREVIOUS: 3, SFT: 3}
    counts = batch_counts(round_ratios(3), 32)  # 22.4 / 4.8 / 4.8 -> largest remainder
    assert counts == {CURRENT: 22, PREVIOUS: 5, SFT: 5} and sum(counts.values()) == 32


def test_every_batch_has_the_same_composition_and_valid_indices():
    sizes = {CURRENT: 50, PREVIOUS: 7, SFT: 1000}
    sampler = MixingSampler(sizes, round_ratios(2), batch_size=20, seed=3)
    seen = Counter()
    for batch in islice(sampler, 200):
        comp = Counter(name for name, _ in batch)
        assert comp == Counter({CURRENT: 14, PREVIOUS: 3, SFT: 3})
        assert all(0 <= i < sizes[name] for name, i in batch)
        seen.update(i for name, i in batch if name == PREVIOUS)
    assert set(seen) == set(range(7))  # uniform within a buffer: every index shows up
    assert max(seen.values()) / min(seen.values()) < 1.6


def test_same_seed_same_batches_and_resumable_state():
    sizes = {CURRENT: 30, SFT: 400}
    a = MixingSampler(sizes, round_ratios(1), 16, seed=7)
    b = MixingSampler(sizes, round_ratios(1), 16, seed=7)
    assert list(islice(a, 5)) == list(islice(b, 5))
    state = a.state()
    nxt = a.next_batch()
    c = MixingSampler(sizes, round_ratios(1), 16, seed=0)
    c.set_state(state)
    assert c.next_batch() == nxt
    assert MixingSampler(sizes, round_ratios(1), 16, seed=8).next_batch() != MixingSampler(sizes, round_ratios(1), 16, seed=7).next_batch()


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match=r"\['current'\] are empty"):
        MixingSampler({CURRENT: 0, SFT: 10}, round_ratios(1), 8)
    with pytest.raises(ValueError, match="do not exist: \\['previous'\\]"):
        MixingSampler({CURRENT: 5, SFT: 10}, round_ratios(2), 8)
    with pytest.raises(ValueError, match="rounds are numbered from 1"):
        round_ratios(0)
    with pytest.raises(ValueError, match="batch_size"):
        batch_counts(round_ratios(1), 0)


def test_an_sft_share_replaces_the_papers_demonstration_share_and_keeps_the_70_15_split():
    assert round_ratios(1, None) == round_ratios(1) == {CURRENT: 0.8, SFT: 0.2}
    assert batch_counts(round_ratios(1, 0.8), 20) == {CURRENT: 4, SFT: 16}
    r = round_ratios(2, 0.5)
    assert abs(sum(r.values()) - 1.0) < 1e-12 and r[SFT] == 0.5 and abs(r[CURRENT] / r[PREVIOUS] - 70 / 15) < 1e-9
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="sft_share must be in"):
            round_ratios(1, bad)
