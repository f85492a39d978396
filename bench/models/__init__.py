"""Model variants by name: ``get_model("net", shape)``, ``list_variants()``, ``register_variant``.

One family per module (``classic``, ``chapter8``, ``transfer``); importing this package registers
them. Variants from outside bench (installed packages' entry points, ``file.py:name`` and
``module:name``) come through ``plugins``, loaded when asked for.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import chapter8, classic, plugins, transfer  # noqa: F401  (registration side effects)
from ._registry import (
    BUILT_IN, InputShape, Knob, Variant, VariantError, count_parameters, register, register_variant, registered,
    registered_names,
)
from ._util import Normalize

__all__ = [
    "BUILT_IN", "InputShape", "Knob", "Normalize", "Variant", "VariantError", "count_parameters", "describe_variant",
    "get_model", "get_variant", "list_variants", "register", "register_variant",
]


def get_variant(name: str) -> Variant:
    """The variant ``name``: bench's own, one registered in this process, an installed package's entry
    point, or code named as ``file.py:name`` / ``module:name``."""
    found = registered(name) if not plugins.is_spec(name) else None
    if found is None:
        found = plugins.find(name)
    if found is None:
        raise VariantError(f"unknown variant {name!r}; accepted: {', '.join(list_variants())}, or FILE.py:NAME / "
                           "package.module:NAME for your own")
    return found


def get_model(name: str, shape: InputShape, **knobs: Any) -> nn.Module:
    """Build variant ``name`` for inputs of ``shape`` with knob overrides."""
    return get_variant(name).build(shape, **knobs)


def list_variants() -> list[str]:
    """Every variant name: registered ones, then installed plugins not loaded yet."""
    names = registered_names()
    return names + [name for name in plugins.entry_point_names() if name not in names]


def describe_variant(name: str) -> str:
    """One sentence for a run's description: what the variant is and where it comes from."""
    variant = get_variant(name)
    return f"{plugins.short_name(name)}: {variant.description} (from {variant.origin})."
