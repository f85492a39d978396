"""A tiny variant registry in the style of torchvision's ``models/_api.py``.

A *variant* is a named model builder plus the knobs it accepts and the training
defaults the literature used with it. Regularizers that live in the optimizer or
the loss (``l2``, ``weight_decay``) are training defaults, not new classes, so
``net-l2`` and ``net`` share one builder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

__all__ = [
    "InputShape",
    "Knob",
    "Variant",
    "VariantError",
    "register",
    "get_variant",
    "get_model",
    "list_variants",
    "count_parameters",
    "describe_variant",
]


class VariantError(ValueError):
    """An unknown variant or a knob value the variant does not accept."""


@dataclasses.dataclass(frozen=True)
class InputShape:
    channels: int
    size: int  # square images: height == width == size (pixels)
    num_classes: int


@dataclasses.dataclass(frozen=True)
class Knob:
    """One architecture setting a variant exposes to the CLI, suites and Optuna."""

    default: Any
    help: str
    kind: type = int
    low: float | None = None  # inclusive
    high: float | None = None  # exclusive for floats, inclusive for ints
    choices: tuple[Any, ...] | None = None

    def check(self, name: str, value: Any) -> Any:
        """Coerce ``value`` to the knob's type and range, or raise naming what is accepted."""
        try:
            if self.kind is bool and isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                value = value.lower() in {"true", "1", "yes"}
            elif self.kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                value = self.kind(value)
        except (TypeError, ValueError):
            raise VariantError(f"{name}={value!r} is not a valid {self.kind.__name__}; {self.accepted()}") from None
        if self.choices is not None and value not in self.choices:
            raise VariantError(f"{name}={value!r} is not accepted; {self.accepted()}")
        if self.low is not None and value < self.low:
            raise VariantError(f"{name}={value!r} is out of range; {self.accepted()}")
        if self.high is not None:
            too_high = value >= self.high if self.kind is float else value > self.high
            if too_high:
                raise VariantError(f"{name}={value!r} is out of range; {self.accepted()}")
        return value

    def accepted(self) -> str:
        if self.choices is not None:
            return "accepted: " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "accepted: true or false"
        if self.kind is float:
            return f"accepted: {self.low} <= value < {self.high}"
        if self.high is None:
            return f"accepted: an integer >= {self.low}"
        return f"accepted: an integer from {self.low} to {self.high}"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    origin: str
    knobs: Mapping[str, Knob]
    # Fixed keyword arguments of the builder that make this variant what it is.
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Training settings the source used with this variant (lr, l2, weight_decay, ...).
    train_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def resolve_knobs(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with ``overrides``, each checked; unknown knobs raise."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.knobs))
        if unknown:
            accepted = ", ".join(sorted(self.knobs)) or "none"
            raise VariantError(
                f"variant {self.name!r} has no knob {', '.join(map(repr, unknown))}; accepted knobs: {accepted}"
            )
        resolved = {name: knob.default for name, knob in self.knobs.items()}
        for name, value in overrides.items():
            resolved[name] = self.knobs[name].check(name, value)
        return resolved

    def build(self, shape: InputShape, **overrides: Any) -> nn.Module:
        knobs = self.resolve_knobs(overrides)
        return self.builder(shape, **self.fixed, **knobs)


_VARIANTS: dict[str, Variant] = {}


def register(
    name: str,
    *,
    description: str,
    origin: str,
    knobs: Mapping[str, Knob],
    fixed: Mapping[str, Any] | None = None,
    train_defaults: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder`` under ``name``. A name may be taken once."""

    def wrapper(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        add_variant(
            Variant(
                name=name,
                builder=builder,
                description=description,
                origin=origin,
                knobs=dict(knobs),
                fixed=dict(fixed or {}),
                train_defaults=dict(train_defaults or {}),
            )
        )
        return builder

    return wrapper


def add_variant(variant: Variant) -> None:
    if variant.name in _VARIANTS:
        raise ValueError(f"a variant named {variant.name!r} is already registered")
    _VARIANTS[variant.name] = variant


def get_variant(name: str) -> Variant:
    try:
        return _VARIANTS[name]
    except KeyError:
        raise VariantError(f"unknown variant {name!r}; accepted: {', '.join(list_variants())}") from None


def get_model(name: str, shape: InputShape, **knobs: Any) -> nn.Module:
    """Build variant ``name`` for inputs of ``shape`` with knob overrides."""
    return get_variant(name).build(shape, **knobs)


def list_variants() -> list[str]:
    return list(_VARIANTS)


def describe_variant(name: str) -> str:
    """One sentence for a run's description: what the variant is and where it comes from."""
    variant = get_variant(name)
    return f"{name}: {variant.description} (from {variant.origin})."


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
