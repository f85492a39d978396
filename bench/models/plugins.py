"""Variants from outside bench: installed packages (entry points) and files or modules named by path.

- An installed package that declares ``[project.entry-points."bench.variants"]`` (``name =
  "pkg.module:builder"``) offers ``name``; it is imported only when the variant is asked for (or
  listed), so one broken plugin breaks nothing else, and its error is shown when it is asked for.
- ``path/to/file.py:attr`` or ``package.module:attr``, wherever a variant name is accepted. The
  attribute is a builder decorated with ``bench.register_variant``, or any callable
  ``(shape, **knobs) -> nn.Module`` (an ``nn.Module`` class, say), whose keyword defaults become its
  knobs.

Each such variant records where it came from (``Variant.source``): the file and a digest of its
content, or the package and its version. A file that changes is loaded again (and a run resumed
across the change is refused: the source is part of a checkpoint's identity).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._registry import (
    BUILT_IN, InputShape, Knob, Variant, VariantError, _collecting, add_variant, declaration, describe_exception,
    registered,
)

GROUP = "bench.variants"
_lock = threading.Lock()
_entry_points: dict[str, importlib.metadata.EntryPoint] | None = None
_errors: dict[str, str] = {}  # entry point name -> why it could not be loaded
_files: dict[str, tuple[tuple[int, int], Variant]] = {}  # spec -> ((mtime_ns, size), variant)


def is_spec(name: str) -> bool:
    """Whether a variant name points at code: ``file.py:attr`` or ``module:attr``."""
    return ":" in name


def entry_point_names() -> list[str]:
    return sorted(_entry_point_map())


def reload_entry_points() -> None:
    """Look at the installed packages again (a test that installs one mid-session)."""
    global _entry_points
    with _lock:
        _entry_points = None
        _errors.clear()


def _entry_point_map() -> dict[str, importlib.metadata.EntryPoint]:
    global _entry_points
    with _lock:
        if _entry_points is None:
            _entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}
        return _entry_points


def find(name: str) -> Variant | None:
    """The variant ``name`` names outside bench's own (a spec or an entry point), loaded now; None if
    neither. Raises ``VariantError`` naming the file or package when it cannot be loaded."""
    if is_spec(name):
        return _from_spec(name)
    ep = _entry_point_map().get(name)
    if ep is None:
        return None
    if name in _errors:
        raise VariantError(_errors[name])
    try:
        return _from_entry_point(ep)
    except VariantError as exc:
        _errors[name] = str(exc)
        raise


def canonical(name: str, relative_to: Path | None = None) -> str:
    """A spec with its file made absolute (relative to ``relative_to``, e.g. the suite file's folder),
    so worker processes and resumed runs find the same file; other names as they are."""
    if not is_spec(name):
        return name
    target, _, attr = name.rpartition(":")
    if not _is_path(target):
        return name
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = (relative_to or Path.cwd()) / path
    return f"{path.resolve()}:{attr}"


def short_name(name: str) -> str:
    """What a row shows for a spec: its attribute (``my_nets.py:TinyNet`` -> ``TinyNet``)."""
    return name.rpartition(":")[2] if is_spec(name) else name


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or target.startswith(".")


def _from_spec(spec: str) -> Variant:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise VariantError(f"variant {spec!r}: expected FILE.py:NAME or package.module:NAME")
    if _is_path(target):
        return _from_file(spec, Path(target).expanduser().resolve(), attr)
    found = registered(spec)
    if found is not None:
        return found
    with _collect(spec):
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise VariantError(f"variant {spec!r}: importing module {target!r} failed: {describe_exception(exc)}") from None
    variant = _variant(spec, module, attr, f"module {target}{_distribution_of(target)}", origin=spec)
    add_variant(variant)
    return variant


def _from_file(spec: str, path: Path, attr: str) -> Variant:
    if not path.is_file():
        raise VariantError(f"variant {spec!r}: no such file {path}")
    stamp = (path.stat().st_mtime_ns, path.stat().st_size)
    key = f"{path}:{attr}"
    cached = _files.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()[:16]
    name = f"bench_plugin_{path.stem}_{digest}"
    with _collect(spec):
        try:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses and pickling look their module up by name
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise VariantError(f"variant {spec!r}: importing {path} failed: {describe_exception(exc, path)}") from None
    variant = _variant(key, module, attr, f"file {path} sha256:{digest}", origin=str(path))
    _files[key] = (stamp, variant)
    return variant


def _from_entry_point(ep: importlib.metadata.EntryPoint) -> Variant:
    found = registered(ep.name)
    if found is not None and found.source != BUILT_IN:
        return found
    dist = f"package {ep.dist.name} {ep.dist.version}" if ep.dist else "an installed package"
    if found is not None:  # a plugin may never take a built-in's name
        raise VariantError(f"variant {ep.name!r} of {dist} (entry point {ep.value}) clashes with the built-in "
                           f"{ep.name!r} ({found.description}; {found.origin}); the built-in is used")
    module_name, _, attr = ep.value.partition(":")
    with _collect(ep.name):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise VariantError(f"variant {ep.name!r} of {dist}: importing {module_name!r} failed: "
                               f"{describe_exception(exc)}") from None
    variant = _variant(ep.name, module, attr, f"{dist} (entry point {ep.value})", origin=dist)
    add_variant(variant)
    return variant


@contextlib.contextmanager
def _collect(what: str) -> Iterator[None]:
    _collecting.append(what)
    try:
        yield
    finally:
        _collecting.pop()


def _variant(name: str, module: Any, attr: str, source: str, origin: str) -> Variant:
    """The variant ``module.attr`` defines, under ``name``: a registered builder's declaration, or one
    inferred from a plain callable's signature."""
    try:
        obj = getattr(module, attr)
    except AttributeError:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise VariantError(f"variant {name!r} ({source}): it has no {attr!r}; it defines {', '.join(names) or 'nothing callable'}") from None
    declared = declaration(obj)
    if isinstance(obj, Variant):
        declared = obj
    if declared is not None:
        return Variant(name, declared.builder, declared.description, declared.origin, declared.knobs, declared.fixed,
                       declared.train_defaults, source)
    if not callable(obj):
        raise VariantError(f"variant {name!r} ({source}): {attr} is a {type(obj).__name__}, not a model builder")
    doc = (inspect.getdoc(obj) or "").strip().splitlines()
    return Variant(name, obj, doc[0] if doc else f"{attr} from {origin}", origin, _knobs_of(obj), {}, {}, source)


def _knobs_of(builder: Callable[..., Any]) -> dict[str, Knob]:
    """A plain builder's knobs: its keyword parameters with defaults of a simple type."""
    try:
        parameters = list(inspect.signature(builder).parameters.values())[1:]  # the first takes the input shape
    except (TypeError, ValueError):
        return {}
    return {p.name: Knob(p.default, f"{p.name} (keyword argument of the builder)", kind=type(p.default))
            for p in parameters if type(p.default) in (int, float, bool, str)}


def _distribution_of(module: str) -> str:
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    if not names:
        return ""
    try:
        return f" (package {names[0]} {importlib.metadata.version(names[0])})"
    except importlib.metadata.PackageNotFoundError:
        return ""


_checked: dict[tuple, None] = {}


def check_builds(variant: Variant, shape: InputShape, knobs: dict[str, Any]) -> None:
    """Build ``variant`` once for ``shape`` and run one dummy batch: a builder or forward that raises,
    a model that is not an ``nn.Module`` or whose output is not (batch, classes) is refused, as a
    ``VariantError`` naming the variant's source, before any data is loaded or any run created."""
    key = (variant.name, variant.source, shape, tuple(sorted((k, repr(v)) for k, v in knobs.items())))
    if key in _checked:
        return
    import torch

    model = variant.build(shape, **knobs)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, shape.channels, shape.size, shape.size))
    except Exception as exc:
        raise VariantError(f"variant {variant.name!r} ({variant.source}) fails on a batch of 2 images of shape "
                           f"{shape.channels}x{shape.size}x{shape.size}: "
                           f"{describe_exception(exc, variant.builder)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, shape.num_classes):
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise VariantError(f"variant {variant.name!r} ({variant.source}) returns {found} for a batch of 2 images; "
                           f"the data set has {shape.num_classes} classes, so (2, {shape.num_classes}) is expected")
    _checked[key] = None


__all__ = ["GROUP", "canonical", "check_builds", "entry_point_names", "find", "is_spec", "reload_entry_points",
           "short_name"]
