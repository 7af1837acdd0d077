"""The hardware tests: emulated Dobot controllers, Feetech grippers, cameras and operators, and the
real-bench sessions on top of them (hardware/). They run in the default suite like every other test."""

import gc

import pytest


@pytest.fixture(autouse=True)
def _no_full_gc_pause():
    """The emulated controllers run in processes of their own (hardware/emulator_process.py), but
    the client side (feedback readers, the safety watchdog's 100 ms limits) runs here, as it does
    on the real bench; a full garbage collection over the heap the earlier tests leave (~600k
    objects) pauses this process for up to ~400 ms (results/perf/gc_pauses.json). Freezing the
    objects that exist before the test keeps collections short."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
