"""The packages above :mod:`flowpro` that extend it, imported by name when first needed.

:mod:`flowpro` is a library and imports no package above it. The baselines register their
:class:`~flowpro.methods.Method` in a registry kept in :mod:`flowpro`; a CLI of :mod:`flowpro`
(``python -m flowpro.train rpro --method tpo``) finds them through :func:`load_plugins`, which
imports the registering package the first time a registry does not know a name (as LeRobot
imports its third-party device packages).
"""

from __future__ import annotations

import importlib

PLUGINS: dict[str, tuple[str, ...]] = {
    "methods": ("baselines",),  # DAgger, DAgger-Buffered, pi0.6*, TPO (baselines/__init__.py)
}


def load_plugins(group: str) -> None:
    """Import the packages that register into ``group`` (``"methods"``)."""
    for module in PLUGINS[group]:
        importlib.import_module(module)
