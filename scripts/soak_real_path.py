"""Fault-injection soak of the real-robot path: a scripted-human collection session on the emulated
X-Trainer for ``--minutes``, with faults injected at random times, then the checks of issue 16.

The bench is the emulator in a process of its own (:class:`hardware.emulator_process.EmulatorProcess`),
configured through the shipped example config; the session is ``python -m hardware.run collect``
(:func:`hardware.run.main`) with a scripted human: keys that start each rollout, intervene, confirm
the rollback and hand back, and a leader arm replaying a small joint path. A fault ends the session
with exit code 3; the soak runs the same command again (it resumes) until the time is up.

Faults, one at a time at exponential intervals (``--mean-interval`` s), each on a random arm:
a controller alarm (RobotMode 9), a dropped command connection, stale feedback (the stream paused
for 0.5 s), a malformed reply, a servo timeout (the gripper answers nothing for 3 requests).

Afterwards: every finished pair is on disk and loads; every interrupted rollout is in the
interrupted record; every session after a fault resumed (started a rollout); for each fault, the
time until both controllers received a stop (their own receive times, ``ArmEmulator.stop_times``),
counted from when the fault became detectable (at once; stale feedback after the 100 ms limit);
resident memory of this process and of the emulator over time. Printed and written to ``--out``.

    python scripts/soak_real_path.py --minutes 20 --out results/reliability/soak_real_path.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from script_output import provenance, write_result

from envs.dataset import finished_episodes
from envs.xtrainer import CAMERAS
from flowpro.tuples import load_pairs
from hardware import run
from hardware.config import load_robot_config
from hardware.emulated_session import emulated_config, save_still_policy
from hardware.emulator import XTrainerEmulator
from hardware.emulator_process import EmulatorProcess
from hardware.feetech import STATUS_TIMEOUT_S
from hardware.interrupted import interrupted_dir
from hardware.teleop import ScriptedTeleoperator

FAULTS = ("alarm", "dropped_connection", "stale_feedback", "malformed_reply", "servo_timeout")
STALE_LIMIT_S = 0.1  # the client's feedback-age limit (hardware/config.py): stale feedback shows after it
STOP_LIMIT_S = 0.1


class CyclingHuman:
    """Keys of an operator who starts each rollout, lets the policy run, intervenes, confirms the
    rollback, corrects and hands back, over and over; ``q`` at the start prompt once told to stop.
    Keys that arrive where they mean nothing are ignored by the session, so the cycle realigns."""

    CYCLE = ["c"] + [None] * 20 + ["i", "c"] + [None] * 8 + ["h"] + [None] * 60

    def __init__(self) -> None:
        self.i, self.stop = 0, threading.Event()

    def poll(self) -> str | None:
        self.i += 1
        if self.stop.is_set():  # 'q' now and then, as a person would press it (a session reads keys until none)
            return "q" if self.i % 2 else None
        return self.CYCLE[self.i % len(self.CYCLE)]


def _rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def inject(bench: EmulatorProcess, kind: str, arm: str) -> dict:
    """Inject one fault; returns when (monotonic s) and from when the client can detect it."""
    emu, t = bench.arms[arm], time.monotonic()
    if kind == "alarm":
        emu.inject_error(code=22)
    elif kind == "dropped_connection":
        emu.drop_commands()
    elif kind == "stale_feedback":
        emu.faults.feedback_paused = True
    elif kind == "malformed_reply":
        emu.faults.malformed_replies = 1
    elif kind == "servo_timeout":
        bench.grippers[arm].silent = 3
    return {"kind": kind, "arm": arm, "t": t, "detectable_at": t + (STALE_LIMIT_S if kind == "stale_feedback" else 0.0)}


def injector(bench: EmulatorProcess, events: list, stop: threading.Event, rng: random.Random, mean_s: float) -> None:
    while not stop.wait(rng.expovariate(1.0 / mean_s)):
        event = inject(bench, rng.choice(FAULTS), rng.choice(("left", "right")))
        events.append(event)
        if event["kind"] == "stale_feedback":
            time.sleep(0.5)
            bench.arms[event["arm"]].faults.feedback_paused = False


def emulator_logs(bench: EmulatorProcess) -> dict[str, dict[str, np.ndarray]]:
    """The emulator's own receive logs (monotonic s), per arm: stops, ServoJ commands, garbled
    replies sent, servo requests left unanswered."""
    arms = ("left", "right")
    return {"stop": {a: np.array(bench.arms[a].stop_times) for a in arms},
            "servoj": {a: np.array(bench.arms[a].servoj_times) for a in arms},
            "malformed": {a: np.array(bench.arms[a].malformed_times) for a in arms},
            "silent": {a: np.array(bench.grippers[a].silent_times) for a in arms}}


def stop_latencies(logs: dict, events: list[dict], session_ends: list[float], servo_t_s: float,
                   bus_timeout_s: float) -> list[dict]:
    """For each fault, from the emulator's own logs: when it showed (a garbled reply sent; a servo
    timeout ``bus_timeout_s`` after the last request left unanswered; stale feedback after the 100 ms
    limit; otherwise at once), whether the arms were under motion commands when it was injected (a
    ServoJ on either arm in the 100 ms before), and per arm the seconds until its commanded motion ended: the first
    stop it received, or the end of the last ServoJ segment (``servo_t_s`` long) it received before
    that stop and before the session ended (a controller whose commands stop holds its target; the
    next session's homing is a new command)."""
    stops, servoj, shown = logs["stop"], logs["servoj"], {"malformed_reply": logs["malformed"],
                                                          "servo_timeout": logs["silent"]}
    every_servoj = np.concatenate(list(servoj.values()))
    out = []
    for i, e in enumerate(events):
        until = events[i + 1]["t"] if i + 1 < len(events) else np.inf
        at = e["detectable_at"]
        if e["kind"] in shown:  # it shows when the client next talks to that controller or servo
            log = shown[e["kind"]][e["arm"]]
            log = log[(log >= e["t"]) & (log < until)]
            if e["kind"] == "malformed_reply":
                at = float(log[0]) if len(log) else None
            else:  # the bus gives up after a request and its retry go unanswered (FeetechBus.retries = 1)
                at = float(log[1]) + bus_timeout_s if len(log) >= 2 else None
        moving = bool(np.any((every_servoj >= e["t"] - 0.1) & (every_servoj <= e["t"])))
        ended = {}
        for arm in ("left", "right"):
            if at is None:
                ended[arm] = None
                continue
            later = stops[arm][stops[arm] >= at]
            first_stop = float(later[0]) if len(later) else np.inf
            session_end = next((t for t in session_ends if t >= at), np.inf)
            moves = servoj[arm][servoj[arm] < min(first_stop, session_end)]
            motion_end = min(first_stop, float(moves[-1]) + servo_t_s) if len(moves) else first_stop
            ended[arm] = None if not np.isfinite(motion_end) else max(0.0, motion_end - at)
        out.append({**e, "shown_at": at, "under_motion": moving, "stop_latency_s": ended,
                    "both_stopped_within_limit": all(v is not None and v <= STOP_LIMIT_S for v in ended.values())})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--mean-interval", type=float, default=20.0, help="mean seconds between faults")
    ap.add_argument("--time-limit", type=float, default=3.0, help="rollout length (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="directory for the pairs (default: a temporary one)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--raw", default=None, help="an .npz of the emulator's logs and the fault schedule")
    args = ap.parse_args(argv)
    record = provenance("soak_real_path.py", argv)
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="soak_"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "pairs_r1"
    policy = save_still_policy(work / "policy", cameras=tuple(CAMERAS), image_size=(24, 32),
                               image_channels=(8, 8, 8), grid=2)
    deltas = np.zeros((10, 14))
    deltas[:, 7] = 0.01 * np.arange(10)  # the right leader arm turns J1
    deltas[:, [6, 13]] = 1.0
    human, events, sessions, session_ends, memory = CyclingHuman(), [], [], [], []
    with EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0, grippers=True) as bench:
        config = emulated_config(work / "robot.json", bench, task="reach", time_limit_s=args.time_limit)
        argv_collect = ["collect", "--config", str(config), "--policy", str(policy), "--pairs", "100000",
                        "--round", "1", "--root", str(root), "--k-back", "3", "--seed", "0"]
        stop = threading.Event()
        thread = threading.Thread(target=injector, args=(bench, events, stop, rng, args.mean_interval), daemon=True)
        t0 = time.monotonic()
        end = t0 + 60 * args.minutes
        thread.start()
        timer = threading.Timer(60 * args.minutes, human.stop.set)
        timer.start()
        try:
            while time.monotonic() < end:
                lines: list[str] = []
                err = io.StringIO()
                t_s = time.monotonic()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = run.main(argv_collect, keys=human, teleop=ScriptedTeleoperator(deltas, relative=True),
                                  log=lines.append)
                session_ends.append(time.monotonic())
                sessions.append({"start_s": round(t_s - t0, 2), "seconds": round(time.monotonic() - t_s, 2),
                                 "exit_code": rc, "start_prompts": sum("press 'c'" in m for m in lines),
                                 "pairs_written": sum(m.startswith("[session] pair ") for m in lines),
                                 "error": err.getvalue().strip()[:600]})
                print(f"[soak] {sessions[-1]['start_s']:.0f} s: session exit {rc} after {sessions[-1]['seconds']} s, "
                      f"{sessions[-1]['pairs_written']} pair(s); faults so far {len(events)}; "
                      f"{sessions[-1]['error'][:300]!r}", file=sys.__stderr__,
                      flush=True)
                memory.append({"t_s": round(time.monotonic() - t0, 1), "this_kb": _rss_kb(),
                               "emulator_kb": _rss_kb(bench.pid)})
                for arm in ("left", "right"):  # a fault the session ended on is over: clear what persists
                    bench.arms[arm].faults.feedback_paused = False
        finally:
            stop.set()
            timer.cancel()
            thread.join()
        logs = emulator_logs(bench)
        latencies = stop_latencies(logs, events, session_ends,
                                   1.0 / load_robot_config(config).control_hz, STATUS_TIMEOUT_S)
    pairs = load_pairs(root) if finished_episodes(root) else []
    log_path = interrupted_dir(root) / "log.jsonl"
    interrupted = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    faulted = [i for i, s in enumerate(sessions) if s["exit_code"] == 3]
    said_interrupted = sum("was interrupted" in s["error"] for s in sessions if s["exit_code"] == 3)
    resumed = [sessions[i + 1]["start_prompts"] > 0 for i in faulted if i + 1 < len(sessions)]
    # A fault can outlast its session (a garbled reply still due, a silent servo): the first try may
    # fail at start-up, so "resumed" is a later session of the same command reaching the start prompt.
    eventually = [any(s["start_prompts"] > 0 for s in sessions[i + 1:]) for i in faulted if i + 1 < len(sessions)]
    moving = [e for e in latencies if e["under_motion"] and e["shown_at"] is not None]
    by_kind = Counter(e["kind"] for e in latencies)
    moving_kind = Counter(e["kind"] for e in moving)
    within = Counter(e["kind"] for e in moving if e["both_stopped_within_limit"])
    worst = {k: max((max(v if v is not None else np.inf for v in e["stop_latency_s"].values())
                     for e in moving if e["kind"] == k), default=None) for k in FAULTS}
    half = memory[len(memory) // 2:] if len(memory) >= 4 else memory
    result = {
        **record, "minutes": args.minutes, "mean_fault_interval_s": args.mean_interval, "seed": args.seed,
        "sessions": len(sessions), "exit_codes": dict(Counter(s["exit_code"] for s in sessions)),
        "faults_injected": dict(by_kind),
        "pairs": {"written_by_sessions": sum(s["pairs_written"] for s in sessions), "on_disk_and_loading": len(pairs)},
        "interrupted": {"sessions_ended_by_a_fault": len(faulted), "said_rollout_interrupted": said_interrupted,
                        "records_in_log": len(interrupted)},
        "resumed_after_fault": {"faults_that_ended_a_session": len(resumed),
                                "next_session_reached_the_start_prompt": int(sum(resumed)),
                                "a_later_session_reached_the_start_prompt": int(sum(eventually))},
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "faults_under_motion_and_shown": dict(moving_kind),
        "faults_never_shown": sum(e["shown_at"] is None for e in latencies),
        "under_motion_both_arms_stopped_within_100ms": {k: f"{within[k]}/{moving_kind[k]}" for k in FAULTS
                                                        if moving_kind[k]},
        "under_motion_worst_stop_latency_s": {k: round(v, 4) for k, v in worst.items() if v is not None},
        "memory_kb": {"first": memory[0] if memory else None, "last": memory[-1] if memory else None,
                      "max_this": max((m["this_kb"] for m in memory), default=None),
                      "second_half_growth_this_kb": (half[-1]["this_kb"] - half[0]["this_kb"]) if half else None,
                      "second_half_growth_emulator_kb": (half[-1]["emulator_kb"] - half[0]["emulator_kb"]) if half
                      else None},
        "events": [{**{k: v for k, v in e.items() if k not in ("t", "detectable_at", "shown_at")},
                    "at_s": round(e["t"] - t0, 2),
                    "shown_after_s": None if e["shown_at"] is None else round(e["shown_at"] - e["t"], 4)}
                   for e in latencies],
        "session_log": sessions, "memory_samples": memory,
    }
    if args.raw:  # everything the figures above are computed from, to recompute them offline
        np.savez_compressed(args.raw, t0=t0, session_ends=np.array(session_ends),
                            fault_t=np.array([e["t"] for e in events]), fault_kind=np.array([e["kind"] for e in events]),
                            fault_arm=np.array([e["arm"] for e in events]),
                            **{f"{k}_{a}": v for k, per_arm in logs.items() for a, v in per_arm.items()})
    write_result(result, args.out, shown={k: v for k, v in result.items()
                                          if k not in ("events", "session_log", "memory_samples")})
    return result


if __name__ == "__main__":
    main()
