"""The search's winner, confirmed: its top configs and a baseline trained again over fresh seeds.

The best of many noisy one-seed trials is biased upwards (the winner's curse). After the search,
the ``top`` distinct configs by val and the study's baseline are written as a suite
(``optuna/confirm/<study>.toml``, also logged) and run through the suite machinery: the same queue,
workers, storage, resume and checkpoints, with one parent run nested under the study's parent.
The suite's verdicts judge each config against the baseline; the configs are also judged against
the confirmed winner, the config with the best val mean over the fresh seeds.

Test is touched once: trials and confirmation runs never evaluate it; after the winner is chosen
on val, its confirmation runs' logged models are evaluated on test, and that mean ± std is reported.
The champion (``<study>-best@champion``) is a confirmation run of the winner, linked to its trial.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import tomli_w
from optuna.trial import TrialState

from .. import tracking
from ..runner import evaluate_test_after_selection
from ..suites import Suite, SuiteFailed, load_suite, run_suite, run_suite_workers
from ..suites.spec import settings_of
from ..verdicts import against_baseline
from ..workqueue import is_database
from .spec import SearchError, StudySpec

CONFIRM_DIR = Path("optuna") / "confirm"
PROFILE = "confirm"
ARTIFACT = "confirmation.json"
TAG_CONFIRMS = "bench.confirms"  # on the confirmation's parent: the study it confirms
TAG_PROPOSED_BY = "bench.proposed_by_trial"  # on the champion's run: the trial that proposed its config
TAG_TEST_AFTER = "bench.test_after_selection"  # on runs whose test accuracy was measured after selection


@dataclasses.dataclass(frozen=True)
class Candidate:
    label: str  # "trial 13"
    trial: int
    params: dict[str, Any]
    value: float  # the trial's val in the search (one seed)
    run_id: str | None  # the trial's MLflow run


@dataclasses.dataclass
class Confirmation:
    parent_run_id: str
    candidates: list[Candidate]
    baseline: str
    seeds: list[int]
    summary: pd.DataFrame  # the suite's summary: verdicts against the baseline
    versus_winner: pd.DataFrame  # every candidate against the winner
    winner: Candidate | None
    test: dict[str, float]  # the winner's test accuracy after selection: mean, std, n
    champion_run_id: str | None = None
    beats_baseline: bool = False


def candidates(study: optuna.Study, spec: StudySpec, top: int) -> list[Candidate]:
    """The ``top`` distinct configs by the study's metric (ties broken by trial number): the same list
    on every machine that reads the finished study."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    reverse = spec.direction == "maximize"
    complete.sort(key=lambda t: (-t.value if reverse else t.value, t.number))
    chosen, seen = [], set()
    for trial in complete:
        key = json.dumps(trial.params, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(Candidate(f"trial {trial.number}", trial.number, dict(trial.params), float(trial.value),
                                trial.user_attrs.get("mlflow_run_id")))
        if len(chosen) == top:
            break
    return chosen


def fresh_seeds(spec: StudySpec, n: int) -> list[int]:
    """``n`` seeds none of the trials trained with (they all use the study's seed)."""
    return list(itertools.islice((s for s in itertools.count(1) if s != spec.seed), n))


def write_suite(spec: StudySpec, chosen: list[Candidate], seeds: list[int], folder: Path = CONFIRM_DIR) -> Suite:
    """The confirmation as a suite file: one row per candidate at its trial's config, and the baseline."""
    assert spec.confirm is not None
    rows = []
    for candidate in chosen:
        config = spec.config(candidate.params)
        rows.append({"label": candidate.label, "variant": config.variant, **_settings(config),
                     "note": f"proposed by trial {candidate.trial} ({spec.metric} {candidate.value:.4f} in the search)"})
    baseline = spec.baseline_config()
    rows.append({"label": spec.confirm.baseline_label, "variant": baseline.variant, **_settings(baseline),
                 "note": "the config to beat"})
    document = {
        "suite": {"name": f"{spec.name} confirmation", "dataset": spec.dataset, "seeds": seeds,
                  "baseline": spec.confirm.baseline_label, "margin": spec.confirm.margin,
                  "experiment": spec.experiment,
                  "description": f"The top {len(chosen)} configs of Optuna study {spec.name} and its baseline, trained "
                                 f"again over fresh seeds {seeds}."},
        "profiles": {PROFILE: {"description": f"{spec.epochs} epochs, as the study's trials", "epochs": spec.epochs}},
        "variants": rows,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.toml"
    path.write_text(f"# Written by bench search from study {spec.name}: the confirmation of its winner.\n"
                    + tomli_w.dumps(document))
    return load_suite(path)


def _settings(config) -> dict[str, Any]:
    """A resolved config's training settings as a suite row sets them (evaluate_test off: test waits)."""
    flat = settings_of(config)
    keep = ("batch_size", "eval_batch_size", "optimizer", "lr", "momentum", "weight_decay", "l2", "val_fraction",
            "val_from_test", "max_train_samples", "split_seed", "amp")
    out = {k: flat[k] for k in keep if flat.get(k) is not None}
    out["evaluate_test"] = False
    if config.knobs:
        out["knobs"] = dict(config.knobs)
    return out


def run_confirmation(
    spec: StudySpec, study: optuna.Study, parent_id: str, storage: str, *, seeds: int | None = None,
    workers: int = 1, threads: int | None = None, register: bool = True,
    claim: Callable[[str], bool] = lambda key: True, echo: Callable[[str], None] = print,
) -> Confirmation:
    """Train the candidates and the baseline over fresh seeds (resuming what a previous attempt left),
    pick the winner on val, measure its test once, register it as the champion.

    ``claim(key)``: whether this process is the one (of several machines finishing the same
    confirmation) that measures the winner's test and registers it."""
    assert spec.confirm is not None
    chosen = candidates(study, spec, spec.confirm.top)
    if not chosen:
        raise SearchError(f"study {spec.name} has no complete trial to confirm")
    seed_list = fresh_seeds(spec, seeds or spec.confirm.seeds)
    suite = write_suite(spec, chosen, seed_list)
    echo(f"confirming {', '.join(c.label for c in chosen)} and {spec.confirm.baseline_label} over fresh seeds {seed_list}")
    common = dict(resume=True, log_models=True, progress=False, echo=echo, nested_under=parent_id,
                  overrides={"threads": threads} if threads else None)
    try:
        if workers > 1 or is_database(storage):
            outcome = run_suite_workers(suite, PROFILE, workers=workers,
                                        storage=storage if is_database(storage) else None, **common)
        else:
            outcome = run_suite(suite, PROFILE, **common)
    except SuiteFailed as exc:
        raise SearchError(f"the confirmation did not finish: {exc}") from None
    tracking.set_tags(outcome.parent_run_id, {TAG_CONFIRMS: spec.name})
    return _judge(spec, suite, chosen, seed_list, outcome.parent_run_id, outcome.summary, register, claim, echo)


def _judge(spec: StudySpec, suite: Suite, chosen: list[Candidate], seeds: list[int], confirm_id: str,
           summary: pd.DataFrame, register: bool, claim: Callable[[str], bool],
           echo: Callable[[str], None]) -> Confirmation:
    by_label = summary.set_index("label")
    ranked = sorted((c for c in chosen if c.label in by_label.index),
                    key=lambda c: (-by_label.loc[c.label, "val_acc_mean"], c.trial))
    winner = ranked[0] if ranked else None
    children = tracking.child_runs(confirm_id)
    versus = pd.DataFrame()
    test: dict[str, float] = {}
    champion = None
    if winner is not None:
        values = {c.label: children[(children[f"tags.{tracking.TAG_LABEL}"] == c.label)
                                    & (children["status"] == "FINISHED")]["metrics.val_acc"].astype(float).tolist()
                  for c in ranked}
        versus = against_baseline(values, winner.label, margin=suite.margin)
        winner_runs = _runs_of(children, winner.label)
        config = suite.plan(PROFILE, seeds=seeds[:1], rows=[winner.label])[0][1]
        if claim(f"{confirm_id}:{winner.label}"):  # one machine measures test once and registers
            accs = [evaluate_test_after_selection(run_id, config, TAG_TEST_AFTER) for run_id in winner_runs["run_id"]]
            if register:
                champion = _register(spec, winner, winner_runs, echo)
            else:
                echo("no champion registered (--no-register)")
        else:
            accs = [float(a) for a in _runs_of(tracking.child_runs(confirm_id), winner.label)["metrics.test_acc"]
                    if pd.notna(a)] if "metrics.test_acc" in winner_runs else []
            echo(f"the confirmed winner {winner.label} was measured on test and registered by another process")
        test = {"mean": float(pd.Series(accs).mean()), "std": float(pd.Series(accs).std(ddof=1)), "n": len(accs)}
    verdict = by_label.loc[winner.label, "verdict_kind"] if winner is not None else ""
    result = Confirmation(confirm_id, chosen, suite.baseline, seeds, summary, versus, winner, test, champion,
                          beats_baseline=verdict == "better")
    _log(spec, result)
    if winner is not None:
        echo(f"confirmed winner: {winner.label} ({spec.metric} {by_label.loc[winner.label, 'val_acc_mean']:.4f} ± "
             f"{by_label.loc[winner.label, 'val_acc_std']:.4f} over {len(seeds)} fresh seeds, {winner.value:.4f} in the "
             f"search); against {suite.baseline}: {by_label.loc[winner.label, 'verdict']}; test accuracy after "
             f"selection {test['mean']:.4f} ± {test['std']:.4f}")
    return result


def _runs_of(children: pd.DataFrame, label: str) -> pd.DataFrame:
    runs = children[(children[f"tags.{tracking.TAG_LABEL}"] == label) & (children["status"] == "FINISHED")]
    return runs.sort_values(f"tags.{tracking.TAG_SEED}", key=lambda s: s.astype(int))


def _register(spec: StudySpec, winner: Candidate, runs: pd.DataFrame, echo: Callable[[str], None]) -> str:
    """The winner's first-seed confirmation run becomes the champion (no selection among its seeds)."""
    run_id = str(runs["run_id"].iloc[0])
    tracking.set_tags(run_id, {TAG_PROPOSED_BY: str(winner.trial), f"{TAG_PROPOSED_BY}_run": winner.run_id or ""})
    name = f"{spec.name}-best"
    version = tracking.register_champion(run_id, name)
    echo(f"registered {winner.label}'s confirmation run {run_id[:8]} as model {name!r} version {version} "
         f"(alias @{tracking.CHAMPION_ALIAS})")
    return run_id


def _log(spec: StudySpec, result: Confirmation) -> None:
    record = {
        "confirmation_run_id": result.parent_run_id,
        "seeds": result.seeds,
        "baseline": result.baseline,
        "margin": spec.confirm.margin,
        "candidates": [dataclasses.asdict(c) for c in result.candidates],
        "winner": result.winner.label if result.winner else None,
        "winner_test": result.test,
        "champion_run_id": result.champion_run_id,
        "beats_baseline": result.beats_baseline,
    }
    text = json.dumps(record, indent=2)
    tracking.log_artifact_text(tracking.get_run(result.parent_run_id).data.tags[tracking.PARENT_TAG], ARTIFACT, text)
    tracking.log_artifact_text(result.parent_run_id, ARTIFACT, text)
