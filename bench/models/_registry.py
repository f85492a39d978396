"""A tiny variant registry in the style of torchvision's ``models/_api.py``.

A *variant* is a named model builder plus the knobs it accepts and the training
defaults the literature used with it. Regularizers that live in the optimizer or
the loss (``l2``, ``weight_decay``) are training defaults, not new classes, so
``net-l2`` and ``net`` share one builder.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["BUILT_IN", "InputShape", "Knob", "Variant", "VariantError", "count_parameters", "register_variant"]


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
            low = "-inf" if self.low is None else self.low
            return f"accepted: {low} <= value < {'inf' if self.high is None else self.high}"
        if self.kind is not int:
            return f"accepted: a {self.kind.__name__}"
        if self.low is not None and self.high is not None:
            return f"accepted: an integer from {self.low} to {self.high}"
        if self.low is not None:
            return f"accepted: an integer >= {self.low}"
        return "accepted: any integer" if self.high is None else f"accepted: an integer <= {self.high}"


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
    # Which code builds it: "built-in", "file <path> sha256:<digest>", "package <name> <version> ...".
    source: str = "built-in"

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
        if self.source == BUILT_IN:  # a bench bug: its traceback is what its fixer needs
            model = self.builder(shape, **self.fixed, **knobs)
        else:
            try:
                model = self.builder(shape, **self.fixed, **knobs)
            except Exception as exc:
                # Your code, refused like an import error: one line naming the file and what it raised,
                # so `bench list` still lists the rest and a suite or search stops before its first run.
                raise VariantError(f"variant {self.name!r} ({self.source}): its builder raised "
                                   f"{describe_exception(exc, self.builder)}") from None
        if not isinstance(model, nn.Module):
            raise VariantError(f"variant {self.name!r} ({self.source}): its builder returned a "
                               f"{type(model).__name__}, not a torch.nn.Module")
        return model


BUILT_IN = "built-in"  # the source of bench's own variants


def describe_exception(exc: BaseException, code: Any = None) -> str:
    """``Type: message`` on one line (a message over several lines joined), and, when ``code`` (a
    function, class or file path) was in the traceback, the line of it that raised: an error torch
    raises inside the user's ``nn.Linear(...)`` points at that call, not into torch."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    path = code if isinstance(code, (str, Path)) else _source_file(code)
    if path is not None:
        own = [f for f in traceback.extract_tb(exc.__traceback__) if _same_file(f.filename, path)]
        if own:
            text += f" (at {Path(own[-1].filename).name}:{own[-1].lineno})"
    return text


def _source_file(code: Any) -> str | None:
    if code is None:
        return None
    try:
        return inspect.getsourcefile(code) or inspect.getfile(code)
    except (TypeError, OSError):  # a builtin, or a class whose module is gone
        return None


def _same_file(a: str | Path, b: str | Path) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


_VARIANTS: dict[str, Variant] = {}
# Non-empty while a plugin module is being imported: its registrations are then only declared, and the
# loader decides under which name they count (a file loaded twice, or by path and by entry point, is no clash).
_collecting: list[str] = []
# Every decorated builder's declaration, by the builder's identity: a module is imported once, so the
# second entry point (or FILE.py:NAME) that names a builder in it finds its knobs here, not by re-import.
# Each Variant holds its builder, so an id here is never reused by another object.
_declared: dict[int, Variant] = {}


def register_variant(
    name: str,
    *,
    description: str,
    origin: str,
    knobs: Mapping[str, Knob] | None = None,
    fixed: Mapping[str, Any] | None = None,
    train_defaults: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model builder as a variant, for every command of bench.

    ``builder(shape: InputShape, **knobs) -> nn.Module`` builds the model for a data set's input
    shape; ``knobs`` are its settings (``Knob(default, help, kind, low, high, choices)``), set with
    ``--knob NAME=VALUE`` (``--width``/``--depth``/``--dropout`` for those names) and searchable in a
    study's ``[space]``; ``train_defaults`` are the settings its source trained it with (optimizer,
    lr, l2, ...); ``origin`` says where it comes from. A name may be taken once, and never a built-in's.
    """

    def wrapper(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        variant = Variant(
            name=name, builder=builder, description=description, origin=origin, knobs=dict(knobs or {}),
            fixed=dict(fixed or {}), train_defaults=dict(train_defaults or {}),
            source=BUILT_IN if builder.__module__.startswith("bench.") else f"module {builder.__module__}",
        )
        _declared[id(builder)] = variant
        if not _collecting:
            add_variant(variant)
        return builder

    return wrapper


register = register_variant  # the name bench's own families use


def add_variant(variant: Variant) -> None:
    existing = _VARIANTS.get(variant.name)
    if existing is not None and existing.source == BUILT_IN and variant.source != BUILT_IN:
        raise VariantError(
            f"variant {variant.name!r} ({variant.source}) clashes with the built-in {variant.name!r} "
            f"({existing.description}; {existing.origin}); give yours another name"
        )
    if existing is not None:
        raise ValueError(f"a variant named {variant.name!r} is already registered")
    _VARIANTS[variant.name] = variant


def declaration(builder: Any) -> Variant | None:
    """What ``register_variant`` declared for ``builder``, wherever and whenever it was imported."""
    found = _declared.get(id(builder))
    return found if found is not None and found.builder is builder else None


def registered(name: str) -> Variant | None:
    return _VARIANTS.get(name)


def registered_names() -> list[str]:
    return list(_VARIANTS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
