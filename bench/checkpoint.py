"""Epoch checkpoints: what a killed run needs to continue as if it had never stopped.

A checkpoint holds the model, the optimizer (and grad scaler), every RNG state the
trainer draws from (torch's global CPU and CUDA generators, the batch-order generator,
Python's and NumPy's), the epoch reached, the history so far, and the run's *identity*:
the settings and data digests that decide its numbers. Loading one whose identity
differs from the run's is refused, so a checkpoint is never silently applied to
another variant, knob, data set or seed.

Files live in ``$BENCH_CACHE_DIR/checkpoints/<key>/`` (the key is the MLflow run id).
Each save writes a temporary file and renames it over ``last.pt`` after moving the old
``last.pt`` to ``previous.pt``: a reader never sees a half-written file and at most two
checkpoints of a run are kept. Loading uses ``torch.load(weights_only=True)``, which
runs no pickled code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "bench-checkpoint/1"
LAST, PREVIOUS = "last.pt", "previous.pt"
# Settings that change where or how fast a run goes, not its numbers: a run may resume
# on another device, with other threads or another copy of the data root.
NOT_IDENTITY = ("device", "threads", "data_dir", "eval_batch_size")
# "auto": checkpoint once the training time since the last one is this many times what
# the last one cost (save plus upload), so checkpoints cost at most ~1 % of the run.
AUTO_COST_FACTOR = 100


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not bench's, or from another run's config."""


def checkpoint_root() -> Path:
    from .data import cache_dir

    return cache_dir() / "checkpoints"


def identity(config, data, device_type: str, compute_dtype: str, variant_source: str = "built-in") -> dict[str, Any]:
    """The settings and data digests that decide a run's numbers (``config`` resolved).

    The device's type and the compute dtype belong to it although the device does not: a CPU
    and a CUDA generator keep states of different sizes, and ``amp="auto"`` means fp32 on one
    and bf16 on the other, so a run continued on the other kind would silently be another run.
    """
    flat = {k: v for k, v in config.to_flat_dict().items() if k not in NOT_IDENTITY}
    flat["data.train"] = data.train.digest()
    flat["data.val"] = data.val.digest()
    flat["device_type"] = device_type
    flat["compute_dtype"] = compute_dtype
    flat["variant_source"] = variant_source  # your own variant's file and digest: changed code, another run
    return json.loads(json.dumps(flat, default=str))  # plain types only: weights_only loading


@dataclasses.dataclass(frozen=True)
class Policy:
    """When to checkpoint: every ``every`` epochs, or ``every=None`` for the cost-bounded auto rule."""

    every: int | None = None

    @classmethod
    def parse(cls, text: str | int) -> Policy:
        if text in ("auto", None):
            return cls(None)
        try:
            every = int(text)
        except (TypeError, ValueError):
            every = 0
        if every < 1:
            raise ValueError(f"checkpoint_every={text!r} is not accepted; accepted: auto or an integer >= 1")
        return cls(every)


class Checkpointer:
    """Writes a run's checkpoints into its own folder, keeps the last two, and says when to write."""

    def __init__(self, key: str, policy: Policy | None = None, root: Path | None = None) -> None:
        self.folder = (root or checkpoint_root()) / key
        self.policy = policy or Policy()
        self.last_cost_s: float | None = None
        self.train_s_since = 0.0  # training seconds since the last checkpoint (or the start)

    def due(self, epoch: int, epoch_time_s: float, final: bool) -> bool:
        """Whether to write one after ``epoch`` (never after the last: the run is about to end)."""
        self.train_s_since += epoch_time_s
        if final:
            return False
        if self.policy.every is not None:
            return epoch % self.policy.every == 0
        return self.last_cost_s is None or self.train_s_since >= AUTO_COST_FACTOR * self.last_cost_s

    def save(self, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{LAST}.{os.getpid()}.tmp"
        torch.save(state, tmp)
        with open(tmp, "rb") as f:  # on disk before it is renamed into place
            os.fsync(f.fileno())
        last = self.folder / LAST
        if last.exists():
            os.replace(last, self.folder / PREVIOUS)
        os.replace(tmp, last)
        self.train_s_since = 0.0
        return last

    def record_cost(self, seconds: float) -> None:
        self.last_cost_s = seconds

    def discard(self) -> None:
        """Remove the run's checkpoints (it FINISHED: its model is logged)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def local_checkpoint(key: str, root: Path | None = None) -> Path | None:
    path = (root or checkpoint_root()) / key / LAST
    return path if path.is_file() else None


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents, read without running pickled code; ``CheckpointError`` if unusable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # truncated zip, wrong magic, a pickle that needs code...
        raise CheckpointError(f"{path}: not a readable bench checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a bench checkpoint (format {found!r}; expected {FORMAT!r})")
    return state


def check_identity(state: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint written by a run whose settings or data differ from this run's."""
    found = state.get("identity", {})
    keys = sorted(set(found) | set(expected))
    differ = [k for k in keys if found.get(k) != expected.get(k)]
    if "variant_source" in differ:
        raise CheckpointError(
            f"{path} was written by other code of variant {expected.get('variant')!r}: {found.get('variant_source')} "
            f"then, {expected.get('variant_source')} now. The file changed since the run started; resuming would "
            "mix two models. Restore the file, or start a new run."
        )
    if differ and set(differ) <= {"device_type", "compute_dtype"}:
        raise CheckpointError(
            f"{path} was written on {found.get('device_type')} ({found.get('compute_dtype')}); this run is on "
            f"{expected.get('device_type')} ({expected.get('compute_dtype')}). A run continues only on the kind of "
            f"device it started on: resume it on a {found.get('device_type')} device (--device), or start a new run."
        )
    if differ:
        shown = "; ".join(f"{k}: checkpoint {found.get(k)!r}, this run {expected.get(k)!r}" for k in differ[:6])
        more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
        raise CheckpointError(
            f"{path} belongs to another configuration, refusing to load it: {shown}{more}. "
            "Start a new run instead of resuming this one."
        )


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "batch_order": generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batch_order"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples back that a round trip may have made lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
