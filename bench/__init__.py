"""bench: train and compare image-classifier variants, tracked in MLflow, searched with Optuna.

Your own variants: ``bench.register_variant`` (with ``bench.Knob`` and ``bench.InputShape``);
see README.md, "Benchmark your own model". These names load torch on first use, so
``import bench`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

_PUBLIC = {"register_variant", "Knob", "InputShape", "Variant", "VariantError", "get_model", "list_variants"}
__all__ = sorted(_PUBLIC | {"__version__"})


def __getattr__(name: str):
    if name in _PUBLIC:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
