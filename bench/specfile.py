"""What suite files and study files share: reading TOML, one schema checker, file:line locations.

Each table of a spec file is declared once, as a frozen dataclass whose fields are the
accepted keys and whose annotations are their types (``schema``). ``check_table`` refuses
any other key and any value of another type, naming the file, the line and what is
accepted, before anything runs. Both parsers (``bench.suites.spec`` and
``bench.search.spec``) build on this module; it imports neither.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class SpecError(ValueError):
    """A spec file (suite or study) that cannot run; the message starts with ``file:line:``."""


# ---------------------------------------------------------------------------- schemas


@dataclasses.dataclass(frozen=True)
class Training:
    """Training settings a spec may set at any layer (suite defaults, profiles, rows, a study)."""

    epochs: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    l2: float | None = None
    val_fraction: float | None = None
    val_from_test: bool | None = None
    max_train_samples: int | None = None
    split_seed: int | None = None
    val_fold: int | None = None
    amp: str | None = None
    evaluate_test: bool | None = None  # false: never touch the test split (a search's confirmation does it after selection)
    last_k: int | None = None  # val_acc_last_k: the mean val accuracy over the last k epochs
    ema_decay: float | None = None  # val_acc_ema: the moving average's decay per step (0: none)
    knobs: dict | None = None


@functools.cache
def fields_of(schema: type) -> dict[str, type]:
    """``{key: accepted type}`` of a schema dataclass (``X | None`` accepts X)."""
    hints = typing.get_type_hints(schema)
    out = {}
    for field in dataclasses.fields(schema):
        kind = hints[field.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        out[field.name] = typing.get_origin(kind) or kind
    return out


TRAINING_KEYS = fields_of(Training)


def _is(value: Any, kind: type) -> bool:
    if kind is float:  # TOML writes 1 for 1.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_table(table: Any, accepted: type | Mapping[str, type], where: Locator, key_path: list, what: str) -> dict:
    """``table`` as a dict, checked against a schema dataclass (or a ``{key: type}`` map):
    no unknown key, every value of its declared type."""
    fields = fields_of(accepted) if isinstance(accepted, type) else accepted
    if not isinstance(table, dict):
        raise SpecError(f"{where.line(key_path)}: {what} must be a table")
    for key, value in table.items():
        if key not in fields:
            raise SpecError(
                f"{where.line([*key_path, key])}: unknown key {key!r} in {what}; accepted: {', '.join(sorted(fields))}"
            )
        if not _is(value, fields[key]):
            raise SpecError(f"{where.line([*key_path, key])}: {key} must be a {fields[key].__name__}, got {value!r}")
    return dict(table)


def build(schema: type, table: Any, where: Locator, key_path: list, what: str) -> Any:
    """A schema instance from a checked table."""
    return schema(**check_table(table, schema, where, key_path, what))


def require(table: Mapping[str, Any], keys: Sequence[str], where: Locator, key_path: list, what: str) -> None:
    for key in keys:
        if key not in table:
            raise SpecError(f"{where.line(key_path)}: {what} needs {key!r}")


def seeds(value: Any, where: Locator, key_path: list) -> tuple[int, ...]:
    if not (isinstance(value, list) and value and all(_is(s, int) and s >= 0 for s in value)):
        raise SpecError(f"{where.line(key_path)}: seeds must be a non-empty list of integers >= 0, got {value!r}")
    return tuple(value)


# ---------------------------------------------------------------------------- reading


def read(path: str | Path, kind: str) -> tuple[Path, str]:
    path = Path(path)
    try:
        return path, path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read {kind} file: {exc.strerror}") from None


def parse_toml(text: str, path: Path) -> tuple[dict, Locator]:
    try:
        return tomllib.loads(text), Locator(path, text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None


class Locator:
    """Finds the line of a key path in the TOML text (tomllib keeps no positions)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, key_path: Sequence[Any]) -> str:
        start = 0
        table = []
        for part in key_path:
            if isinstance(part, int):  # the n-th [[table]] of the path so far
                header = re.compile(r"^\s*\[\[\s*" + re.escape(".".join(table)) + r"\s*\]\]")
                hits = [i for i, line in enumerate(self.lines) if header.match(line)]
                if part < len(hits):
                    start = hits[part]
                continue
            table.append(str(part))
            found = self._find(str(part), start)
            if found is not None:
                start = found
        return f"{self.path}:{start + 1}"

    def _find(self, key: str, start: int) -> int | None:
        key_pattern = re.compile(r"(^|[\s{,.\[])" + re.escape(key) + r"\s*(=|\]|\.)|(^|[\s{,.\[])\"" + re.escape(key) + r"\"")
        for i in range(start, len(self.lines)):
            code = self.lines[i].split("#", 1)[0]
            if key_pattern.search(code):
                return i
        return None
