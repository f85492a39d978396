"""A suite judged again from its learning curves alone (``curves.csv``), under any measure and design.

A committed report keeps every epoch of every run, so its verdicts can be checked, and asked other
questions, without the MLflow store that made them: which verdicts would val after the last step
have given? Welch's test instead of pairing? Only the first three seeds? ``rejudge`` answers at one
look with fixed seeds, the whole family corrected together as a suite does (``against_baseline``);
a suite that took several ``--seeds auto`` looks spent its alpha over them, so where the two differ
the suite's own verdicts are the ones its error rate holds for.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Sequence

import pandas as pd

from ..verdicts import ALPHA, against_baseline, method_note
from .spec import DESIGNS, MEASURES
from .summary import FINISHED, correlation

# Per-run columns of a curves table that rejudge needs.
NEEDED = ("row", "seed", "state", "epoch", "val_acc")


class RejudgeError(ValueError):
    """Curves, rows or settings that cannot be judged; the message names what is wrong and what is accepted."""


@dataclasses.dataclass
class Rejudged:
    verdicts: pd.DataFrame  # one row per row: n, mean and sd of the measure, rho, the verdict and its interval
    spreads: pd.DataFrame  # per row and measure: sd over seeds and correlation with the baseline
    method: str  # how the verdicts were reached, in words


def run_measures(curves: pd.DataFrame, last_k: int | None = None) -> pd.DataFrame:
    """One row per (row, seed): each measure at the run's last epoch, NaN for a run that did not finish
    (failed, diverged, or still going: the suite counts none of them as a measurement). ``last_k``: the
    last-k mean over this many epochs, from the per-epoch val accuracy (default: as the runs logged it).
    A study's curves (a ``stage`` column) are judged on their confirmation runs, the suite it ran."""
    missing = [c for c in NEEDED if c not in curves]
    if missing:
        raise RejudgeError(f"not a curves table: columns {missing} missing (a suite's curves.csv has "
                           f"{', '.join(NEEDED)}, ...)")
    if "stage" in curves:
        curves = curves[curves["stage"] == "confirmation"]
        if curves.empty:
            raise RejudgeError("a study's curves with no confirmation runs: only a confirmation has verdicts")
    twice = curves.groupby(["row", "seed"])["run_id" if "run_id" in curves else "epoch"].nunique()
    twice = twice[twice > 1] if "run_id" in curves else twice[[]]
    if len(twice):
        raise RejudgeError("one run per row and seed expected; more than one for "
                           + ", ".join(f"{row} seed {seed}" for row, seed in twice.index[:5]))
    curves = curves.sort_values(["row", "seed", "epoch"], kind="stable")
    if last_k is not None:
        curves = curves.assign(val_acc_last_k=curves.groupby(["row", "seed"])["val_acc"]
                               .transform(lambda s: s.rolling(last_k, min_periods=1).mean()))
    last = curves.groupby(["row", "seed"], sort=False).tail(1).set_index(["row", "seed"])
    out = pd.DataFrame(index=last.index)
    out["state"], out["epochs"] = last["state"], last["epoch"]
    finished = last["state"] == FINISHED
    for measure in MEASURES:
        values = last[measure] if measure in last else pd.Series(math.nan, index=last.index)
        out[measure] = values.where(finished).astype(float)
    return out.reset_index()


def rejudge(curves: pd.DataFrame, baseline: str, *, measure: str = "val_acc_last_k", design: str = "paired",
            margin: float = 0.01, alpha: float = ALPHA, last_k: int | None = None,
            rows: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> Rejudged:
    """Every row (or ``rows``) against ``baseline`` on ``measure``, over ``seeds`` (default: all the
    curves hold), ``design`` paired or unpaired, one family at ``alpha``; checked before anything is judged."""
    if measure not in MEASURES:
        raise RejudgeError(f"unknown measure {measure!r}; accepted: {', '.join(MEASURES)}")
    if design not in DESIGNS:
        raise RejudgeError(f"unknown design {design!r}; accepted: {', '.join(DESIGNS)}")
    if not 0 < margin < 1:
        raise RejudgeError(f"margin {margin!r} must be a fraction of accuracy between 0 and 1 (0.01 is 1 point)")
    if last_k is not None and last_k < 1:
        raise RejudgeError(f"last_k {last_k!r} must be a number of epochs, 1 or more")
    if measure not in curves:
        raise RejudgeError(f"the curves have no {measure} column; columns there: {', '.join(curves.columns)}")
    runs = run_measures(curves, last_k)
    known = list(dict.fromkeys(runs["row"]))
    for label in [baseline, *(rows or [])]:
        if label not in known:
            raise RejudgeError(f"row {label!r} is not in the curves; rows there: {', '.join(known)}")
    if seeds is not None:
        absent = sorted(set(seeds) - set(runs["seed"]))
        if absent:
            raise RejudgeError(f"seed(s) {absent} are not in the curves; seeds there: {sorted(set(runs['seed']))}")
        runs = runs[runs["seed"].isin(seeds)]
    labels = [baseline, *[r for r in (rows or known) if r != baseline]]
    chosen = runs[runs["row"].isin(labels)]
    # A finished run without the measure is a table the suite could not have judged (no moving average, say).
    blank = chosen[(chosen["state"] == FINISHED) & chosen[measure].isna()]
    if len(blank):
        raise RejudgeError(f"finished runs without a value of {measure}: "
                           + ", ".join(f"{r} seed {s}" for r, s in zip(blank["row"][:5], blank["seed"][:5]))
                           + " (val_acc_ema needs runs trained with a moving average)")
    if not (chosen["row"] == baseline).any() or chosen.loc[chosen["row"] == baseline, measure].isna().all():
        raise RejudgeError(f"the baseline {baseline!r} has no finished run in the curves (at these seeds)")
    per_seed = {label: chosen[chosen["row"] == label].set_index("seed")[measure] for label in labels}
    verdicts = against_baseline(per_seed, baseline, margin=margin, alpha=alpha, pair=design == "paired")
    verdicts = verdicts.set_index("label")
    table = pd.DataFrame({
        "row": labels,
        "n": [int(per_seed[label].notna().sum()) for label in labels],
        "runs": [len(per_seed[label]) for label in labels],
        "mean": [per_seed[label].mean() for label in labels],
        "sd": [per_seed[label].std(ddof=1) for label in labels],
        "rho": [math.nan if label == baseline else correlation(per_seed[label], per_seed[baseline]) for label in labels],
    })
    for column in ("diff", "ci_low", "ci_high", "ci_level", "kind", "verdict", "seeds_needed"):
        table[column] = [verdicts.loc[label, column] for label in labels]
    spreads = []
    for label in labels:
        for name in MEASURES:
            values = chosen[chosen["row"] == label].set_index("seed")[name]
            base = chosen[chosen["row"] == baseline].set_index("seed")[name]
            spreads.append({"row": label, "measure": name, "n": int(values.notna().sum()), "sd": values.std(ddof=1),
                            "rho": math.nan if label == baseline else correlation(values, base)})
    n_compared = int(verdicts["family"].max()) if len(verdicts) else 0
    logged_k = sorted(set(curves["last_k"].dropna().astype(int))) if "last_k" in curves else []
    k = last_k if last_k is not None else (logged_k[0] if len(logged_k) == 1 else None)
    method = (method_note(n_compared, margin, alpha=alpha, test="paired" if design == "paired" else "Welch",
                          measure=MEASURES[measure] if k is None else MEASURES[measure].replace("last k", f"last {k}"))
              + " Judged once, from the learning curves, at the seeds they hold: a suite that took several "
                "looks spent its alpha over them, and its own verdicts are the ones its error rate holds for.")
    return Rejudged(table, pd.DataFrame(spreads), method)


def format_rejudged(result: Rejudged, measure: str, width: int = 100) -> str:
    """The verdicts and the spreads as text no wider than ``width`` (a long verdict goes on under itself)."""
    table = result.verdicts
    head = f"{'row':<18} {'n':>3} {measure[:14] + ' %':>16} {'rho':>5}  {'diff, pt [interval] level':<29} "
    lines = [head + "verdict"]
    for _, r in table.iterrows():
        mean = f"{r['mean'] * 100:.2f} ± {r['sd'] * 100:.2f}" if r["n"] > 1 else \
            (f"{r['mean'] * 100:.2f}" if r["n"] else "-")
        rho = f"{r['rho']:+.2f}" if pd.notna(r["rho"]) else ""
        interval = "" if pd.isna(r["diff"]) or r["kind"] == "baseline" else \
            f"{r['diff'] * 100:+.2f}" + (f" [{r['ci_low'] * 100:+.2f}, {r['ci_high'] * 100:+.2f}] {r['ci_level']:.1%}"
                                          if pd.notna(r["ci_low"]) else "")
        start = f"{r['row'][:18]:<18} {r['n']:>3} {mean:>16} {rho:>5}  {interval:<29} "
        wrapped = textwrap.wrap(str(r["verdict"]), max(20, width - len(head))) or [""]
        lines += [start + wrapped[0], *(" " * len(head) + rest for rest in wrapped[1:])]
    lines.append("")
    lines.append("spread of each measure over seeds, sd in pt (rho: correlation with the baseline, same seeds)")
    spreads = result.spreads.pivot(index="row", columns="measure")
    header = f"{'row':<22}" + "".join(f" {name[:18]:>18}" for name in MEASURES)
    lines.append(header)
    for label in table["row"]:
        cells = []
        for name in MEASURES:
            sd, rho = spreads.loc[label, ("sd", name)], spreads.loc[label, ("rho", name)]
            cell = "-" if pd.isna(sd) else f"{sd * 100:.2f}" + (f" ({rho:+.2f})" if pd.notna(rho) else "")
            cells.append(f" {cell:>18}")
        lines.append(f"{label[:22]:<22}" + "".join(cells))
    return "\n".join(lines)
