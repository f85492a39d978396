"""What do epoch checkpoints cost? Goal: the default policy (auto) under 2 % of training time.

    BENCH_DATA_DIR=../shared/data python -m benchmarks.checkpoint [--cases net:cifar2,lenet:mnist] [--epochs 6]

Each case trains twice in this process as tracked MLflow runs (a throw-away sqlite store,
so each checkpoint's cost includes logging it as the run's artifact, as in real use):
once checkpointing after every epoch (the worst case) and once with the default ``auto``
policy. A checkpoint's cost is the wall time of writing the file (``torch.save``, fsync,
rename) plus uploading it; overhead is the sum of those costs over the sum of the
training passes' seconds. Exits 1 when auto's overhead is 2 % or more.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

GOAL = 0.02  # auto's checkpoints may cost at most this share of training time


def measure(variant: str, dataset: str, epochs: int, policy, threads: int | None) -> dict:
    from bench import checkpoint as ckpt
    from bench.config import TrainConfig
    from bench.runner import run_tracked
    from bench import tracking

    costs: list[float] = []

    class Timed(ckpt.Checkpointer):  # the trainer reports each save's cost, upload included
        def record_cost(self, seconds: float) -> None:
            costs.append(seconds)
            super().record_cost(seconds)

    original = ckpt.Checkpointer
    ckpt.Checkpointer = Timed  # runner builds its checkpointer from this name
    try:
        config = TrainConfig(variant=variant, dataset=dataset, epochs=epochs, threads=threads).resolve()
        experiment = tracking.experiment_id_for("checkpoint-benchmark", "checkpoint-benchmark")
        _, result = run_tracked(config, experiment_id=experiment, progress=False, log_model=False, checkpoints=policy)
    finally:
        ckpt.Checkpointer = original
    train_s = sum(m.epoch_time_s for m in result.history)
    return {"checkpoints": len(costs), "cost_s": sum(costs), "mean_ms": 1000 * sum(costs) / max(1, len(costs)),
            "train_s": train_s, "overhead": sum(costs) / train_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="net:cifar2,lenet:mnist", help="variant:dataset pairs")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if "BENCH_DATA_DIR" not in os.environ:
        parser.error("set BENCH_DATA_DIR to the data root (e.g. ../shared/data)")
    tmp = tempfile.mkdtemp(prefix="bench-ckpt-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.chdir(tmp)  # MLflow's ./mlruns artifacts land here, not in the repository

    from bench.checkpoint import Policy
    from bench.runtime import cpu_isa, cpu_model

    import torch

    print(f"machine: {cpu_model()} ({cpu_isa()}), {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads; {args.epochs} epochs per run")
    print(f"{'case':<14}{'policy':<8}{'checkpoints':>12}{'ms each':>9}{'train s':>9}{'overhead':>10}")
    misses = []
    for pair in args.cases.split(","):
        variant, dataset = pair.split(":")
        for name, policy in (("every", Policy(1)), ("auto", Policy())):
            r = measure(variant, dataset, args.epochs, policy, args.threads)
            print(f"{pair:<14}{name:<8}{r['checkpoints']:>12}{r['mean_ms']:>9.1f}{r['train_s']:>9.1f}{r['overhead']:>9.2%}")
            if name == "auto" and r["overhead"] >= GOAL:
                misses.append(pair)
    print(f"goal: auto under {GOAL:.0%} of training time -> " + ("MISS: " + ", ".join(misses) if misses else "PASS"))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
