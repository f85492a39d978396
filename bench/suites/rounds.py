"""Which seeds a suite runs, and how many times it has looked at them.

``Rounds`` is the bookkeeping of one parent run, recorded on it after every change so that a
``--resume`` (on any machine) continues exactly where it stopped:

- the **design**: fixed seeds (``seeds 0,1,2``: one look) or the schedule of ``--seeds auto``
  (``auto start=3 step=2 max=9``: at most ``1 + ceil((max - start) / step)`` looks), fixed before
  the first look; alpha is spent over its planned looks by its spending function;
- the **round**: every seed each row is planned to have so far (a failed seed is never replaced);
- the **looks taken**: a look is the suite judged on a round's finished runs, counted when it
  tested something (one seed tests nothing) on data no earlier look saw. A judged round is final:
  its failures stay failures, and the next round only adds seeds.

A resume with another design (seeds or schedule, margin, rows) is refused once a look has been taken
(its alpha is spent, and the margin is not chosen after seeing the data); before that, the new
design replaces the old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from ..verdicts import AutoSeeds, next_round
from ..verdicts.sequential import Look
from .. import tracking
from .spec import TAG_LOOKS, Suite, SuiteError

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}
TAG_DESIGN = "bench.seeds_design"  # "seeds 0,1,2; margin 0.01; rows ..." or "auto start=3 step=2 max=9; ..."

TAG_LOOKS_TAKEN = "bench.looks_taken"  # looks taken so far (each tested something on new data)
TAG_ROUND = "bench.round_seeds"  # JSON {row: [seeds]}: every seed each row is planned to have so far
TAG_ROUND_JUDGED = "bench.round_judged"  # "true" once the current round's runs were judged
TAG_JUDGED_SEEDS = "bench.judged_seeds"  # JSON {row: [seeds]}: the seeds some look judged (final: never run again)
TAG_LOOK_DATA = "bench.look_data"  # digest of the runs the last look judged
TAG_LOOK = "bench.look"  # JSON: the last look's information fractions, index and spending (its nominal levels)
DECISIONS_ARTIFACT = "decisions.json"  # {row: verdict columns}: rows decided at a look, final (a tag would be too short)
TAG_AUTO_STOP = "bench.seeds_auto_stop"  # why --seeds auto stopped adding seeds


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1h30m`` -> seconds; ValueError naming what is accepted."""
    total, number = 0.0, ""
    for char in text.strip().lower():
        if char.isdigit() or char == ".":
            number += char
        elif char in DURATION_UNITS and number:
            total, number = total + float(number) * DURATION_UNITS[char], ""
        else:
            number = "x"
            break
    if number or total <= 0:
        raise ValueError(f"budget {text!r} is not accepted; accepted: a duration such as 90s, 30m, 2h or 1h30m")
    return total


@dataclasses.dataclass
class Rounds:
    suite: Suite
    profile: str
    labels: Sequence[str]  # the rows this run covers
    seeds: Sequence[int] | None = None  # fixed seeds (None: the profile's)
    auto: AutoSeeds | None = None
    margin: float | None = None  # the margin the verdicts use: part of the design (None: the suite's)
    looks_taken: int = 0
    round_seeds: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    round_judged: bool = False
    judged_seeds: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    decisions: dict[str, dict] = dataclasses.field(default_factory=dict)  # row -> its verdict columns when decided
    look_data: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)
    stop_reason: str = ""

    def __post_init__(self) -> None:
        if self.seeds is None and not self.auto:
            self.seeds = list(self.suite.profiles[self.profile].get("seeds", self.suite.seeds))
        if not self.round_seeds:
            self.round_seeds = self.first()

    @property
    def looks(self) -> int:
        """The most looks the design may take; alpha is spent over them by the schedule's spending."""
        return self.auto.looks if self.auto else 1

    @property
    def design(self) -> str:
        """``auto start=3 step=2 max=9 spending obf; margin 0.01; measure val_acc_last_k; paired; rows net,net-l2``:
        what is fixed before the first look
        (rows in the suite's order and seeds sorted, so the order a command names them in is no change)."""
        order = [r.label for r in self.suite.rows]
        rows = ",".join(sorted(self.labels, key=lambda label: order.index(label) if label in order else len(order)))
        seeds = self.auto.schedule if self.auto else "seeds " + ",".join(map(str, sorted(set(self.seeds or ()))))
        margin = self.suite.margin if self.margin is None else self.margin
        target = (f"; target {self.suite.target:g} within {self.suite.target_margin:g} epochs"
                  if self.suite.target is not None else "")
        return (f"{seeds}; margin {margin:g}; measure {self.suite.measure}; {self.suite.design}; "
                f"baseline {self.suite.baseline}{target}; rows {rows}")

    def first(self) -> dict[str, list[int]]:
        if self.auto:
            return {label: self.auto.seed_list(self.auto.start) for label in self.labels}
        return {label: list(self.seeds or ()) for label in self.labels}

    def every_seed(self) -> dict[str, list[int]]:
        """Every seed any round may give a row (what a worker must be able to train)."""
        if self.auto:
            return {label: self.auto.seed_list(self.auto.max_seeds) for label in self.labels}
        return self.first()

    def pairs(self) -> set[tuple[str, int]]:
        """The pairs of the rounds so far."""
        return {(label, seed) for label, seeds in self.round_seeds.items() for seed in seeds}

    def final_pairs(self) -> set[tuple[str, int]]:
        """The pairs some look judged: whatever became of them stands (a failure is not retried)."""
        return {(label, seed) for label, seeds in self.judged_seeds.items() for seed in seeds}

    # ------------------------------------------------------------------------ on the parent run

    def look(self, data: str | None = None) -> Look:
        """The look a judgment of ``data`` (a digest of the runs) is: the next one when no look saw it yet."""
        index = self.looks_taken + (1 if data is not None and data != self.look_data else 0)
        return Look.of(self.auto, max(1, index), "paired" if self.suite.design == "paired" else "Welch")

    def tags(self) -> dict[str, str]:
        look = self.look()
        return {TAG_DESIGN: self.design, TAG_LOOKS: str(self.looks), TAG_LOOKS_TAKEN: str(self.looks_taken),
                TAG_ROUND: json.dumps(self.round_seeds, separators=(",", ":")),
                TAG_ROUND_JUDGED: "true" if self.round_judged else "false",
                TAG_JUDGED_SEEDS: json.dumps(self.judged_seeds, separators=(",", ":")), TAG_LOOK_DATA: self.look_data,
                TAG_LOOK: json.dumps({"fractions": look.fractions, "index": look.index, "spending": look.spending,
                                      "seeds": look.seeds, "test": look.test})}

    def restore(self, tags: Mapping[str, str], parent_id: str, decisions: Mapping[str, dict] | None = None) -> None:
        """Continue the design a resumed parent recorded: its looks, its round and the rows its looks
        decided (``decisions``, from its ``decisions.json``). Raises ``SuiteError`` when this command
        asks for another design after a look spent alpha."""
        recorded = tags.get(TAG_DESIGN)
        if recorded is None:
            return  # a parent from before designs were recorded, or one never judged: start the design here
        taken = int(tags.get(TAG_LOOKS_TAKEN) or 0)
        if recorded != self.design:
            if taken:
                raise SuiteError(
                    f"--resume: parent run {parent_id} was planned as '{recorded}' and has taken {taken} look(s) "
                    f"at its verdicts; this command asks for '{self.design}'. Looking again under another plan "
                    "would spend alpha the first plan did not set aside: resume with the same --seeds, --max-seeds, "
                    "--first-seed, --spending, --margin and --rows (and the suite file's baseline, measure, design "
                    "and target), "
                    "or leave out "
                    "--resume to start a new parent run (--seeds auto adds seeds where they matter within one plan)."
                )
            return  # nothing judged yet: the new design replaces the old one
        self.looks_taken = taken
        self.round_seeds = {k: [int(s) for s in v] for k, v in json.loads(tags.get(TAG_ROUND) or "{}").items()} \
            or self.first()
        self.round_judged = tags.get(TAG_ROUND_JUDGED) == "true"
        self.judged_seeds = {k: [int(s) for s in v] for k, v in json.loads(tags.get(TAG_JUDGED_SEEDS) or "{}").items()}
        self.decisions = dict(decisions or {})
        self.look_data = tags.get(TAG_LOOK_DATA, "")

    # ------------------------------------------------------------------------ looks and rounds

    def judged(self, tested: bool, data: str, decided: Mapping[str, dict] | None = None) -> bool:
        """Record that the current round was judged on ``data`` (a digest of its runs); True when
        this was a new look: it ``tested`` something, on runs no earlier look saw. ``decided``: the rows
        that look decided (``summary.decisions``), kept from now on as they are."""
        self.round_judged = True
        self.judged_seeds = {label: list(seeds) for label, seeds in self.round_seeds.items()}
        if not tested or data == self.look_data:
            return False
        self.looks_taken += 1
        self.look_data = data
        self.decisions.update({label: record for label, record in (decided or {}).items()
                               if label not in self.decisions})
        return True

    def next(self, summary: pd.DataFrame, workers: int = 1) -> dict[str, list[int]] | None:
        """The seeds of the next round after judging ``summary`` (only the rows that grow, each with
        every seed it is now planned to have), recorded as the new round; or None with ``stop_reason``."""
        if not self.auto:
            return None
        if summary.empty or self.suite.baseline not in set(summary["label"]):
            self.stop_reason = "the baseline has no runs to judge against"
            return None
        return self.advance(dict(zip(summary["label"], summary["verdict_kind"])),
                            lambda grow, counts: self.cost_s(summary, grow, counts, workers))

    def advance(self, kinds: Mapping[str, str],
                cost: Callable[[Mapping[str, int], Mapping[str, int]], float] | None = None) -> dict[str, list[int]] | None:
        """``next`` on the verdict kinds alone; ``cost(grow, counts)``: wall seconds the round would take."""
        counts = {label: len(seeds) for label, seeds in self.round_seeds.items()}
        grow = next_round(kinds, counts, self.suite.baseline, self.auto)
        if not grow:
            undecided = [label for label, kind in kinds.items() if kind == "undecided"]
            not_judged = [label for label, kind in kinds.items() if kind == "not judged"]
            self.stop_reason = (f"{len(undecided)} row(s) undecided at the maximum of {self.auto.max_seeds} seeds"
                                if undecided else "every row is decided" if not not_judged
                                else f"no row is undecided ({len(not_judged)} not judged: failed or diverged runs)")
            return None
        if self.auto.budget_s is not None and cost is not None:
            elapsed, needed = time.monotonic() - self.started, cost(grow, counts)
            if elapsed + needed > self.auto.budget_s:
                self.stop_reason = (f"budget: {elapsed / 60:.1f} min spent, the next round would take about "
                                    f"{needed / 60:.1f} min more of {self.auto.budget_s / 60:.1f}")
                return None
        following = {label: self.auto.seed_list(n) for label, n in grow.items()}
        self.round_seeds = {**self.round_seeds, **following}
        self.round_judged = False
        return following

    @staticmethod
    def cost_s(summary: pd.DataFrame, grow: Mapping[str, int], counts: Mapping[str, int], workers: int) -> float:
        """Wall seconds the round would take: each new run costs what that row's runs took, start to end."""
        fallback = summary["s_per_epoch"] * summary["epochs"].astype(float)  # stores without start and end times
        per_run = dict(zip(summary["label"], summary["s_per_run"].fillna(fallback)))
        total = sum(per_run.get(label, math.nan) * (n - counts.get(label, 0)) for label, n in grow.items())
        return total / max(1, workers) if math.isfinite(total) else 0.0


def look_data(outcomes: pd.DataFrame) -> str:
    """A digest of what a look judges: each pair's run and what became of it."""
    rows = sorted(f"{label}|{seed}|{run_id}|{state}" for label, seed, run_id, state in zip(
        outcomes.get(f"tags.{tracking.TAG_LABEL}", []), outcomes.get("seed", []), outcomes.get("run_id", []),
        outcomes.get("pair_state", [])))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:12]
