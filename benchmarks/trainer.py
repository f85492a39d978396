"""How fast is the bench trainer? Against the seed's loop, PyTorch Lightning, and the machine's GEMM peak.

    python -m benchmarks.trainer [--cases net:cifar2,lenet:mnist] [--epochs 2] [--threads N] [--device cuda]
                                 [--contenders seed,lightning,bench] [--repeats R]

Every contender runs in its own fresh process (so one's allocator or thread settings
cannot help or hurt another), one after the other, same model, same data, same epochs:

- ``seed``: exactly the book's ``training_loop``: a torchvision-style dataset that builds
  a PIL image per item and applies ``ToTensor`` + ``Normalize``, ``DataLoader(batch_size=64,
  shuffle=True)``, ``loss.item()`` every step. MNIST uses ``torchvision.datasets.MNIST``;
  CIFAR-2 uses the same per-item code as ``torchvision.datasets.CIFAR10`` over the decoded
  images (the shared copy is JPEG files, not CIFAR's pickles).
- ``lightning``: ``lightning.Trainer`` on the same seed dataset and DataLoader, its idiomatic
  setup (only if ``lightning`` is installed: ``pip install -e '.[bench]'``).
- ``bench``: ``bench.train.train`` with its defaults, and again with
  ``BENCH_MALLOC_TUNING=1`` (glibc keeps freed buffers instead of returning them to the OS;
  opt-in, since it has not helped inside the trainer).

Seconds per epoch are the median over epochs after the first (the first pays one-off
costs, reported separately); with ``--repeats R`` every contender runs R times, in
alternation, and the table gives the median of the R runs and their spread (max - min),
which is how to tell a lever from noise (e.g. ``--contenders bench --repeats 5`` for the
malloc tuning). Goals: bench >= 5x the seed loop and >= 1.5x Lightning per
epoch, at the same final train accuracy within 1 point. Exits 1 when a measured goal is
missed. Also prints achieved training GFLOP/s against this machine's dense fp32 and bf16
GEMM GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GOAL_VS_SEED = 5.0
GOAL_VS_LIGHTNING = 1.5
ACCURACY_TOLERANCE = 0.01  # final accuracies must agree within 1 point
BATCH_SIZE = 64


# ---------------------------------------------------------------------------- contenders (child processes)


def _setup(case: dict) -> tuple:
    """The seed's dataset, the model, its optimizer settings: shared by seed and lightning."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    from bench.config import TrainConfig
    from bench.data import DATASETS, load_dataset
    from bench.models import get_model

    torch.manual_seed(case["seed"])
    splits = load_dataset(case["dataset"])  # only for the normalisation statistics and CIFAR pixels
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(splits.mean, splits.std)])
    if case["dataset"] == "mnist":
        dataset = torchvision.datasets.MNIST(os.environ["BENCH_DATA_DIR"], train=True, download=False, transform=to_tensor)
    else:
        class SeedCIFAR(torch.utils.data.Dataset):  # torchvision.datasets.CIFAR10.__getitem__, over our pixels
            def __init__(self, images, labels):
                self.data = images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as CIFAR10 keeps it
                self.targets = labels.tolist()

            def __len__(self):
                return len(self.targets)

            def __getitem__(self, index):
                img, target = self.data[index], self.targets[index]
                return to_tensor(Image.fromarray(img)), target

        train = splits.train
        images = torch.cat([train.images, splits.val.images])
        labels = torch.cat([train.labels, splits.val.labels])
        dataset = SeedCIFAR(images, labels)
    config = TrainConfig(variant=case["variant"], dataset=case["dataset"]).resolve()
    model = get_model(case["variant"], DATASETS[case["dataset"]].shape, **config.knobs)
    return dataset, model, config, np


def _optimizer(model, config):
    import torch

    momentum = config.momentum if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=momentum)


def run_seed(case: dict) -> dict:
    import torch
    import torch.nn as nn

    dataset, model, config, _ = _setup(case)
    device = torch.device(case["device"])
    model = model.to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    optimizer = _optimizer(model, config)
    loss_fn = nn.CrossEntropyLoss()
    seconds, accuracy = [], 0.0
    for _ in range(case["epochs"]):  # the book's training_loop, plus a correct count
        start = time.perf_counter()
        loss_train, correct, seen = 0.0, 0, 0
        for imgs, labels in loader:
            imgs, labels = imgs.to(device), labels.to(device)  # the book's loop, on a GPU
            outputs = model(imgs)
            loss = loss_fn(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_train += loss.item()
            correct += int((outputs.argmax(1) == labels).sum())
            seen += len(labels)
        seconds.append(time.perf_counter() - start)
        accuracy = correct / seen
    return {"seconds": seconds, "train_acc": accuracy, "images": len(dataset)}


def run_lightning(case: dict) -> dict:
    import lightning as L
    import torch
    import torch.nn as nn

    dataset, model, config, _ = _setup(case)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.correct = 0
            self.seen = 0

        def training_step(self, batch, batch_idx):
            imgs, labels = batch
            outputs = self.model(imgs)
            loss = nn.functional.cross_entropy(outputs, labels)
            self.correct += int((outputs.argmax(1) == labels).sum())
            self.seen += len(labels)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return _optimizer(self.model, config)

    class Timer(L.Callback):
        def __init__(self):
            self.seconds, self.accuracy = [], 0.0

        def on_train_epoch_start(self, trainer, module):
            module.correct = module.seen = 0
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.seconds.append(time.perf_counter() - self.start)
            self.accuracy = module.correct / module.seen

    timer = Timer()
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    trainer = L.Trainer(
        max_epochs=case["epochs"], accelerator="gpu" if case["device"].startswith("cuda") else "cpu", devices=1,
        callbacks=[timer], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Module(), loader)
    return {"seconds": timer.seconds, "train_acc": timer.accuracy, "images": len(dataset)}


def run_bench(case: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.config import TrainConfig
    from bench.data import DATASETS
    from bench.models import get_model
    from bench.train import train

    # val_from_test keeps every train image in the epoch, like the seed's loop.
    config = TrainConfig(variant=case["variant"], dataset=case["dataset"], epochs=case["epochs"], seed=case["seed"],
                         val_from_test=True, device=case["device"])
    result = train(config, progress=False)
    shape = DATASETS[case["dataset"]].shape
    model = get_model(case["variant"], shape)
    x = torch.randn(BATCH_SIZE, shape.channels, shape.size, shape.size)
    with FlopCounterMode(display=False) as counter:  # one training step: forward and backward (weights' and inputs' grads)
        model(x).sum().backward()
    return {
        "seconds": [m.epoch_time_s for m in result.history],
        "train_acc": result.final.train_acc,
        "images": len(result.history) and round(result.history[0].images_per_s * result.history[0].epoch_time_s),
        "flop_per_image": counter.get_total_flops() / BATCH_SIZE,
    }


def gemm_gflops(case: dict) -> dict:
    import torch

    from bench.runtime import measure_gemm

    device = torch.device(case.get("device", "cpu"))
    return {name: measure_gemm(device, dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


CONTENDERS = {"seed": run_seed, "lightning": run_lightning, "bench": run_bench, "gemm": gemm_gflops}


# ---------------------------------------------------------------------------- the driver


def _child(name: str, case: dict, threads: int, malloc_tuning: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BENCH_MALLOC_TUNING": "1" if malloc_tuning else "0"}
    cmd = [sys.executable, "-m", "benchmarks.trainer", "--child", name, "--case", json.dumps(case)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lightning_available() -> bool:
    try:
        import lightning  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="net:cifar2,lenet:mnist", help="variant:dataset pairs")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per contender (>= 2; the first is warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where every contender trains (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contenders", default="seed,lightning,bench",
                        help="which to run: seed, lightning, bench (bench also runs with BENCH_MALLOC_TUNING=1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each contender, alternating (default 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = CONTENDERS[args.child](json.loads(args.case))
        print(json.dumps(result))
        return 0
    if "BENCH_DATA_DIR" not in os.environ:
        parser.error("set BENCH_DATA_DIR to the data root (e.g. ../shared/data)")

    import torch

    gemm = _child("gemm", {"device": args.device}, args.threads, True)
    from bench.runtime import cpu_isa, cpu_model

    print(f"machine: {cpu_model()} ({cpu_isa()}), {os.cpu_count()} cores, device {args.device}, torch {torch.__version__}, "
          f"{args.threads} threads; dense GEMM 2048^2: fp32 {gemm['fp32']:.0f} GFLOP/s, bf16 {gemm['bf16']:.0f} GFLOP/s")
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in ("seed", "lightning", "bench")]
    if unknown or args.repeats < 1:
        parser.error(f"--contenders {args.contenders!r} / --repeats {args.repeats}: accepted: a subset of "
                     "seed,lightning,bench and repeats >= 1")
    lightning = "lightning" in chosen and _lightning_available()
    if "lightning" in chosen and not lightning:
        print("lightning: not installed (pip install -e '.[bench]'); its goal is not measured")
    plan = [(name, contender, tuned) for name, contender, tuned in (
        ("seed", "seed", False), ("lightning", "lightning", False), ("bench", "bench", False),
        ("bench, malloc tuned", "bench", True),
    ) if contender in chosen and (contender != "lightning" or lightning)]
    print(f"{'case':<14}{'contender':<22}{'s/epoch':>9}{'spread':>8}{'first':>8}{'img/s':>9}{'train acc':>11}"
          f"{'GFLOP/s':>9}{'speed-up':>10}")
    misses = []
    for pair in args.cases.split(","):
        variant, dataset = pair.split(":")
        case = {"variant": variant, "dataset": dataset, "epochs": args.epochs, "seed": args.seed, "device": args.device}
        repeats: dict[str, list[dict]] = {name: [] for name, _, _ in plan}
        for _ in range(args.repeats):  # alternating, so a drift of the machine hits every contender alike
            for name, contender, tuned in plan:
                repeats[name].append(_child(contender, case, args.threads, tuned))
        per_run = {k: [statistics.median(r["seconds"][1:] or r["seconds"]) for r in rs] for k, rs in repeats.items()}
        steady = {k: statistics.median(v) for k, v in per_run.items()}
        runs = {k: rs[0] for k, rs in repeats.items()}
        flop = runs["bench"]["flop_per_image"] if "bench" in runs else None  # forward + backward per image
        reference = "seed" if "seed" in runs else next(iter(runs))
        for name, r in runs.items():
            images_per_s = r["images"] / steady[name]
            speedup = steady[reference] / steady[name]
            gflops = f"{images_per_s * flop / 1e9:>9.1f}" if flop else f"{'':>9}"
            print(f"{pair:<14}{name:<22}{steady[name]:>9.2f}{max(per_run[name]) - min(per_run[name]):>8.2f}"
                  f"{r['seconds'][0]:>8.2f}{images_per_s:>9.0f}{r['train_acc']:>11.4f}{gflops}{speedup:>9.2f}x")
        for rival, goal in (("seed", GOAL_VS_SEED), ("lightning", GOAL_VS_LIGHTNING)):
            if rival not in runs or "bench" not in runs:
                continue
            speedup = steady[rival] / steady["bench"]
            same = abs(runs[rival]["train_acc"] - runs["bench"]["train_acc"]) <= ACCURACY_TOLERANCE
            verdict = "PASS" if speedup >= goal and same else "MISS"
            print(f"  goal: bench >= {goal}x {rival}: {speedup:.2f}x, train acc within 1 point: {same} -> {verdict}")
            if verdict == "MISS":
                misses.append(f"{pair} vs {rival}")
    if misses:
        print("missed: " + ", ".join(misses))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
