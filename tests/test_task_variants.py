"""Task variants as data (issue 15): ``TaskSpec`` / ``"usb:clearance_m=0.001,lead_m=0.0"`` name a
configured task, pickle into worker processes and build the variant there; a bad option is refused
by name; a plain name builds exactly the task it always did."""

from __future__ import annotations

import os
import pickle
import re

import mujoco
import pytest

from envs.env import XTrainerEnv
from envs.rollout import worker_pool
from envs.tasks import TaskSpec, get_task, spec_text, task_name
from envs.tasks.usb import PLUG_HALF, SOCKET_X, UsbTask

VARIANT = "usb:clearance_m=0.001,lead_m=0.0"  # a looser flat-bezel socket
USB_OPTIONS = "valid options of task 'usb': clearance_m (default 0.0005), lead_m (default 0.003)"


def socket_geometry(model: mujoco.MjModel) -> tuple[float, float]:
    """(clearance per side, lead-in width) of the socket in a compiled model, read off its geoms:
    with a lead-in, the ring below the chamfer bounds the opening; with a flat bezel, the walls."""
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "socket_side_px") >= 0:
        ring = model.geom("socket_side_px")
        return float(ring.pos[0] - ring.size[0] - SOCKET_X - PLUG_HALF[0]), float(2 * ring.size[0])
    return float(model.geom("strip_front").size[0] - PLUG_HALF[0]), 0.0


def worker_socket(spec_and_policy: tuple[str, str]) -> tuple[int, tuple[float, float]]:
    """In a worker process: the environment that evaluate's workers build (flowpro.rollout's own
    worker function and cache) from the spec's text, and the socket of its compiled model."""
    from flowpro import rollout

    spec, policy_dir = spec_and_policy
    env, _policy = rollout.worker_env_policy(rollout._WORKER, spec, "id", policy_dir, time_limit_s=0.2)
    return os.getpid(), socket_geometry(env.model)


def test_a_plain_name_is_unchanged():
    """``"usb"`` is still ``UsbTask()``: the same text, the same scene, the same compiled model;
    writing the default options out gives that model too."""
    assert spec_text("usb") == spec_text("USB") == "usb" and task_name("usb") == "usb"
    assert TaskSpec.parse("usb") == TaskSpec("usb") and TaskSpec("usb").options == ()
    assert get_task("usb").scene() == UsbTask().scene()
    fingerprints = set()
    for task in ("usb", UsbTask(), TaskSpec("usb"), "usb:clearance_m=0.0005,lead_m=0.003"):
        env = XTrainerEnv(task=task, obs_mode="state")
        fingerprints.add(env.fingerprint)
        assert socket_geometry(env.model) == pytest.approx((0.0005, 0.003), abs=1e-12)
        env.close()
    assert len(fingerprints) == 1


def test_a_spec_is_canonical_text_that_pickles():
    spec = TaskSpec.parse("usb: lead_m = 0 ,clearance_m=1e-3")
    assert spec == TaskSpec("usb", {"clearance_m": 0.001, "lead_m": 0}) == TaskSpec("USB", (("lead_m", 0.0),
                                                                                            ("clearance_m", 0.001)))
    assert spec.options == (("clearance_m", 0.001), ("lead_m", 0.0)) and str(spec) == VARIANT
    assert TaskSpec.parse(str(spec)) == spec and pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(TaskSpec.parse(VARIANT)) and task_name(spec) == task_name(VARIANT) == "usb"
    task = get_task(spec)
    assert isinstance(task, UsbTask) and (task.clearance, task.lead) == (0.001, 0.0)


@pytest.mark.parametrize("spec, message", [
    ("usb:clearence_m=0.001", f"task 'usb' has no option 'clearence_m'; {USB_OPTIONS}"),
    ("usb:clearance_m=wide",
     f"task 'usb': bad value 'wide' for option 'clearance_m' (expected a number); {USB_OPTIONS}"),
    ("usb:clearance_m=0.01", "task 'usb:clearance_m=0.01': clearance_m must be in (0, 3 mm), got 0.01"),
    ("usb:lead_m=0.001,lead_m=0.002", "task 'usb': option 'lead_m' given twice"),
    ("usb:lead_m", "task spec 'usb:lead_m': 'lead_m' is not option=value"),
    ("reach:lead_m=0.001", "task 'reach' has no option 'lead_m'; task 'reach' takes no options"),
    ("pack:lead_m=0.001", "unknown task 'pack'; valid tasks: reach, usb"),
])
def test_a_bad_option_is_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_task(spec)
    with pytest.raises(ValueError, match=re.escape(message)):
        XTrainerEnv(task=spec, obs_mode="state")


def test_a_bad_value_in_python_and_a_configured_instance_are_refused():
    with pytest.raises(ValueError, match="bad value True for option 'lead_m' \\(expected a number\\)"):
        TaskSpec("usb", {"lead_m": True})
    with pytest.raises(TypeError, match="a configured UsbTask is not a task spec"):
        spec_text(UsbTask(lead_m=0.002))


def test_evaluation_refuses_a_bad_option_before_any_worker_starts(still_policy, capsys):
    from benchmarks.evaluate import evaluate, main

    with pytest.raises(ValueError, match="has no option 'clearence_m'"):
        evaluate("usb:clearence_m=0.001", "no/such/policy", [0, 1], workers=2)
    assert main(["--task", "usb:lead_m=0.01", "--policy", str(still_policy), "--rollouts", "1"]) == 2
    assert "lead_m must be in [0, 6 mm], got 0.01" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "usb:clearance_m=0.001,lead_m=0.0" in capsys.readouterr().out


def test_a_variant_reaches_worker_processes(still_policy):
    """Two worker processes (the pool evaluate uses), each building its environment the way
    evaluate's workers do, compile the variant's socket; evaluate runs the variant in two workers
    as in one."""
    from benchmarks.evaluate import evaluate

    with worker_pool(2) as pool:
        seen = list(pool.map(worker_socket, [(VARIANT, str(still_policy))] * 4))
    assert os.getpid() not in {pid for pid, _ in seen}
    for _, (clearance, lead) in seen:
        assert clearance == pytest.approx(0.001, abs=1e-12) and lead == 0.0
    kw = dict(split="id", time_limit_s=0.2)
    in_workers = evaluate(VARIANT, still_policy, [1000, 1001], workers=2, **kw)
    assert in_workers == evaluate(TaskSpec.parse(VARIANT), still_policy, [1000, 1001], workers=1, **kw)
    assert [r["steps"] for r in in_workers] == [6, 6]



def test_the_real_bench_refuses_a_variant(tmp_path):
    """Options shape the simulated scene; on the X-Trainer they would be dropped silently."""
    from hardware.config import EXAMPLE, load_robot_config
    from hardware.run import resolve_task

    robot = load_robot_config(EXAMPLE)
    assert resolve_task("USB", robot, tmp_path) == "usb"
    with pytest.raises(ValueError, match="the real bench runs the task as it stands there: pass --task usb"):
        resolve_task(VARIANT, robot, tmp_path)
