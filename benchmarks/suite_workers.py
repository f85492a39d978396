"""Does a suite finish sooner on K worker processes than in one? Same suite, same seeds, same machine.

    python -m benchmarks.suite_workers [--suite studies/cifar2_chapter8.toml] [--profile quick]
                                       [--workers 2] [--seeds 1] [--rows a,b] [--max-train-samples N]

Runs ``bench suite`` twice in fresh processes, one after the other, each into its own new
sqlite tracking store: ``--workers 1`` (one process, torch's default threads: all cores) and
``--workers K`` (K processes, cores/K threads each). Reports the wall time of each (process
start to exit, data decoding cached beforehand), the ratio, and how far the two summaries
are apart. Each run is seeded the same way wherever it trains, but the two sides train with
different torch thread counts, and CPU reductions (batch norm, conv weight gradients) round
differently with another count, so means may differ in the last digits and drift over
epochs; tests/test_suite.py checks exact equality at equal threads. Goal: K workers at
least 1.3x faster. Exits 1 when the goal is missed. Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SPEEDUP = 1.3
COMPARED = ["label", "n_seeds", "train_acc_mean", "train_acc_std", "val_acc_mean", "val_acc_std", "test_acc_mean",
            "test_acc_std"]


def run_suite(args: argparse.Namespace, workers: int, root: Path) -> tuple[float, object, dict[str, float]]:
    """Wall seconds of one ``bench suite`` process (and its workers), its summary table, and each child
    run's own seconds (start to end) by name."""
    import mlflow
    import pandas as pd

    home = root / f"workers-{workers}"
    home.mkdir()
    store = f"sqlite:///{home / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store,
           "BENCH_DATA_DIR": str(Path(os.environ["BENCH_DATA_DIR"]).resolve())}  # it runs in another directory
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "bench", "suite", str(Path(args.suite).resolve()), "--profile", args.profile,
           "--seeds", args.seeds, "--workers", str(workers), "--quiet", "--no-log-model"]
    if args.max_train_samples:
        cmd += ["--max-train-samples", str(args.max_train_samples)]
    if args.rows:
        cmd += ["--rows", args.rows]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"--workers {workers} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    client = mlflow.MlflowClient(store)
    parent = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`bench.kind` = 'suite'"
    )[0]
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="summary.csv", dst_path=str(home / "summary"), tracking_uri=store))
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    per_run = {r.info.run_name: (r.info.end_time - r.info.start_time) / 1000 for r in children}  # ms -> s
    return seconds, summary, per_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="studies/cifar2_chapter8.toml", help="suite file (default: the chapter suite)")
    parser.add_argument("--profile", default="quick", help="profile (default quick)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to compare with one (default 2)")
    parser.add_argument("--seeds", default="1", help="seeds as bench suite takes them: 1 = seed 0 (default), 0,5,7 = those")
    parser.add_argument("--rows", help="only these row labels, comma-separated (as bench suite --rows)")
    parser.add_argument("--max-train-samples", type=int, help="train every row on this many images (a smoke test)")
    args = parser.parse_args(argv)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if "BENCH_DATA_DIR" not in os.environ:
        parser.error("set BENCH_DATA_DIR to the data root (e.g. ../shared/data)")
    if args.workers < 2:
        parser.error(f"--workers {args.workers}: accepted: an integer >= 2 (it is compared with 1)")

    from bench.data import load_dataset
    from bench.runtime import cpu_isa, cpu_model
    from bench.suites import load_suite

    load_dataset(load_suite(args.suite).dataset)  # decoded once, so neither contender pays for it
    print(f"machine: {cpu_model()} ({cpu_isa()}), {os.cpu_count()} logical cores; suite {args.suite} "
          f"[{args.profile}], seeds {args.seeds}")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        serial_s, serial, serial_runs = run_suite(args, 1, Path(tmp))
        print(f"--workers 1 ({os.cpu_count()} threads): {serial_s:7.1f} s")
        parallel_s, parallel, parallel_runs = run_suite(args, args.workers, Path(tmp))
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        print(f"--workers {args.workers} ({threads} thread(s) each): {parallel_s:7.1f} s")
    # Where the time went: with one run much longer than the rest, K workers can do no better
    # than that run at cores/K threads, however the others are packed.
    print(f"{'run':>24} {'s, 1 worker':>12} {f's, {args.workers} workers':>12}")
    for name in sorted(serial_runs, key=serial_runs.get, reverse=True):
        print(f"{name:>24} {serial_runs[name]:12.1f} {parallel_runs.get(name, float('nan')):12.1f}")
    print(f"{'sum of runs':>24} {sum(serial_runs.values()):12.1f} {sum(parallel_runs.values()):12.1f}")
    speedup = serial_s / parallel_s
    accuracies = [c for c in COMPARED if c.endswith("_mean")]
    gap = (serial.set_index("label")[accuracies] - parallel.set_index("label")[accuracies]).abs().max().max()
    print(f"speed-up {speedup:.2f}x (goal >= {GOAL_SPEEDUP}x): {'PASS' if speedup >= GOAL_SPEEDUP else 'MISS'}; "
          f"largest difference of a row's mean accuracy: {gap:.4f} (threads differ; see the docstring)")
    if gap > 0:
        print(serial[COMPARED].to_string(), parallel[COMPARED].to_string(), sep="\n")
    return 0 if speedup >= GOAL_SPEEDUP else 1

if __name__ == "__main__":
    sys.exit(main())
