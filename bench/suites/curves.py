"""Learning curves kept: every epoch of every run of a suite, as one tidy table.

``learning_curves`` reads each run's per-epoch metrics from the tracking store and returns one row
per (row, seed, epoch), with the k of its last-k mean: enough to re-judge a suite with any measure, or to ask how soon a row reached
an accuracy, without its MLflow store. The runner logs it on the parent (``curves.csv``) and every
report writes it beside its pages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .. import tracking

# Per-epoch metrics the trainer logs, in the table's column order. val_acc_ema's last epoch is the value measured
# after training, batch-norm statistics recomputed; the epochs before it use the average's own buffers.
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_ema", "epoch_time_s")
COLUMNS = ["row", "seed", "run_id", "state", "epoch", *EPOCH_METRICS, "val_acc_last_k", "last_k", "seconds"]
DEFAULT_LAST_K = 5


def learning_curves(outcomes: pd.DataFrame, metrics: Sequence[str] = EPOCH_METRICS) -> pd.DataFrame:
    """One row per epoch of each pair's run (``summary.pair_outcomes``): its metrics, the mean val
    accuracy over the last k epochs so far (k: the run's ``last_k``), and the seconds of training so far.
    Runs that failed keep the epochs they logged; ``state`` says what became of each."""
    frames = []
    label_tag = f"tags.{tracking.TAG_LABEL}"
    for _, run in outcomes.iterrows():
        history: dict[int, dict[str, float]] = {}
        for metric in metrics:
            for step, value in tracking.metric_history(run["run_id"], metric):
                history.setdefault(int(step), {})[metric] = value
        if not history:
            continue
        frame = pd.DataFrame.from_dict(history, orient="index").sort_index()
        frame = frame.reindex(columns=list(metrics))
        k = _last_k(run)
        frame["val_acc_last_k"] = frame["val_acc"].rolling(k, min_periods=1).mean()
        frame["last_k"] = k
        frame["seconds"] = frame["epoch_time_s"].cumsum()
        frame.insert(0, "epoch", frame.index.astype(int))
        frame.insert(0, "state", run.get("pair_state", run.get("status")))
        frame.insert(0, "run_id", run["run_id"])
        frame.insert(0, "seed", int(run["seed"]) if "seed" in run else int(run[f"tags.{tracking.TAG_SEED}"]))
        frame.insert(0, "row", run[label_tag])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS].sort_values(["row", "seed", "epoch"], kind="stable",
                                                                       ignore_index=True)


def _last_k(run: pd.Series) -> int:
    try:
        return int(run.get("params.last_k"))
    except (TypeError, ValueError):  # runs from before bench logged it
        return DEFAULT_LAST_K


def time_to_target(curves: pd.DataFrame, target: float, measure: str) -> pd.DataFrame:
    """Per run of the curves: the first epoch at which ``measure`` (its per-epoch form) reached
    ``target``, and the seconds of training by then; NaN for a run that never did."""
    column = measure if measure in curves else "val_acc"
    out = []
    for (row, seed), run in curves.groupby(["row", "seed"], sort=False):
        hit = run[run[column] >= target]
        first = hit.iloc[0] if len(hit) else None
        out.append({"row": row, "seed": int(seed), "epochs": float(first["epoch"]) if first is not None else math.nan,
                    "seconds": float(first["seconds"]) if first is not None else math.nan,
                    "epochs_run": int(run["epoch"].max())})
    return pd.DataFrame(out, columns=["row", "seed", "epochs", "seconds", "epochs_run"])
