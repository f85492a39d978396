"""The search's winner, confirmed: its top configs and a baseline trained again over fresh seeds, on a
fresh split.

The best of many noisy one-seed trials is biased upwards (the winner's curse). After the search,
the ``top`` distinct configs by val and the study's baseline are written as a suite
(``optuna/confirm/<study>.toml``, also logged) and run through the suite machinery: the same queue,
workers, storage, resume and checkpoints, with one parent run nested under the study's parent.

A fresh split, not only fresh seeds: the trials were selected on the val images that the study's
``split_seed`` holds out of train (fold ``val_fold``, 0 by default, of that seed's order), and measuring
the configs again on those images would carry the selection into the confirmation. Every confirmation
run (the baseline's too, so the comparison is on the same images) holds out the next fold of the same
order, ``StudySpec.confirmation_val_fold``: images disjoint from the trials' val, none of which the
search selected on; recorded in the suite file and in ``confirmation.json``. Val being a hold-out of
train, the confirmation trains on the trials' val images and not on its own.

The suite's verdicts judge each config against the baseline, Holm-corrected over the suite's
comparisons; the configs are also judged against the confirmed winner, the config with the best val
mean over the fresh seeds. The champion (``<study>-best@champion``) is a confirmation run of the
winner, linked to its trial, and only when the winner's verdict against the baseline is better or
equivalent: a winner worse than, undecided against or not judged against the baseline registers
nothing, says so, and leaves the alias where it was.

Test is touched once per study: trials and confirmation runs never evaluate it; after the winner is
chosen on val, its confirmation runs' logged models are evaluated on test, and the study's parent run
records which config that was (``bench.test_measured``). A later confirmation of the same study (a
re-run with more trials) reports that figure and does not measure test again, whichever config wins
then, unless asked to (``retest``: ``bench search --retest``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import tomli_w
from optuna.trial import TrialState

from .. import tracking
from ..runner import evaluate_test_after_selection
from ..suites import Suite, SuiteError, SuiteFailed, load_suite, run_suite, run_suite_workers
from ..suites.spec import settings_of
from ..suites.summary import pair_outcomes, per_seed
from ..verdicts import BETTER, EQUIVALENT, IDENTICAL, UNDECIDED, UNJUDGED, WORSE, against_baseline
from ..workqueue import is_database
from .spec import SearchError, StudySpec

CONFIRM_DIR = Path("optuna") / "confirm"
PROFILE = "confirm"
ARTIFACT = "confirmation.json"
WIDTH = 100  # every line the search prints fits a terminal this wide
TAG_CONFIRMS = "bench.confirms"  # on the confirmation's parent: the study it confirms
TAG_PROPOSED_BY = "bench.proposed_by_trial"  # on the champion's run: the trial that proposed its config
TAG_TEST_AFTER = "bench.test_after_selection"  # on runs whose test accuracy was measured after selection
# On the study's parent: the one config measured on test (JSON: trial, label, mean, std, n, run ids,
# confirmation run, times) and, readable in the UI, its trial number.
TAG_TEST_MEASURED = "bench.test_measured"
TAG_TEST_TRIAL = "bench.test_measured_trial"
CHAMPION_KINDS = (BETTER, EQUIVALENT, IDENTICAL)  # the verdicts against the baseline that make a champion
AGAINST = {WORSE: "worse than", UNDECIDED: "undecided against", UNJUDGED: "not judged against"}


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
    test: dict[str, Any]  # the study's one test measurement after selection: mean, std, n (and trial, label)
    champion_run_id: str | None = None
    beats_baseline: bool = False
    split_seed: int | None = None  # the confirmation's hold-out of val: this seed's order ...
    trials_split_seed: int | None = None  # the hold-out the trials were selected on
    val_fold: int | None = None  # ... and this block of it
    trials_val_fold: int | None = None
    verdict_kind: str = ""  # the winner's against the baseline
    champion_note: str = ""  # why no champion, when none was registered
    test_measured_now: bool = False  # False: ``test`` is an earlier confirmation's (or another process's)
    measure: str = "val_acc"  # what the verdicts compared (the confirmation suite's measure) ...
    design: str = "unpaired"  # ... and how (seed by seed, or Welch)

    @property
    def holds_against_baseline(self) -> bool:
        """Whether the winner may be the champion: better than or equivalent to the baseline."""
        return self.verdict_kind in CHAMPION_KINDS


def wrapped(text: str) -> list[str]:
    """``text`` as lines of at most ``WIDTH`` columns, continuations indented."""
    return textwrap.wrap(text, WIDTH, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False) or [""]


def say(echo: Callable[[str], None], text: str) -> None:
    for line in wrapped(text):
        echo(line)


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
    """The confirmation as a suite file: one row per candidate at its trial's config, and the baseline,
    all on the confirmation's split."""
    assert spec.confirm is not None
    split, fold = spec.split_seed, spec.confirmation_val_fold
    rows = []
    for candidate in chosen:
        config = spec.config(candidate.params)
        rows.append({"label": candidate.label, "variant": config.variant, **_settings(config, split, fold),
                     "note": f"proposed by trial {candidate.trial} ({spec.metric} {candidate.value:.4f} in the search)"})
    baseline = spec.baseline_config()
    rows.append({"label": spec.confirm.baseline_label, "variant": baseline.variant, **_settings(baseline, split, fold),
                 "note": "the config to beat"})
    document = {
        "suite": {"name": f"{spec.name} confirmation", "dataset": spec.dataset, "seeds": seeds,
                  "baseline": spec.confirm.baseline_label, "margin": spec.confirm.margin,
                  "experiment": spec.experiment,
                  "description": f"The top {len(chosen)} configs of Optuna study {spec.name} and its baseline, trained "
                                 f"again over fresh seeds {seeds} on a fresh split (val fold {fold} of split_seed "
                                 f"{split}; the trials were selected on fold {spec.val_fold})."},
        "profiles": {PROFILE: {"description": f"{spec.epochs} epochs, as the study's trials", "epochs": spec.epochs}},
        "variants": rows,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.toml"
    path.write_text(f"# Written by bench search from study {spec.name}: the confirmation of its winner.\n"
                    f"# val_fold {fold} of split_seed {split}, not the trials' fold {spec.val_fold}: val images "
                    "disjoint from those the trials were selected on.\n" + tomli_w.dumps(document))
    return load_suite(path).at_profile(PROFILE)


def _settings(config, split_seed: int, val_fold: int) -> dict[str, Any]:
    """A resolved config's training settings as a suite row sets them, on the confirmation's split
    (evaluate_test off: test waits for the selection)."""
    flat = settings_of(config)
    keep = ("batch_size", "eval_batch_size", "optimizer", "lr", "momentum", "weight_decay", "l2", "val_fraction",
            "val_from_test", "max_train_samples", "amp")
    out = {k: flat[k] for k in keep if flat.get(k) is not None}
    out["split_seed"], out["val_fold"] = split_seed, val_fold
    out["evaluate_test"] = False
    if config.knobs:
        out["knobs"] = dict(config.knobs)
    return out


def measured_on_test(study_parent_id: str) -> dict[str, Any] | None:
    """The study's one test measurement after selection, as its parent run records it; None if none yet."""
    text = tracking.get_run(study_parent_id).data.tags.get(TAG_TEST_MEASURED)
    return json.loads(text) if text else None


def run_confirmation(
    spec: StudySpec, study: optuna.Study, parent_id: str, storage: str, *, seeds: int | None = None,
    workers: int = 1, threads: int | None = None, register: bool = True, retest: bool = False,
    claim: Callable[[str], bool] = lambda key: True, echo: Callable[[str], None] = print,
) -> Confirmation:
    """Train the candidates and the baseline over fresh seeds on a fresh split (resuming what a previous
    attempt left), pick the winner on val, measure its test unless the study's test was measured
    already (``retest``: measure it again), and register it as the champion when it is better than
    or equivalent to the baseline.

    ``claim(key)``: whether this process is the one (of several machines finishing the same
    confirmation) that measures the winner's test and registers it."""
    assert spec.confirm is not None
    chosen = candidates(study, spec, spec.confirm.top)
    if not chosen:
        raise SearchError(f"study {spec.name} has no complete trial to confirm")
    # Read before the confirmation trains, so that every machine finishing it asks for the same claim.
    previous = measured_on_test(parent_id)
    seed_list = fresh_seeds(spec, seeds or spec.confirm.seeds)
    suite = write_suite(spec, chosen, seed_list)
    say(echo, f"confirming {', '.join(c.label for c in chosen)} and {spec.confirm.baseline_label} over fresh seeds "
              f"{seed_list}, on a fresh split (val fold {spec.confirmation_val_fold} of split_seed {spec.split_seed}; "
              f"the trials were selected on fold {spec.val_fold})")
    common = dict(log_models=True, progress=False, echo=echo, nested_under=parent_id,
                  overrides={"threads": threads} if threads else None)
    if workers > 1 or is_database(storage):
        def train(**kwargs):
            return run_suite_workers(suite, PROFILE, workers=workers, storage=storage if is_database(storage) else None,
                                     **common, **kwargs)
    else:
        def train(**kwargs):
            return run_suite(suite, PROFILE, **common, **kwargs)
    try:
        outcome = resuming(train, echo)
        confirm_id, summary = outcome.parent_run_id, outcome.summary
    except SuiteFailed as exc:
        # A run that failed (a NaN at a fresh seed) is a finding about its config, not a reason to stop:
        # its row is listed with the failure and not judged, and the others are judged as usual. A re-run
        # resumes this confirmation, whose judged runs are final, and ends here again.
        say(echo, f"the confirmation ended with runs that did not finish ({exc}); their configs are not judged")
        confirm_id, summary = exc.parent_run_id, exc.summary
    tracking.set_tags(confirm_id, {TAG_CONFIRMS: spec.name})
    judge = _Judge(spec, suite, chosen, seed_list, confirm_id, summary, parent_id, previous,
                   register, retest, claim, echo)
    return judge.run()


def resuming(train: Callable[..., Any], echo: Callable[[str], None]) -> Any:
    """``train(resume=True)``: the study's latest confirmation continued; when its runs were trained
    under other settings (a confirmation from before fresh splits, or a [confirm] baseline edited
    since), a new confirmation instead, nested under the same study."""
    try:
        return train(resume=True)
    except SuiteError as exc:
        say(echo, f"not resuming the earlier confirmation, trained under other settings ({exc}); starting a new one")
        return train(resume=False)


@dataclasses.dataclass
class _Judge:
    """Picks the winner on val, then: its test (once per study), its champion (if it holds against the
    baseline), the record and the lines that say what happened."""

    spec: StudySpec
    suite: Suite
    chosen: list[Candidate]
    seeds: list[int]
    confirm_id: str
    summary: pd.DataFrame
    study_parent_id: str
    previous: dict[str, Any] | None
    register: bool
    retest: bool
    claim: Callable[[str], bool]
    echo: Callable[[str], None]

    def run(self) -> Confirmation:
        spec, by_label = self.spec, self.summary.set_index("label")
        # Ranked by what the verdicts compare (the suite's measure), so the winner is judged on what chose it.
        means = {c.label: float(by_label.loc[c.label, "measure_mean"])
                 for c in self.chosen if c.label in by_label.index}
        # A row without a finite mean (no measured run) cannot win; a row with runs that failed or diverged
        # (not judged) comes after every judged one, so it never takes the place of a config that holds;
        # ties go to the earlier trial.
        judged = {c.label: int(by_label.loc[c.label, "failed"] + by_label.loc[c.label, "diverged"]
                               + by_label.loc[c.label, "unfinished"]) == 0 for c in self.chosen if c.label in means}
        ranked = sorted((c for c in self.chosen if c.label in means and math.isfinite(means[c.label])),
                        key=lambda c: (not judged[c.label], -means[c.label], c.trial))
        result = Confirmation(self.confirm_id, self.chosen, self.suite.baseline, self.seeds, self.summary,
                              pd.DataFrame(), ranked[0] if ranked else None, {},
                              split_seed=spec.split_seed, trials_split_seed=spec.split_seed,
                              val_fold=spec.confirmation_val_fold, trials_val_fold=spec.val_fold,
                              measure=self.suite.measure, design=self.suite.design)
        if result.winner is None:
            result.champion_note = "no champion: no candidate has a finished confirmation run with a finite val"
            say(self.echo, result.champion_note)
            _log(spec, result, self.study_parent_id)
            return result
        winner, row = result.winner, by_label.loc[result.winner.label]
        kind = row["verdict_kind"] if isinstance(row["verdict_kind"], str) else UNJUDGED
        result.verdict_kind, result.beats_baseline = kind, kind == BETTER
        children = tracking.child_runs(self.confirm_id)
        outcomes = pair_outcomes(children)
        values = {c.label: per_seed(outcomes, c.label, self.suite.measure) for c in ranked}
        result.versus_winner = against_baseline(values, winner.label, margin=self.suite.margin,
                                                pair=self.suite.design == "paired")
        say(self.echo, f"confirmed winner: {winner.label}, {spec.metric} {row['val_acc_mean']:.4f} ± "
                       f"{row['val_acc_std']:.4f} over {len(self.seeds)} fresh seeds ({winner.value:.4f} in the "
                       f"search; the verdicts' {self.suite.measure} {row['measure_mean']:.4f}); against "
                       f"{self.suite.baseline}: {row['verdict']}{_diff(row)}")
        mine = self.claim(self._claim_key(result))
        self._test(result, children, mine)
        self._champion(result, row, children, mine)
        _log(spec, result, self.study_parent_id)
        return result

    def _claim_key(self, result: Confirmation) -> str:
        """What this process would leave done: test measured how many times, a champion or not. Machines
        finishing the same confirmation ask the same key and one of them acts; a later command that has
        nothing new to do asks the key its predecessor set, and acts neither (``claim`` answers False to
        the key it last said True to). Only the study's record, read before the confirmation trained,
        goes in: it is the same for every machine."""
        times = int(self.previous["times"]) if self.previous else 0
        if self.previous is None or self.retest:
            times += 1
        champion = "yes" if result.holds_against_baseline and self.register else "no"
        return f"{self.confirm_id}:{result.winner.label}:test#{times}:champion={champion}"

    def _test(self, result: Confirmation, children: pd.DataFrame, mine: bool) -> None:
        winner = result.winner
        earlier = self.previous or _measured_in(self.study_parent_id, self.spec.name, self.chosen)
        if earlier and not self.retest:
            result.test = earlier
            if mine and self.previous is None:  # found on the runs only: record it where later runs look
                _record_test(self.study_parent_id, earlier)
            now = "" if earlier["trial"] == winner.trial else f"; the winner now, {winner.label}, is not measured"
            say(self.echo, f"test was already measured for {earlier['label']} ({_test_text(earlier)}): test is "
                           f"touched once per study{now} (--retest measures it again)")
            return
        if not mine:
            runs = _runs_of(tracking.child_runs(self.confirm_id), winner.label)
            accs = runs["metrics.test_acc"].dropna().astype(float).tolist() if "metrics.test_acc" in runs else []
            result.test = _test_record(winner, accs, runs, self.confirm_id, times=0)
            say(self.echo, f"the confirmed winner {winner.label} is measured on test by another process")
            return
        runs = _runs_of(children, winner.label)
        config = self.suite.plan(PROFILE, seeds=self.seeds[:1], rows=[winner.label])[0][1]
        accs = [evaluate_test_after_selection(run_id, config, TAG_TEST_AFTER) for run_id in runs["run_id"]]
        times = (int(earlier.get("times", 1)) if earlier else 0) + 1
        result.test, result.test_measured_now = _test_record(winner, accs, runs, self.confirm_id, times), True
        _record_test(self.study_parent_id, result.test)
        again = f" (measurement {times} of this study's test: --retest)" if times > 1 else ""
        say(self.echo, f"test accuracy of {winner.label} after selection: {_test_text(result.test)}{again}")

    def _champion(self, result: Confirmation, row: pd.Series, children: pd.DataFrame, mine: bool) -> None:
        winner, kind = result.winner, result.verdict_kind
        runs = _runs_of(children, winner.label)
        if not result.holds_against_baseline:
            result.champion_note = (
                f"no champion: the confirmed winner {winner.label} is {AGAINST.get(kind, kind)} the baseline "
                f"{self.suite.baseline} ({row['verdict']}{_diff(row)}); nothing registered, the alias "
                f"@{tracking.CHAMPION_ALIAS} stays where it was")
            say(self.echo, result.champion_note)
        elif not self.register:
            result.champion_note = "no champion registered (--no-register)"
            say(self.echo, result.champion_note)
        elif mine:
            result.champion_run_id = _register(self.spec, winner, runs, self.echo)
        else:
            found = tracking.registered_model(f"{self.spec.name}-best", set(runs["run_id"]))
            if found and tracking.CHAMPION_ALIAS in found["aliases"]:
                result.champion_run_id = found["run_id"]
                say(self.echo, f"champion: {winner.label}'s confirmation run {found['run_id'][:8]} is model "
                               f"{found['name']!r} version {found['version']} already")
            else:
                say(self.echo, f"the confirmed winner {winner.label} is registered by another process")


def _record_test(study_parent_id: str, test: dict[str, Any]) -> None:
    tracking.set_tags(study_parent_id, {TAG_TEST_MEASURED: json.dumps(test), TAG_TEST_TRIAL: str(test["trial"])})


def _diff(row: pd.Series) -> str:
    diff = row.get("baseline_diff")
    return f", {diff * 100:+.2f} pt" if isinstance(diff, float) and math.isfinite(diff) else ""


def _test_record(winner: Candidate, accs: list[float], runs: pd.DataFrame, confirm_id: str,
                 times: int) -> dict[str, Any]:
    series = pd.Series(accs, dtype=float)
    return {"trial": winner.trial, "label": winner.label, "mean": float(series.mean()),
            "std": float(series.std(ddof=1)), "n": len(accs), "run_ids": [str(r) for r in runs["run_id"]],
            "confirmation_run_id": confirm_id, "times": times}


def _test_text(test: dict[str, Any]) -> str:
    return f"{test['mean']:.4f} ± {test['std']:.4f} over {test['n']} runs" if test.get("n") else "not measured"


def _measured_in(study_parent_id: str, study: str, chosen: list[Candidate]) -> dict[str, Any] | None:
    """A test measurement the study's parent does not record (a process killed between measuring and
    recording, or a confirmation from before the record existed), found on its confirmations' runs."""
    confirms = f"tags.{TAG_CONFIRMS}"
    study_runs = tracking.child_runs(study_parent_id)
    if study_runs.empty or confirms not in study_runs:
        return None
    for confirm_id in study_runs[study_runs[confirms] == study].sort_values("start_time")["run_id"]:
        found = _measured_under(tracking.child_runs(confirm_id), chosen)
        if found:
            return found
    return None


def _measured_under(children: pd.DataFrame, chosen: list[Candidate]) -> dict[str, Any] | None:
    tag = f"tags.{TAG_TEST_AFTER}"
    if children.empty or tag not in children or "metrics.test_acc" not in children:
        return None
    measured = children[(children[tag] == "true") & children["metrics.test_acc"].notna()]
    if measured.empty:
        return None
    label = measured[f"tags.{tracking.TAG_LABEL}"].iloc[0]
    found = next((c for c in chosen if c.label == label), None)
    trial = found.trial if found else int(label.rsplit(" ", 1)[-1]) if label.startswith("trial ") else -1
    runs = measured[measured[f"tags.{tracking.TAG_LABEL}"] == label]
    winner = Candidate(label, trial, {}, math.nan, None)
    return _test_record(winner, runs["metrics.test_acc"].astype(float).tolist(), runs,
                        str(runs[f"tags.{tracking.PARENT_TAG}"].iloc[0]), times=1)


def _runs_of(children: pd.DataFrame, label: str) -> pd.DataFrame:
    if children.empty:
        return children
    runs = children[(children[f"tags.{tracking.TAG_LABEL}"] == label) & (children["status"] == "FINISHED")]
    return runs.sort_values(f"tags.{tracking.TAG_SEED}", key=lambda s: s.astype(int))


def _register(spec: StudySpec, winner: Candidate, runs: pd.DataFrame, echo: Callable[[str], None]) -> str:
    """The winner's first-seed confirmation run becomes the champion (no selection among its seeds)."""
    run_id = str(runs["run_id"].iloc[0])
    tracking.set_tags(run_id, {TAG_PROPOSED_BY: str(winner.trial), f"{TAG_PROPOSED_BY}_run": winner.run_id or ""})
    name = f"{spec.name}-best"
    version = tracking.register_champion(run_id, name)
    say(echo, f"champion: {winner.label}'s confirmation run {run_id[:8]} is model {name!r} version {version} "
              f"(alias @{tracking.CHAMPION_ALIAS})")
    return run_id


def _log(spec: StudySpec, result: Confirmation, study_parent_id: str) -> None:
    record = {
        "confirmation_run_id": result.parent_run_id,
        "seeds": result.seeds,
        "split_seed": result.split_seed,
        "trials_split_seed": result.trials_split_seed,
        "val_fold": result.val_fold,
        "trials_val_fold": result.trials_val_fold,
        "baseline": result.baseline,
        "margin": spec.confirm.margin,
        "candidates": [dataclasses.asdict(c) for c in result.candidates],
        "winner": result.winner.label if result.winner else None,
        "winner_verdict_kind": result.verdict_kind,
        "winner_test": result.test,
        "test_measured_now": result.test_measured_now,
        "champion_run_id": result.champion_run_id,
        "champion_note": result.champion_note,
        "beats_baseline": result.beats_baseline,
        # The verdicts as the confirmation decided them, so a report shows them rather than judging again.
        "measure": result.measure, "design": result.design,
        "versus_winner": {} if result.versus_winner.empty else
        {str(r["label"]): str(r["verdict"]) for _, r in result.versus_winner.iterrows()
         if result.winner is None or r["label"] != result.winner.label},
    }
    text = json.dumps(record, indent=2)
    tracking.log_artifact_text(study_parent_id, ARTIFACT, text)
    tracking.log_artifact_text(result.parent_run_id, ARTIFACT, text)
