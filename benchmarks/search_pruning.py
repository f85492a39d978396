"""Does pruning pay? The same study with and without a pruner, on the same sampler seed.

    python -m benchmarks.search_pruning [--study studies/mnist_search.toml] [--n-trials 20]
                                        [--epochs 8] [--pruner hyperband]

Prints trials, total epochs trained and best val_acc of each run. Goal: the pruned study
reaches the unpruned best within 0.5 points using at most half the epochs; exits 1 if not.
Uses throw-away journal and MLflow stores in a temporary folder unless
MLFLOW_TRACKING_URI is set.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

GOAL_POINTS = 0.5  # best val_acc may be this many percentage points below the unpruned best
GOAL_EPOCH_RATIO = 0.5  # ... using at most this share of the unpruned epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="studies/mnist_search.toml")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: the study's)")
    parser.add_argument("--pruner", choices=("median", "hyperband"), help="default: the study's")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        from bench.search import load_study, run_search

        base = load_study(args.study)
        epochs = args.epochs or base.epochs
        rows = []
        for label, pruner in (("no pruning", "none"), ("pruning", args.pruner or base.pruner)):
            spec = dataclasses.replace(base, name=f"{base.name}-bench-{pruner}", pruner=pruner, epochs=epochs)
            start = time.perf_counter()
            outcome = run_search(
                spec, storage=str(Path(tmp) / f"{pruner}.journal"), n_trials=args.n_trials, register_best=False,
                confirm=False, echo=lambda _: None,  # the search alone: what pruning saves
            )
            seconds = time.perf_counter() - start
            rows.append((f"{label} ({pruner})", outcome, seconds))
            print(f"{label}: done in {seconds:.0f} s", file=sys.stderr, flush=True)

    print(f"study {base.name} ({base.variant} on {base.dataset}), {args.n_trials} trials x {epochs} epochs, "
          f"TPE seed {base.sampler_seed}")
    print(f"{'run':<24}{'trials':>8}{'pruned':>8}{'epochs':>8}{'best val_acc':>14}{'seconds':>9}")
    for label, o, seconds in rows:
        print(f"{label:<24}{o.n_trials:>8}{o.states.get('PRUNED', 0):>8}{o.epochs_trained:>8}"
              f"{o.best_value:>14.4f}{seconds:>9.0f}")
    (_, plain, _), (_, pruned, _) = rows
    gap = (plain.best_value - pruned.best_value) * 100
    ratio = pruned.epochs_trained / plain.epochs_trained
    ok = gap <= GOAL_POINTS and ratio <= GOAL_EPOCH_RATIO
    print(f"pruned best is {gap:+.2f} points below the unpruned best (goal <= {GOAL_POINTS}); "
          f"epochs {ratio:.0%} of unpruned (goal <= {GOAL_EPOCH_RATIO:.0%}): {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
