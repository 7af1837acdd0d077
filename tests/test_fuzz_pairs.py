"""Fuzzed pair datasets (issue 16): :func:`flowpro.tuples.load_pairs` returns the pairs of a valid
dataset and refuses a broken one with :class:`~flowpro.tuples.PairDataError` naming the problem;
a pair write that fails leaves the dataset as it was."""

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpro.tuples import PairDataError, load_pairs
from trajectories import random_trajectory

FUZZ = settings(max_examples=40, deadline=3000)
COLUMNS = ["observation.state", "action", "pair_id", "role", "index"]


def pair_columns(seed: int, lengths: list[tuple[int, int]]) -> dict[str, list]:
    """The columns of a pair dataset as the writer lays them out: per pair, tau^l then tau^w."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for pid, (n_l, n_w) in enumerate(lengths):
        for role, n in (("l", n_l), ("w", n_w)):
            states = random_trajectory(rng, max(n, 2))[:n]
            cols["observation.state"] += states.astype(np.float32).tolist()
            cols["action"] += states.astype(np.float32).tolist()
            cols["pair_id"] += [[pid]] * n
            cols["role"] += [role] * n
    cols["index"] = list(range(len(cols["role"])))
    return cols


def write(root: Path, cols: dict[str, list]) -> None:
    (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), root / "data/chunk-000/file-000.parquet")


LENGTHS = st.lists(st.tuples(st.integers(0, 6), st.integers(1, 6)), min_size=1, max_size=3)


@FUZZ
@given(st.integers(0, 1000), LENGTHS)
def test_a_valid_pair_dataset_loads_as_written(seed, lengths):
    cols = pair_columns(seed, lengths)
    with tempfile.TemporaryDirectory() as d:
        write(Path(d), cols)
        pairs = load_pairs(d)
    assert [(len(p.states_l), len(p.states_w)) for p in pairs] == lengths
    states = np.asarray(cols["observation.state"])
    for p in pairs:
        np.testing.assert_array_equal(p.states_w, states[p.index_w])


def _nonfinite(cols, data):
    i, c = data.draw(st.integers(0, len(cols["index"]) - 1)), data.draw(st.integers(0, 19))
    key = data.draw(st.sampled_from(["observation.state", "action"]))
    cols[key][i][c] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return "non-finite"


def _not_a_rotation(cols, data):
    i = data.draw(st.integers(0, len(cols["index"]) - 1))
    c = data.draw(st.sampled_from([3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18]))
    cols["observation.state"][i][c] += data.draw(st.sampled_from([-1.0, 0.5, 2.0, 10.0]))
    return "not orthonormal"


def _missing_column(cols, data):
    del cols[data.draw(st.sampled_from(COLUMNS))]
    return "no column"


def _no_correction(cols, data):
    pid = data.draw(st.sampled_from(sorted({p[0] for p in cols["pair_id"]})))
    keep = [k for k, (p, r) in enumerate(zip(cols["pair_id"], cols["role"])) if not (p[0] == pid and r == "w")]
    for k in COLUMNS:
        cols[k] = [cols[k][j] for j in keep]
    return "no tau\\^w|no frames"


def _bad_role(cols, data):
    cols["role"][data.draw(st.integers(0, len(cols["role"]) - 1))] = data.draw(st.sampled_from(["sft", "W", ""]))
    return "role"


def _short_row(cols, data):
    i = data.draw(st.integers(0, len(cols["index"]) - 1))
    key = data.draw(st.sampled_from(["observation.state", "action"]))
    cols[key][i] = cols[key][i][:data.draw(st.integers(0, 19))]
    return "column"


def _null(cols, data):
    key = data.draw(st.sampled_from(["observation.state", "pair_id", "index"]))
    cols[key][data.draw(st.integers(0, len(cols[key]) - 1))] = None
    return "."


BREAKAGES = [_nonfinite, _not_a_rotation, _missing_column, _no_correction, _bad_role, _short_row, _null]


@FUZZ
@given(st.integers(0, 1000), LENGTHS, st.sampled_from(BREAKAGES), st.data())
def test_a_broken_pair_dataset_raises_pair_data_error_naming_the_problem(seed, lengths, breakage, data):
    cols = pair_columns(seed, lengths)
    why = breakage(cols, data)
    with tempfile.TemporaryDirectory() as d:
        write(Path(d), cols)
        with pytest.raises(PairDataError, match=why):
            load_pairs(d)


@FUZZ
@given(st.integers(0, 1000), st.data())
def test_a_corrupt_parquet_file_raises_pair_data_error(seed, data):
    with tempfile.TemporaryDirectory() as d:
        write(Path(d), pair_columns(seed, [(3, 4)]))
        f = Path(d) / "data/chunk-000/file-000.parquet"
        raw = bytearray(f.read_bytes())
        if data.draw(st.booleans()):
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        else:  # bytes of the footer (schema, offsets) flipped
            i = data.draw(st.integers(len(raw) - 200, len(raw) - 9))
            raw[i] ^= data.draw(st.integers(1, 255))
        f.write_bytes(bytes(raw))
        try:
            pairs = load_pairs(d)
        except PairDataError:
            return
        assert [(len(p.states_l), len(p.states_w)) for p in pairs] == [(3, 4)]  # a flip the format ignores


# ----------------------------------------------------------------------------- writing
def _frames(seed: int, n_l: int = 3, n_w: int = 4, pair_id: int = 0) -> list[dict]:
    from envs.dataset import make_frame

    cols = pair_columns(seed, [(n_l, n_w)])
    return [make_frame({"agent_pos": s, "joint_pos": np.zeros(14)}, np.asarray(a), np.zeros(4), "fuzz",
                       {"episode_seed": seed, "pair_id": pair_id, "round": 1, "rollback_index": 0,
                        "failure": "", "role": r, "intervention": r == "w"})
            for s, a, r in zip(cols["observation.state"], cols["action"], cols["role"])]


def _writer(root: Path):
    from envs.dataset import EpisodeWriter, dataset_features
    from flowpro.collect import PAIR_COLUMNS

    return EpisodeWriter(root, "flowpro/fuzz_pairs", task="fuzz", fps=30,
                         features=dataset_features(None, 4, PAIR_COLUMNS), layout={"kind": "preference_pairs"})


@pytest.mark.parametrize("fail", ["bad frame", "save fails"])
def test_a_failing_pair_write_leaves_the_dataset_as_it_was(tmp_path, monkeypatch, fail):
    """The first pair's write goes to a sibling directory (nothing at ``root`` if it fails); a
    later one that fails leaves the pairs before it loadable, and the next write goes on."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "pairs"

    def failing_write(writer, frames):
        if fail == "bad frame":
            frames = [*frames[:-1], {**frames[-1], "action": np.zeros(7, np.float32)}]
            with pytest.raises((ValueError, KeyError)):
                writer.write_episode(frames)
        else:
            with monkeypatch.context() as m:
                m.setattr(LeRobotDataset, "save_episode", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
                with pytest.raises(OSError, match="disk full"):
                    writer.write_episode(frames)

    failing_write(_writer(root), _frames(1))
    assert not (root / "data").exists()
    with pytest.raises(FileNotFoundError):
        load_pairs(root)
    _writer(root).write_episode(_frames(2))
    failing_write(_writer(root), _frames(3, pair_id=1))
    assert [(len(p.states_l), len(p.states_w)) for p in load_pairs(root)] == [(3, 4)]
    _writer(root).write_episode(_frames(4, n_l=2, pair_id=1))
    assert [(len(p.states_l), len(p.states_w)) for p in load_pairs(root)] == [(3, 4), (2, 4)]
