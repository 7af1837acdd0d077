"""Preference tuples from one intervention pair (docs/method.md §Preference tuples, Cases 1-2)."""

import numpy as np
import pytest
from trajectories import random_trajectory

from flowpro.interpolation import closest_index, smooth_interpolate
from flowpro.tuples import SOURCE_L, SOURCE_W, bridge_gap, build_pair_tuples, chunk_at


def _pair(rng, n_l=50, n_w=70):
    w = random_trajectory(rng, n_w)
    l_states = w[:n_l].copy()
    l_states[:, [0, 10]] += np.linspace(0, 0.05, n_l)[:, None]  # the policy drifts off in x
    # actions: the next pose (absolute targets), the last one repeated
    return l_states, np.vstack([l_states[1:], l_states[-1:]]), w, np.vstack([w[1:], w[-1:]])


def test_chunk_at_pads_by_holding_the_last_action():
    a = np.arange(10.0)[:, None].repeat(20, 1)
    chunk, pad = chunk_at(a, 7, 5)
    assert chunk[:, 0].tolist() == [7, 8, 9, 9, 9] and pad.tolist() == [False] * 3 + [True] * 2
    chunk, pad = chunk_at(a, 2, 5, end=5)  # an episode ending inside a longer array
    assert chunk[:, 0].tolist() == [2, 3, 4, 4, 4] and pad.sum() == 2
    with pytest.raises(IndexError, match="outside"):
        chunk_at(a, 10, 5)


def test_case1_uses_the_prefix_and_bridges_to_the_correction():
    rng = np.random.default_rng(0)
    s_l, a_l, s_w, a_w = _pair(rng)
    h, m = 30, 15
    t = build_pair_tuples(s_l, a_l, s_w, a_w, h, m)
    case1 = np.flatnonzero(t.source == SOURCE_L)
    # sampling rule: the prefix only, from the first frame with a command before it
    assert t.frame[case1].tolist() == list(range(1, len(s_l) - h))
    for k in case1:
        i = t.frame[k]
        assert np.array_equal(t.a_l[k], a_l[i:i + h])  # a^l lies inside tau^l
        assert not np.array_equal(t.a_w[k], t.a_l[k])
        assert not t.pad[k, :m].any()  # bridge rows are real
    # rows from m on follow tau^w from the closest point J
    k = case1[3]
    target_rows = t.a_w[k, m:]
    hits = [j for j in range(len(a_w)) if np.allclose(np.vstack([a_w[j:], a_w[-1:].repeat(h, 0)])[m:h], target_rows)]
    assert hits


def test_a_bridge_gap_limit_keeps_the_near_states_and_their_tuples_unchanged():
    rng = np.random.default_rng(1)
    s_l, a_l, s_w, a_w = _pair(rng, n_l=60, n_w=90)  # the policy drifts up to 5 cm off the correction
    h, m = 30, 15
    full = build_pair_tuples(s_l, a_l, s_w, a_w, h, m)
    near = build_pair_tuples(s_l, a_l, s_w, a_w, h, m, max_bridge_gap=0.01)
    gaps = {int(i): bridge_gap(s_l[i], s_w[closest_index(s_l[i], s_w)]) for i in full.frame[full.source == SOURCE_L]}
    kept = [i for i, g in gaps.items() if g <= 0.01]
    assert 0 < len(kept) < len(gaps)  # the limit bites, and leaves some
    case1 = near.source == SOURCE_L
    assert near.frame[case1].tolist() == kept
    assert np.allclose(near.gap[case1], [gaps[i] for i in kept]) and np.isnan(near.gap[~case1]).all()
    rows = [int(np.flatnonzero((full.source == SOURCE_L) & (full.frame == i))[0]) for i in kept]
    assert np.array_equal(near.a_w[case1], full.a_w[rows]) and np.array_equal(near.a_l[case1], full.a_l[rows])
    assert np.array_equal(near.a_w[~case1], full.a_w[full.source == SOURCE_W])  # Case 2 untouched
    with pytest.raises(ValueError, match="max_bridge_gap must be > 0"):
        build_pair_tuples(s_l, a_l, s_w, a_w, h, m, max_bridge_gap=0.0)


def test_bridges_start_from_the_command_in_effect_not_the_measured_pose():
    """A gripper closed on an object measures the object's width (0.62 on the USB strip) while it
    is commanded 0: a bridge must keep commanding 0, and the arms start from their last command."""
    rng = np.random.default_rng(4)
    s_l, a_l, s_w, a_w = _pair(rng)
    for arr, g in ((s_l, 0.62), (a_l, 0.0), (s_w, 0.62), (a_w, 0.0)):
        arr[:, 9] = g
    a_l[:, [0, 1, 2]] += 0.004  # the arm lags its command by a few millimetres
    h, m = 30, 15
    t = build_pair_tuples(s_l, a_l, s_w, a_w, h, m)
    case1 = np.flatnonzero(t.source == SOURCE_L)
    assert len(case1) and np.all(t.a_w[case1][:, :, 9] == 0.0)  # never commanded open
    for k in case1:
        i = t.frame[k]
        target, _ = chunk_at(a_w, closest_index(s_l[i], s_w), h)  # J: found between measured poses
        assert np.array_equal(t.a_w[k], smooth_interpolate(a_l[i - 1], target, m))
        assert not np.allclose(t.a_w[k], smooth_interpolate(s_l[i], target, m))


def test_case2_identical_pairs_with_padding_near_the_end():
    rng = np.random.default_rng(1)
    s_l, a_l, s_w, a_w = _pair(rng)
    t = build_pair_tuples(s_l, a_l, s_w, a_w, 30)
    case2 = np.flatnonzero(t.source == SOURCE_W)
    assert len(case2) == len(s_w)
    assert all(np.array_equal(t.a_w[k], t.a_l[k]) for k in case2)
    last = case2[-1]
    assert t.pad[last].sum() == 29 and np.all(t.a_w[last] == a_w[-1])


def test_short_failing_segment_gives_no_case1_tuples():
    rng = np.random.default_rng(2)
    s_l, a_l, s_w, a_w = _pair(rng, n_l=20)
    t = build_pair_tuples(s_l, a_l, s_w, a_w, 30)
    assert (t.source == SOURCE_L).sum() == 0 and len(t) == len(s_w)


def test_bad_pair_shapes_are_named():
    rng = np.random.default_rng(3)
    s_l, a_l, s_w, a_w = _pair(rng)
    with pytest.raises(ValueError, match=r"tau\^w: states and actions"):
        build_pair_tuples(s_l, a_l, s_w, a_w[:, :14], 30)


def test_bad_pair_poses_are_named_by_pair_and_frame():
    from flowpro.tuples import split_pairs

    rng = np.random.default_rng(3)
    s_l, a_l, s_w, a_w = _pair(rng, n_l=40, n_w=50)
    states, actions = np.vstack([s_l, s_w]), np.vstack([a_l, a_w])
    pair_id = np.full(len(states), 7)
    role = np.array(["l"] * len(s_l) + ["w"] * len(s_w))
    assert len(split_pairs(pair_id, role, states, actions)) == 1
    bad = states.copy()
    bad[len(s_l) + 4, 3:6] *= 1.5  # tau^w frame 4: the left rotation's first column is not unit
    with pytest.raises(ValueError, match=r"pair 7 tau\^w observation.state: the left arm's 6D rotation is not orthonormal at frame 4"):
        split_pairs(pair_id, role, bad, actions)
    bad_a = actions.copy()
    bad_a[2, 15] = np.nan
    with pytest.raises(ValueError, match=r"pair 7 tau\^l action: non-finite values at frame 2"):
        split_pairs(pair_id, role, states, bad_a)


def test_tuples_demonstrations_and_the_policy_share_one_representation(usb_pairs):
    """On the frames of a real pair, a Case-2 tuple is exactly the chunk (and padding) a
    demonstration dataset gives, and a relative-action policy maps both through one
    ``actions_to_model`` against the tuple's own observed state, invertibly."""
    import dataclasses

    import torch

    from usb_scene import USB_ENV_STATE_DIM
    from flowpro.data import ChunkDataset, PreferenceDataset
    from flowpro.policies import BuiltinConfig, BuiltinVLA
    from flowpro.policies.base import ACTION, ACTION_PAD, OBS_STATE

    cfg = BuiltinConfig(use_images=False, cameras=(), env_state_dim=USB_ENV_STATE_DIM, d_model=32, n_layers=1,
                        n_heads=2, relative_actions=True)
    pref = PreferenceDataset(usb_pairs, cfg, use_images=False, env_state=True)
    demo_view = ChunkDataset(usb_pairs, cfg, use_images=False, env_state=True)  # the same frames as demonstrations
    assert torch.equal(pref.stats[ACTION]["mean"], demo_view.stats[ACTION]["mean"])  # one normalisation
    policy = BuiltinVLA(dataclasses.replace(cfg))
    policy.set_normalization(pref.stats)
    case2 = [k for k in range(len(pref)) if pref.source[k] == SOURCE_W]
    case1 = [k for k in range(len(pref)) if pref.source[k] == SOURCE_L]
    assert case2 and case1
    for k in case2[::7]:
        t, d = pref[k], demo_view[int(pref.frame[k])]
        assert torch.equal(t[ACTION], d[ACTION]) and torch.equal(t[ACTION_PAD], d[ACTION_PAD])
    for k in (case1 + case2)[::5]:
        t = pref[k]
        batch = {OBS_STATE: t[OBS_STATE][None]}
        x = policy.actions_to_model(t[ACTION][None], batch)
        assert torch.allclose(policy.actions_from_model(x, batch)[0], t[ACTION], atol=1e-5)
