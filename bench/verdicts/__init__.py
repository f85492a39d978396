"""Which differences are real: rows against the suite's baseline, ours against published numbers,
and the rounds of ``--seeds auto``. Numbers in, verdicts out: no tracking, no training.

- ``baseline``: better / worse / equivalent within a margin / undecided (Welch or paired t-tests,
  TOST, one Holm-Shaffer family per suite, power);
- ``sequential``: seeds where they matter, with alpha split over a fixed maximum of looks;
- ``sources``: published figures, judged only like for like;
- ``kinds``: the kinds of verdict.

Names are loaded on first use (PEP 562), so the command line starts without scipy and statsmodels.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "baseline": ("ALPHA", "DEFAULT_MARGIN", "against_baseline", "compare", "decide", "holm", "holm_shaffer",
                 "mean_interval", "method_note", "paired", "seeds_needed", "welch"),
    "kinds": ("BASELINE", "BETTER", "EQUIVALENT", "IDENTICAL", "UNDECIDED", "UNJUDGED", "WORSE"),
    "sequential": ("AutoSeeds", "next_round"),
    "sources": ("PROTOCOLS", "WITHIN", "against_source", "curve_metric"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
