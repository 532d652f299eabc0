"""Split invariants: pairs never straddle, sizes within one pair of 70/10/20, ages alike, growth moves no one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.artifacts import UnusableInput
from common.constants import SPLITS
from common.profile import load_profile
from common.split import assign_split
from jobs.cli import main

PROFILE = load_profile("demo")
FRACTIONS = dict(zip(SPLITS, (0.7, 0.1, 0.2), strict=True))
BINS = list(PROFILE.split.age_bins)


def make_cohort(groups: list[tuple[str, int, int]], prefix: str = "P") -> pd.DataFrame:
    """groups: (kind, age, label) with kind 'pair' (age-matched case and control) or 'single'."""
    rows = []
    for number, (kind, age, label) in enumerate(groups):
        if kind == "pair":
            pair = f"{prefix}{number:04d}"
            rows.append({"patient_id": f"{pair}a", "pair_id": pair, "age": age, "label": 1})
            rows.append({"patient_id": f"{pair}b", "pair_id": pair, "age": age + (number % 3) - 1, "label": 0})
        else:
            rows.append({"patient_id": f"{prefix}{number:04d}s", "pair_id": "", "age": age, "label": label})
    return pd.DataFrame(rows, columns=["patient_id", "pair_id", "age", "label"])


group_lists = st.lists(
    st.tuples(st.sampled_from(["pair", "pair", "single"]), st.integers(35, 85), st.integers(0, 1)),
    min_size=1,
    max_size=90,
)


def groups_of(split: pd.DataFrame) -> pd.Series:
    return split["pair_id"].where(split["pair_id"] != "", "single:" + split["patient_id"])


def largest_group(split: pd.DataFrame) -> int:
    return int(groups_of(split).value_counts().max())


def assert_no_straddling(split: pd.DataFrame, cohort: pd.DataFrame) -> None:
    assert sorted(split["patient_id"]) == sorted(cohort["patient_id"])
    assert split["split"].isin(SPLITS).all()
    assert (split.groupby(groups_of(split))["split"].nunique() == 1).all()


def assert_within_one_group(split: pd.DataFrame, slack_groups: int = 1) -> None:
    """Counted independently here: |patients in s - f_s N| <= the largest group (one pair)."""
    n = len(split)
    for subset, fraction in FRACTIONS.items():
        assert abs((split["split"] == subset).sum() - fraction * n) <= slack_groups * largest_group(split) + 1e-9


def assert_strata_alike(split: pd.DataFrame, cohort: pd.DataFrame, rounds: int) -> None:
    """Each age stratum of groups gets each subset within two groups per growth round of its target
    (four for a cohort without pairs, whose walk visits each stratum once per label)."""
    stretches = 2 if (cohort["pair_id"] == "").all() else 1
    ages = cohort.set_index("patient_id")["age"]
    frame = split.assign(group=groups_of(split), age=split["patient_id"].map(ages))
    group_age = frame.groupby("group")["age"].mean()
    stratum = pd.Series(np.searchsorted(BINS, group_age, side="right"), index=group_age.index)
    frame["stratum"] = frame["group"].map(stratum)
    for _, members in frame.groupby("stratum"):
        for subset, fraction in FRACTIONS.items():
            deviation = (members["split"] == subset).sum() - fraction * len(members)
            assert abs(deviation) <= 2 * stretches * rounds * largest_group(split) + 1e-9


def split_of(cohort: pd.DataFrame, seed: int = 42, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    return assign_split(cohort, dataclasses.replace(PROFILE.split, seed=seed), previous)


@settings(max_examples=150, deadline=None)
@given(groups=group_lists, seed=st.integers(0, 2**31 - 1))
def test_invariants_hold_for_any_seed_and_size(groups, seed):
    cohort = make_cohort(groups)
    split = split_of(cohort, seed)
    assert_no_straddling(split, cohort)
    assert_within_one_group(split)
    assert_strata_alike(split, cohort, rounds=1)


@settings(max_examples=80, deadline=None)
@given(batches=st.lists(group_lists, min_size=2, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_growth_never_moves_an_existing_patient(batches, seed):
    cohort = make_cohort(batches[0], prefix="B0-")
    split = split_of(cohort, seed)
    for round_number, batch in enumerate(batches[1:], start=1):
        cohort = pd.concat([cohort, make_cohort(batch, prefix=f"B{round_number}-")], ignore_index=True)
        grown = split_of(cohort.sample(frac=1, random_state=round_number), seed, previous=split)
        before = split.set_index("patient_id")["split"]
        after = grown.set_index("patient_id")["split"]
        assert after.loc[before.index].equals(before)
        assert_no_straddling(grown, cohort)
        assert_within_one_group(grown)
        assert_strata_alike(grown, cohort, rounds=round_number + 1)
        split = grown


def test_deterministic_for_a_seed_whatever_the_row_order_and_seed_matters():
    rng = np.random.default_rng(0)
    cohort = make_cohort([("pair", int(a), 1) for a in rng.integers(40, 80, size=80)])
    first = split_of(cohort, seed=7).sort_values("patient_id", ignore_index=True)
    shuffled = split_of(cohort.sample(frac=1, random_state=3), seed=7).sort_values("patient_id", ignore_index=True)
    pd.testing.assert_frame_equal(first, shuffled)
    other = split_of(cohort, seed=8).sort_values("patient_id", ignore_index=True)
    assert (other["split"] != first["split"]).sum() > 10


def test_age_distributions_alike_on_a_realistic_cohort():
    """Where pure random assignment would scatter each stratum by several pairs, this stays within two."""
    rng = np.random.default_rng(1)
    cohort = make_cohort([("pair", int(a), 1) for a in rng.normal(57, 9, size=400).clip(36, 88)])
    split = split_of(cohort)
    assert (split.groupby("split")["age"].mean() - split["age"].mean()).abs().max() < 1.0
    assert (split.groupby("split")["label"].mean() == 0.5).all()  # pairs carry one case and one control
    for _, members in split.groupby("age_stratum"):
        for subset, fraction in FRACTIONS.items():
            assert abs((members["split"] == subset).sum() - fraction * len(members)) <= 2 * 2


def test_newcomer_joins_a_placed_partner_and_straddling_previous_is_refused():
    cohort = make_cohort([("pair", 50 + i, 1) for i in range(10)])
    split = split_of(cohort)
    lonely = cohort[cohort["patient_id"] != "P0003b"]
    first = split_of(lonely)
    partner_subset = first.set_index("patient_id").loc["P0003a", "split"]
    completed = split_of(cohort, previous=first).set_index("patient_id")
    assert completed.loc["P0003b", "split"] == partner_subset

    broken = split.copy()
    member = broken.index[broken["patient_id"] == "P0000a"][0]
    broken.loc[member, "split"] = next(s for s in SPLITS if s != broken.loc[member, "split"])
    with pytest.raises(UnusableInput, match="pair:P0000"):
        split_of(cohort, previous=broken)


def write_cohort(path, cohort: pd.DataFrame) -> None:
    sides = np.where(cohort["label"] == 1, "L", "")
    cohort.assign(cancer_laterality=sides).to_csv(path, index=False)


def test_cli_writes_split_and_keeps_it_with_previous(tmp_path):
    cohort = make_cohort([("pair", 45 + i, 1) for i in range(20)] + [("single", 0, 1)])
    cohort.loc[cohort.index[-1], "age"] = None  # the cohort contract allows an unknown age
    path = tmp_path / "cohort.csv"
    write_cohort(path, cohort)
    out = tmp_path / "split"
    assert main(["split", "--cohort", str(path), "--out", str(out), "--profile", "ci", "--seed", "3"]) == 0
    split = pd.read_csv(out / "split.csv", keep_default_na=False)
    assert list(split.columns) == ["patient_id", "pair_id", "age", "label", "age_stratum", "split"]
    assert sorted(split["patient_id"]) == sorted(cohort["patient_id"])
    assert set(split.loc[pd.to_numeric(split["age"]) == 45, "age_stratum"]) == {"0-50"}
    assert split.loc[split["patient_id"] == "P0020s", "age_stratum"].item() == "unknown"
    marker = json.loads((out / "_SUCCESS.json").read_text())
    assert marker["settings"]["seed"] == 3
    assert sum(marker["counts"][f"{s}_patients"] for s in SPLITS) == len(cohort)

    grown = pd.concat([cohort, make_cohort([("pair", 70, 1), ("single", 55, 0)], prefix="N")], ignore_index=True)
    write_cohort(path, grown)
    regrown = tmp_path / "regrown"
    previous = ["--previous", str(out / "split.csv"), "--seed", "99"]
    assert main(["split", "--cohort", str(path), "--out", str(regrown), "--profile", "ci", *previous]) == 0
    after = pd.read_csv(regrown / "split.csv", keep_default_na=False)
    assert len(after) == len(grown)
    pd.testing.assert_frame_equal(after[after["patient_id"].isin(split["patient_id"])], split)
    assert json.loads((regrown / "_SUCCESS.json").read_text())["counts"]["kept_from_previous"] == len(cohort)


def test_cli_refuses_a_broken_cohort_without_writing(tmp_path, capsys):
    path = tmp_path / "cohort.csv"
    pd.DataFrame({"patient_id": ["a"], "label": [1]}).to_csv(path, index=False)
    assert main(["split", "--cohort", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "missing columns: age" in capsys.readouterr().err
    assert not (tmp_path / "out" / "split.csv").exists()


def test_an_unpaired_cohort_is_split_by_label_first_so_validation_has_cases():
    """Public datasets have no case-control pairs; with age-major order a 24-patient cohort's two validation
    patients could both be controls, and training needs both classes in validation."""
    rng = np.random.default_rng(3)
    for seed in range(20):
        cohort = make_cohort([("single", int(a), i % 2) for i, a in enumerate(rng.normal(60, 9, size=24))])
        split = split_of(cohort, seed)
        for subset, fraction in FRACTIONS.items():
            members = split[split["split"] == subset]
            assert abs(members["label"].sum() - fraction * 12) <= 1, (seed, subset)
            assert 0 < members["label"].sum() < len(members), (seed, subset)
        assert_strata_alike(split, cohort, rounds=1)
