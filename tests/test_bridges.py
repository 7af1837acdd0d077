"""Bridged chunks keep held objects held (issue 14, part 1; docs/tuples.md).

Executed from exactly restored grasp states of a recorded USB pair, the first 15 rows of every
Case-1 ``a^w`` must leave both objects in both fingers with no slip or drop. A bridge from the
measured pose fails this: a gripper closed on the strip measures about 0.62 while commanded 0.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bridge_grasp_probe import probe, record_held_pair  # noqa: E402


def test_every_bridge_from_a_grasp_state_keeps_both_grasps():
    pair = record_held_pair(seed=3)
    assert pair.states_l[:, 9].min() > 0.5 and pair.actions_l[:, 9].max() == 0.0  # held: measured open, commanded shut
    result = probe(pair, every=2)
    assert result["probes"] >= 20
    assert result["tau_w"]["held"] == result["probes"]  # the correction itself holds from these states
    assert result["command"]["held"] == result["probes"], result["command"]["drift_mm"]
    # The probe is sensitive: the old bridge start (the measured pose) loses grasps from these states.
    assert result["measured"]["held"] < result["probes"]
