"""A suite judged again from its learning curves alone (``bench judge``): numbers in, verdicts out."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from bench.cli import judge as judge_cli
from bench.cli import main
from bench.suites.rejudge import RejudgeError, rejudge, run_measures
from bench.suites.spec import DESIGNS, MEASURES
from bench.verdicts import against_baseline

EPOCHS = 6


def curves_of(effects: dict[str, float], seeds: int = 8, shared: float = 0.02, own: float = 0.002,
              last_step: float = 0.0, rng_seed: int = 0) -> pd.DataFrame:
    """A curves table as a suite writes it: every row shares each seed's luck (sd ``shared``) and adds
    its own (sd ``own``) and its effect; the last epoch of every run also jumps by up to ``last_step``."""
    rng = np.random.default_rng(rng_seed)
    luck = rng.normal(0, shared, seeds)
    records = []
    for row, effect in effects.items():
        for seed in range(seeds):
            level = 0.80 + effect + luck[seed] + rng.normal(0, own)
            for epoch in range(1, EPOCHS + 1):
                val = level - 0.05 / epoch + rng.normal(0, 0.001)
                if epoch == EPOCHS:
                    val += rng.uniform(-last_step, last_step)
                records.append({"row": row, "seed": seed, "run_id": f"{row}-{seed}", "state": "finished",
                                "epoch": epoch, "train_loss": 0.5, "train_acc": val + 0.05, "val_loss": 0.6,
                                "val_acc": val, "val_acc_ema": val + 0.001, "epoch_time_s": 1.0})
    curves = pd.DataFrame(records)
    curves["val_acc_last_k"] = curves.groupby(["row", "seed"])["val_acc"].transform(
        lambda s: s.rolling(3, min_periods=1).mean())
    curves["seconds"] = curves.groupby(["row", "seed"])["epoch_time_s"].cumsum()
    return curves


def test_each_measure_is_the_runs_last_epoch_and_last_k_can_be_recomputed():
    curves = curves_of({"base": 0.0, "b": 0.01})
    runs = run_measures(curves).set_index(["row", "seed"])
    last = curves[curves["epoch"] == EPOCHS].set_index(["row", "seed"])
    for measure in MEASURES:
        assert runs[measure].to_dict() == pytest.approx(last[measure].to_dict())
    wider = run_measures(curves, last_k=EPOCHS).set_index(["row", "seed"])["val_acc_last_k"]
    assert wider.to_dict() == pytest.approx(curves.groupby(["row", "seed"])["val_acc"].mean().to_dict())


def test_the_verdicts_are_the_suites_own_test_on_the_chosen_measure_and_design():
    curves = curves_of({"base": 0.0, "same": 0.0, "better": 0.02})
    runs = run_measures(curves)
    for design in DESIGNS:
        result = rejudge(curves, "base", measure="val_acc", design=design, margin=0.01).verdicts.set_index("row")
        values = {row: runs[runs["row"] == row].set_index("seed")["val_acc"] for row in ("base", "same", "better")}
        expected = against_baseline(values, "base", margin=0.01, pair=design == "paired").set_index("label")
        for row in ("same", "better"):
            for column in ("diff", "ci_low", "ci_high", "ci_level", "verdict"):
                assert result.loc[row, column] == pytest.approx(expected.loc[row, column]) if column != "verdict" \
                    else result.loc[row, column] == expected.loc[row, column]


def test_pairing_decides_what_welch_cannot_when_seeds_share_their_luck():
    curves = curves_of({"base": 0.0, "same": 0.0, "better": 0.02}, shared=0.03)
    paired = rejudge(curves, "base", measure="val_acc", design="paired").verdicts.set_index("row")
    welch = rejudge(curves, "base", measure="val_acc", design="unpaired").verdicts.set_index("row")
    assert paired.loc["better", "kind"] == "better" and paired.loc["same", "kind"] == "equivalent"
    assert welch.loc["better", "kind"] == "undecided" and welch.loc["same", "kind"] == "undecided"
    assert paired.loc["better", "rho"] > 0.9


def test_the_last_k_mean_decides_what_one_noisy_last_step_hides():
    curves = curves_of({"base": 0.0, "same": 0.0}, last_step=0.05)
    last = rejudge(curves, "base", measure="val_acc").verdicts.set_index("row")
    steady = rejudge(curves, "base", measure="val_acc_last_k", last_k=4).verdicts.set_index("row")
    spreads = rejudge(curves, "base").spreads.set_index(["row", "measure"])
    assert last.loc["same", "kind"] == "undecided" and steady.loc["same", "kind"] == "equivalent"
    assert spreads.loc[("same", "val_acc_last_k"), "sd"] < spreads.loc[("same", "val_acc"), "sd"]


def test_seeds_and_rows_can_be_chosen_and_a_failed_run_is_counted_not_dropped():
    curves = curves_of({"base": 0.0, "a": 0.0, "b": 0.01})
    three = rejudge(curves, "base", seeds=[0, 1, 2], rows=["a"]).verdicts.set_index("row")
    assert list(three.index) == ["base", "a"] and three.loc["a", "n"] == 3
    failed = curves.copy()
    failed.loc[(failed["row"] == "a") & (failed["seed"] == 4), "state"] = "failed"
    result = rejudge(failed, "base").verdicts.set_index("row")
    assert result.loc["a", "kind"] == "not judged" and "failed or diverged (1 of 8 runs)" in result.loc["a", "verdict"]
    assert result.loc["b", "kind"] != "not judged"
    # A run still going is no measurement: as in the suite, its row is not judged (--seeds picks finished ones).
    going = curves.copy()
    going.loc[(going["row"] == "a") & (going["seed"] == 4), "state"] = "unfinished"
    result = rejudge(going, "base").verdicts.set_index("row")
    assert result.loc["a", "n"] == 7 and result.loc["a", "runs"] == 8 and result.loc["a", "kind"] == "not judged"
    assert rejudge(going, "base", seeds=[0, 1, 2, 3, 5, 6, 7]).verdicts.set_index("row").loc["a", "kind"] != "not judged"


def test_a_studys_curves_are_judged_on_their_confirmation():
    confirmation = curves_of({"trial 3": 0.0, "net": 0.0}).assign(stage="confirmation")
    trials = curves_of({"trial 3": 0.05}, seeds=1).assign(stage="trial", state="COMPLETE")
    result = rejudge(pd.concat([trials, confirmation]), "net").verdicts.set_index("row")
    assert result.loc["trial 3", "n"] == 8 and result.loc["trial 3", "kind"] == "equivalent"
    with pytest.raises(RejudgeError, match="no confirmation runs"):
        rejudge(trials, "trial 3")


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": "nope"}, "row 'nope' is not in the curves; rows there: a, base"),
    ({"baseline": "base", "rows": ["zzz"]}, "row 'zzz' is not in the curves"),
    ({"baseline": "base", "seeds": [0, 99]}, r"seed\(s\) \[99\] are not in the curves"),
    ({"baseline": "base", "measure": "test_acc"}, "unknown measure 'test_acc'; accepted: val_acc, val_acc_last_k"),
    ({"baseline": "base", "margin": 1.0}, "margin 1.0 must be a fraction"),
    ({"baseline": "base", "last_k": 0}, "last_k 0 must be a number of epochs"),
])
def test_bad_input_is_refused_naming_the_value_and_what_is_accepted(kwargs, message):
    with pytest.raises(RejudgeError, match=message):
        rejudge(curves_of({"base": 0.0, "a": 0.0}), **kwargs)


def test_tables_the_suite_could_not_have_judged_are_refused():
    curves = curves_of({"base": 0.0, "a": 0.0})
    twice = pd.concat([curves, curves[curves["seed"] == 0].assign(run_id="again")])
    with pytest.raises(RejudgeError, match="one run per row and seed expected; more than one for a seed 0"):
        rejudge(twice, "base")
    no_ema = curves.assign(val_acc_ema=float("nan"))
    with pytest.raises(RejudgeError, match="finished runs without a value of val_acc_ema: a seed 0"):
        rejudge(no_ema, "base", measure="val_acc_ema")
    base_going = curves.assign(state=curves["state"].where(curves["row"] != "base", "unfinished"))
    with pytest.raises(RejudgeError, match="the baseline 'base' has no finished run"):
        rejudge(base_going, "base")


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue()


def test_the_command_reads_a_report_folder_finds_its_baseline_and_fits_100_columns(tmp_path):
    curves = curves_of({"net": 0.0, "net-l2": 0.0, "net-width": 0.02})
    curves.to_csv(tmp_path / "curves.csv", index=False)
    pd.DataFrame({"variant_row": ["net", "net-l2", "net-width"], "verdict_kind": ["baseline", "equivalent", "better"],
                  "measure": "val_acc", "design": "unpaired", "margin": 0.005}).to_csv(tmp_path / "summary.csv",
                                                                                      index=False)
    # By default, judged as the suite declared (its summary.csv): val after the last epoch, Welch, +-0.5 pt.
    code, text = run_cli(["judge", str(tmp_path), "--seeds", "0,1,2"])
    assert code == 0, text
    lines = text.splitlines()
    assert "baseline net; measure val_acc, design unpaired, margin 0.005" in lines[0]
    assert lines[2].startswith("net ") and "baseline" in lines[2]
    said = " ".join(text.split())
    assert "Welch's t-test" in said and "val accuracy after the last epoch" in said and "Judged once" in said
    assert "within ±0.5 pt" in said
    code, text = run_cli(["judge", str(tmp_path), "--design", "paired", "--margin", "0.01"])
    assert code == 0 and "design paired, margin 0.01" in text and "paired t-test" in " ".join(text.split())
    assert max(len(line) for line in lines) <= 100
    code, text = run_cli(["judge", str(tmp_path / "nowhere.csv")])
    assert code == 2 and "no curves table at" in text
    (tmp_path / "summary.csv").unlink()
    code, text = run_cli(["judge", str(tmp_path)])
    assert code == 2 and "pass --baseline ROW" in text
    code, text = run_cli(["judge", str(tmp_path), "--baseline", "net", "--seeds", "0,x"])
    assert code == 2 and "--seeds '0,x'" in text


def test_the_commands_choices_and_defaults_are_the_suites():
    from bench.suites.spec import DEFAULT_DESIGN, DEFAULT_MEASURE
    from bench.verdicts import DEFAULT_MARGIN

    assert judge_cli.MEASURES == tuple(MEASURES) and judge_cli.DESIGNS == DESIGNS
    assert judge_cli.DEFAULTS == {"measure": DEFAULT_MEASURE, "design": DEFAULT_DESIGN, "margin": DEFAULT_MARGIN}
