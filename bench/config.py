"""The one configuration object of a training run.

``TrainConfig`` is what the CLI, suites and searches build, what the trainer reads,
and what tracking logs verbatim. Fields left ``None`` take the variant's training
defaults (the settings its source used) in ``resolve()``; the resolved config is
complete, so the logged copy alone reproduces the run.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .data import DataError, check_dataset_name, dataset_info
from .models import BUILT_IN, VariantError, get_variant
from .models.plugins import check_builds

OPTIMIZERS = ("sgd", "momentum", "adam")
AMP_MODES = ("auto", "off", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
# Knobs with generic CLI flags; bounds are the variant's, checked in resolve().
GENERIC_KNOBS = ("width", "depth", "dropout")


class ConfigError(ValueError):
    """A setting that cannot work; raised before any data is loaded."""


@dataclasses.dataclass
class TrainConfig:
    variant: str = "net"
    knobs: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "cifar2"
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 1024  # eval holds no activations for backward: big batches are free
    optimizer: str | None = None  # sgd | momentum | adam; None: the variant's default
    lr: float | None = None
    momentum: float | None = None  # for optimizer=momentum
    weight_decay: float | None = None  # in the optimizer
    l2: float | None = None  # explicit penalty l2 * sum(w^2) added to the loss
    seed: int = 0  # model init, batch order, dropout
    split_seed: int = 0  # which train images are held out as val; fixed so seeds share one val set
    val_fold: int = 0  # which block of the split seed's order is val: folds of one seed are disjoint
    device: str = "auto"  # auto: cuda if available, else cpu
    amp: str = "auto"  # auto: bf16 on CUDA, off on CPU
    memory_format: str = "auto"  # auto: channels_last for nets with convolutions (1.2-1.8x on CPU)
    val_fraction: float = 0.1
    val_from_test: bool = False  # the book's convention: "val" is the test split
    max_train_samples: int | None = None
    threads: int | None = None  # torch intra-op threads; None: torch's default
    data_dir: str | None = None  # None: BENCH_DATA_DIR, then torchvision's download
    # After training, also measure train and val accuracy with the model left in train mode (dropout
    # on, batch norm on each batch's statistics), as sources that never call model.eval() did.
    train_mode_eval: bool = False
    # Evaluate on test after training. A search turns it off: test is touched once, after selection.
    evaluate_test: bool = True
    # Steadier measures than val after the last step (which one noisy step can move by points):
    # val_acc_last_k, the mean val accuracy over the last ``last_k`` epochs; and val_acc_ema, val of an
    # exponential moving average of the weights (decay ``ema_decay`` per step, warmed up as
    # min(decay, (1 + t) / (10 + t)) so short runs are not dominated by their first weights; 0: off).
    last_k: int = 5
    ema_decay: float = 0.999

    def resolve(self) -> TrainConfig:
        """A complete, checked copy: variant defaults filled in, every value validated."""
        try:
            variant = get_variant(self.variant)
            knobs = variant.resolve_knobs(self.knobs)
            check_dataset_name(self.dataset)
            if variant.source != BUILT_IN:  # your own code: does it build, and fit the data set?
                check_builds(variant, dataset_info(self.dataset).shape, knobs)
        except (VariantError, DataError) as exc:
            raise ConfigError(str(exc)) from None
        defaults = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, "l2": 0.0}
        defaults.update(variant.train_defaults)
        filled = {k: (getattr(self, k) if getattr(self, k) is not None else v) for k, v in defaults.items()}
        resolved = dataclasses.replace(self, knobs=knobs, **filled)
        resolved._check()
        return resolved

    def _check(self) -> None:
        def bad(field: str, accepted: str) -> ConfigError:
            return ConfigError(f"{field}={getattr(self, field)!r} is not accepted; accepted: {accepted}")

        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", ", ".join(OPTIMIZERS))
        if self.amp not in AMP_MODES:
            raise bad("amp", ", ".join(AMP_MODES))
        if self.memory_format not in MEMORY_FORMATS:
            raise bad("memory_format", ", ".join(MEMORY_FORMATS))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise bad("device", "auto, cpu, cuda, cuda:N, mps")
        if not self.lr > 0:
            raise bad("lr", "a number > 0")
        for field in ("weight_decay", "l2"):
            if not getattr(self, field) >= 0:
                raise bad(field, "a number >= 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "0 <= momentum < 1")
        for field in ("epochs", "batch_size", "eval_batch_size"):
            if not (isinstance(getattr(self, field), int) and getattr(self, field) >= 1):
                raise bad(field, "an integer >= 1")
        if not 0 <= self.val_fraction < 1:
            raise bad("val_fraction", "0 <= val_fraction < 1")
        if not self.val_from_test and self.val_fraction == 0:
            raise ConfigError("val_fraction=0 leaves no validation data; use val_fraction > 0 or val_from_test")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise bad("max_train_samples", "an integer >= 1, or unset for the whole split")
        if not (isinstance(self.val_fold, int) and self.val_fold >= 0):
            raise bad("val_fold", "an integer >= 0")
        if self.threads is not None and self.threads < 1:
            raise bad("threads", "an integer >= 1, or unset for torch's default")
        if not (isinstance(self.last_k, int) and self.last_k >= 1):
            raise bad("last_k", "an integer >= 1")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "0 <= ema_decay < 1 (0: no moving average)")

    @classmethod
    def from_params(cls, params: dict[str, str]) -> TrainConfig:
        """The config a run logged (``to_flat_dict`` as MLflow strings), typed again and resolved.

        What ``bench train --resume RUN_ID`` continues: the logged copy alone reproduces the run.
        """
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        knobs: dict[str, Any] = {}
        for key, text in params.items():
            if key.startswith("knob."):
                knobs[key.removeprefix("knob.")] = text  # each knob coerces its own type
            elif key in hints and key != "knobs":
                values[key] = _parse_field(key, text, hints[key])
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and f.name != "knobs"]
        if "variant" in missing or "dataset" in missing:
            raise ConfigError(f"the run's params hold no complete bench config (missing: {', '.join(missing)})")
        return cls(knobs=knobs, **values).resolve()

    def to_flat_dict(self) -> dict[str, Any]:
        """Every field, knobs flattened as ``knob.<name>``: the form tracking logs."""
        flat = dataclasses.asdict(self)
        for name, value in flat.pop("knobs").items():
            flat[f"knob.{name}"] = value
        return flat


def _parse_field(name: str, text: str, hint: Any) -> Any:
    if text == "None":
        return None
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    kind = kinds[0]
    try:
        if kind is bool:
            if text not in ("True", "False"):
                raise ValueError(text)
            return text == "True"
        return kind(text)
    except (TypeError, ValueError):
        raise ConfigError(f"logged param {name}={text!r} is not a {getattr(kind, '__name__', kind)}") from None
