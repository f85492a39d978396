"""Ours against a published number, judged only like for like.

A source declares what its figures were measured under: epochs, training images, optimizer,
lr, batch size and its evaluation protocol (``eval``: the model in eval mode; ``train-mode``:
code that never called ``model.eval()``, so dropout was active and batch norm used each batch's
statistics). A row's reference may override any of them. A figure is judged (within 2 points
or not) only when our runs match every setting the source declares; otherwise the difference
is shown with what differs named, and not judged. Our number is measured the source's way: the
train split after training (eval mode) for a train figure, and the model in train mode for a
``train-mode`` source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

WITHIN = 0.02  # "within 2 points" of a published accuracy
PROTOCOLS = ("eval", "train-mode")
METRICS = ("train_acc", "val_acc", "test_acc")
# Which of our measurements answers a source's figure, by its protocol.
OURS = {
    "eval": {"train_acc": "train_acc_eval", "val_acc": "val_acc", "test_acc": "test_acc"},
    "train-mode": {"train_acc": "train_acc_train_mode", "val_acc": "val_acc_train_mode"},
}
# Settings a source may declare, how a run's own value is named, and how to show one.
SETTINGS = {
    "train_images": ("train images", lambda v: f"{int(v):,}"),
    "optimizer": ("optimizer", str),
    "lr": ("lr", lambda v: f"{float(v):g}"),
    "batch_size": ("batch size", lambda v: f"{int(v)}"),
}


def curve_metric(published: Mapping[str, Any]) -> str | None:
    """Which accuracy a reference's per-epoch ``curve`` is of: its test, else val, else train figure."""
    return next((m for m in ("test_acc", "val_acc", "train_acc") if m in published), None)


def declared(published: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a figure was measured under: the row's reference over its source's table."""
    keys = ("epochs", "protocol", *SETTINGS)
    return {k: published.get(k, source.get(k)) for k in keys if published.get(k, source.get(k)) is not None}


def against_source(ours: Mapping[str, float], our_settings: Mapping[str, Any], published: Mapping[str, Any],
                   source: Mapping[str, Any]) -> dict[str, Any]:
    """Per metric the source gives: the published value used, the epochs it was taken at, ours minus
    it, whether that is within 2 points (None: not judged), what differs (empty when like for like),
    and which of our measurements answered it.

    The value is the figure when taken at our epochs (or with no epochs given), else its ``curve``
    point at our epochs (a curve is of ``curve_metric``), else the figure itself, not judged.
    """
    theirs = declared(published, source)
    protocol = theirs.get("protocol", "eval")
    our_epochs = int(our_settings["epochs"])
    curve, curve_of = published.get("curve") or {}, curve_metric(published)
    setting_differs = _settings_differ(theirs, our_settings)
    out: dict[str, Any] = {}
    for metric in METRICS:
        if metric not in published:
            continue
        value, at = float(published[metric]), theirs.get("epochs")
        if at is not None and int(at) != our_epochs and metric == curve_of and str(our_epochs) in curve:
            value, at = float(curve[str(our_epochs)]), our_epochs
        differs = list(setting_differs)
        if at is not None and int(at) != our_epochs:
            differs.insert(0, f"theirs after {int(at)} epochs, ours {our_epochs}")
        ours_key = OURS[protocol].get(metric)
        mine = ours.get(ours_key, math.nan) if ours_key else math.nan
        if ours_key is None:
            differs.append(f"{protocol} {metric.removesuffix('_acc')} accuracy is not measured here")
        elif _missing(mine):
            differs.append(f"our runs did not measure {ours_key}")
        diff = mine - value
        out[metric] = value
        out[f"{metric}_epochs"] = at
        out[f"{metric}_diff"] = diff
        out[f"{metric}_within_2pt"] = (abs(diff) <= WITHIN + 1e-12) if not differs and not _missing(diff) else None
        out[f"{metric}_differs"] = "; ".join(differs)
        out[f"{metric}_ours"] = ours_key or ""
    return out


def _settings_differ(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    differs = []
    for key, (name, show) in SETTINGS.items():
        if key not in theirs:
            continue
        mine = ours.get(key)
        if mine is None or _missing(mine):
            differs.append(f"{name} theirs {show(theirs[key])}, ours not recorded")
        elif not _same(theirs[key], mine):
            differs.append(f"{name} theirs {show(theirs[key])}, ours {show(mine)}")
    return differs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and not isinstance(a, bool):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
