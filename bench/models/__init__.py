"""Model variants by name: ``get_model("net", shape)``, ``list_variants()``.

One family per module; importing this package registers them all.
"""

from . import chapter8, classic, transfer  # noqa: F401  (registration side effects)
from ._registry import (
    InputShape,
    Knob,
    Variant,
    VariantError,
    count_parameters,
    describe_variant,
    get_model,
    get_variant,
    list_variants,
    register,
)
from ._util import Normalize

__all__ = [
    "InputShape",
    "Knob",
    "Normalize",
    "Variant",
    "VariantError",
    "count_parameters",
    "describe_variant",
    "get_model",
    "get_variant",
    "list_variants",
    "register",
]
