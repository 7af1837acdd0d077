"""The packages above :mod:`flowpro` that extend it, imported by name when first needed.

:mod:`flowpro` is a library: it imports only :mod:`envs` (the layers contract in
``pyproject.toml``). The baselines register their :class:`~flowpro.methods.Method` and the
hardware its bench in registries kept here in :mod:`flowpro`; a CLI of :mod:`flowpro`
(``python -m flowpro.train rpro --method tpo``, ``--backend real``) finds them through
:func:`load_plugins`, which imports the registering package the first time a registry does not
know a name (as LeRobot imports its third-party device packages).
"""

from __future__ import annotations

import importlib

PLUGINS: dict[str, tuple[str, ...]] = {
    "methods": ("baselines",),  # DAgger, DAgger-Buffered, pi0.6*, TPO (baselines/__init__.py)
    "benches": ("flowpro.sim_bench", "hardware.bench"),  # the simulator; the real X-Trainer with a human operator
}


def load_plugins(group: str) -> None:
    """Import the packages that register into ``group`` (``"methods"`` or ``"benches"``)."""
    for module in PLUGINS[group]:
        importlib.import_module(module)
