"""Where in the corrections the base's flow loss sits (issue 14, part 1: the open lead).

    python scripts/correction_loss_profile.py --policy runs/usb/sft_xxx --pairs runs/usb/diag_bounded/pairs_r1_30 \
        --demos data/usb/demos_xxx --out results/usb/diagnostics/correction_loss_profile.json

Under the policy, with one shared noise/time draw per sample, the per-sample flow loss of every
Case-2 tuple (a state on ``tau^w`` with its chunk). The script reports:

- how much of the total loss the worst 5 % and 10 % of samples carry;
- where those samples sit in their correction (frames after the rollback);
- how fast their chunks move, beside all samples;
- each correction's largest single-step command jump;
- with ``--demos``: the corrections' commands beside the demonstrations' (how often a command
  equals the measured pose and how often that flips, and the quantiles of single-step moves,
  counted within episodes only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.evaluate import resolve_policy_dir
from flowpro.bridges import arm_positions, step_moves
from flowpro.data import ChunkDataset, PreferenceDataset
from flowpro.policies import FlowPolicy
from flowpro.tuples import SOURCE_W, load_pairs
from tuple_diagnostics import per_sample_flow_loss  # scripts/, on the path when run as a script


def command_profile(episodes: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Per arm, over ``(actions, states)`` episodes: the share of commands equal to the measured
    position, the share of steps where that flips, and quantiles of single-step command moves in
    mm, all within episodes."""
    out = {}
    for arm in ("left", "right"):
        at_measured, flips, moves = [], [], []
        for a, s in episodes:
            same = np.linalg.norm(arm_positions(a - s, arm), axis=-1) < 1e-6
            at_measured.append(same)
            flips.append(same[1:] != same[:-1])
            moves.append(step_moves(a, arm))
        mv = np.concatenate(moves) * 1e3
        out[arm] = {"commands_at_measured": round(float(np.concatenate(at_measured).mean()), 3),
                    "flip_rate": round(float(np.concatenate(flips).mean()), 3),
                    "move_mm_q99_q999_max": [round(float(x), 1) for x in np.quantile(mv, [0.99, 0.999, 1.0])]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--demos", default=None, help="the base's demonstrations, to compare commands with")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    policy = FlowPolicy.load(resolve_policy_dir(args.policy))
    c = policy.config
    pref = PreferenceDataset(args.pairs, c, use_images=bool(c.cameras), env_state=bool(c.env_state_dim))
    idx = np.flatnonzero(pref.source == SOURCE_W)
    loss = per_sample_flow_loss(policy, pref, idx)
    pairs = load_pairs(args.pairs)
    where = {int(g): k for p in pairs for k, g in enumerate(p.index_w)}  # dataset frame -> frame in its correction
    frame = np.array([where[int(pref.frame[i])] for i in idx])
    chunks = pref.a_w[idx].double().numpy()
    fastest = {arm: np.array([step_moves(ch, arm).max() for ch in chunks]) for arm in ("left", "right")}
    order = np.argsort(-loss)
    top = order[:len(loss) // 10]
    result = {
        "command": "python scripts/correction_loss_profile.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "case2_samples": int(len(loss)),
        "loss_share_of_worst": {"5%": round(float(loss[order[:len(loss) // 20]].sum() / loss.sum()), 3),
                                "10%": round(float(loss[top].sum() / loss.sum()), 3)},
        "frame_in_correction": {"worst_10%_q10_q50_q90": np.quantile(frame[top], [0.1, 0.5, 0.9]).tolist(),
                                "all_q10_q50_q90": np.quantile(frame, [0.1, 0.5, 0.9]).tolist(),
                                "worst_10%_within_30_frames": round(float((frame[top] < 30).mean()), 3),
                                "all_within_30_frames": round(float((frame < 30).mean()), 3)},
        "chunk_fastest_step_mm_median": {arm: {"worst_10%": round(float(np.median(v[top])) * 1e3, 2),
                                                "all": round(float(np.median(v)) * 1e3, 2)}
                                         for arm, v in fastest.items()},
        "largest_command_jump_mm_per_correction": {
            arm: sorted(round(float(step_moves(p.actions_w, arm).max()) * 1e3, 1) for p in pairs)
            for arm in ("left", "right")},
    }
    if args.demos:
        demos = ChunkDataset(args.demos, c, use_images=False, env_state=False)
        ends = demos.episode_end.numpy()
        result["commands_vs_demonstrations"] = {
            "corrections": command_profile([(p.actions_w, p.states_w) for p in pairs]),
            "demonstrations": command_profile([(demos.action.double().numpy()[ends == e],
                                                demos.state.double().numpy()[ends == e]) for e in np.unique(ends)])}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
