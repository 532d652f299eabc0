"""Patient-level train/validation/test split: stratified by age, pair-preserving, stable under growth.

Why this scheme. The split has to satisfy four things at once: (1) both members of a matched
case-control pair, and so all their images, land in one subset; (2) subset sizes stay within one
pair of 70/10/20 for any cohort size; (3) age (and label) are spread alike over the subsets; (4) a
later, larger cohort never moves a patient already placed, because scheduled retraining relies on a
locked test set. A keyed hash of the pair id alone gives (1) and (4) but not (2): its subset sizes
are binomial, so a 20-pair cohort is often several pairs off. Any rank-based rule over the whole
cohort gives (2) but not (4): a newcomer shifts the ranks of everyone after it. So assignments are
persisted (`previous`) and only newcomers are placed:

* Unit = group: a pair (`pair_id`) or an unpaired patient; its age is the members' mean age and its
  stratum the profile's `age_bins` interval [lo, hi) holding that age (pairs are age-matched);
  groups without a known age (the cohort allows an empty age) or outside the bins form an `unknown` stratum.
* Newcomer groups are ordered by (age stratum, share of cases, keyed blake2b hash of the group id
  with the seed as key). The hash makes the order within a stratum - and so which pair goes where -
  a pseudo-random function of the seed, independent of the cohort's row order.
* A cohort without any pair (public datasets) is ordered label first: (case or control, age stratum, hash).
  Pairs carry one case and one control each, so a paired cohort is label-balanced by construction; an
  unpaired one is not, and age-major order can leave a small validation subset without a single case,
  which training cannot use. Label-major order makes each subset's cases within one of its target; each
  age stratum is then two stretches of the walk (one per label), so its bound doubles.
* Walking that order, each group goes to the subset with the largest deficit f_s * (N + g) - c_s
  (f_s target fraction, c_s patients already in subset s, N patients placed so far including the
  persisted ones, g the group's size); ties go to the larger subset (train, then test, then validation).

Consequences. Every placement picks a subset that is short of its target once the group is counted,
so no subset ever falls a group's size below its target; the sum of deviations is zero, which keeps
the others close too. Measured bound (and the property test): |c_s - f_s N| <= the largest group
size, i.e. within one pair, for every prefix of the walk - so also after any number of growth rounds.
Because each age stratum is a contiguous stretch of the walk, a stratum's per-subset count differs
from its target by at most the difference of two such prefix deviations: within two pairs per
growth round (systematic sampling's implicit stratification). Persisted patients keep their subset
whatever the new settings; withdrawn patients simply disappear (that can loosen the bound, never
moves anyone). A newcomer whose pair is already placed joins its partner's subset.

Stability needs the earlier split: `mammo split --previous OLD/split.csv` (scheduled retraining).
Without it a grown cohort is split afresh, deterministically for the seed, but patients may move.
The `age_stratum` column is the stratum of the patient's group, i.e. the one the split balanced.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from common.artifacts import UnusableInput
from common.constants import SPLITS
from common.profile import SplitSettings

COLUMNS = ["patient_id", "pair_id", "age", "label", "age_stratum", "split"]
UNKNOWN_STRATUM = "unknown"


def stratum_labels(age_bins: tuple[float, ...]) -> list[str]:
    return [f"{_fmt(lo)}-{_fmt(hi)}" for lo, hi in zip(age_bins, age_bins[1:], strict=False)]


def age_stratum_index(age: float, age_bins: tuple[float, ...]) -> int:
    """Index of the [lo, hi) interval holding `age`; -1 when unknown or outside the bins."""
    if age is None or not np.isfinite(age):
        return -1
    position = int(np.searchsorted(age_bins, age, side="right")) - 1
    return position if 0 <= position < len(age_bins) - 1 else -1


def group_hash(seed: int, group_id: str) -> float:
    """Uniform number in [0, 1) from blake2b keyed with the seed: a stable, seed-dependent order."""
    digest = hashlib.blake2b(group_id.encode("utf-8"), digest_size=8, key=str(seed).encode("utf-8")).digest()
    return int.from_bytes(digest, "big") / 2**64


def read_previous(path: str | Path) -> pd.DataFrame:
    """A former split.csv whose assignments are to be kept."""
    try:
        previous = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UnusableInput(f"cannot read previous split {path}: {error}") from error
    if not {"patient_id", "split"} <= set(previous.columns):
        raise UnusableInput(f"previous split {path} needs columns patient_id and split")
    unknown = sorted(set(previous["split"]) - set(SPLITS))
    if unknown:
        raise UnusableInput(f"previous split {path} has unknown subset(s) {', '.join(unknown)}")
    if previous["patient_id"].duplicated().any():
        raise UnusableInput(f"previous split {path} lists a patient more than once")
    return previous


def assign_split(cohort: pd.DataFrame, settings: SplitSettings, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """split.csv rows for `cohort` (patient_id, pair_id, age, label); patients in `previous` keep their subset."""
    frame = cohort[["patient_id", "pair_id", "age", "label"]].copy()
    frame["pair_id"] = frame["pair_id"].fillna("").astype(str)
    frame["group"] = np.where(frame["pair_id"] != "", "pair:" + frame["pair_id"], "patient:" + frame["patient_id"])
    kept = {} if previous is None else dict(zip(previous["patient_id"], previous["split"], strict=True))
    labels = stratum_labels(settings.age_bins)

    groups = frame.groupby("group", sort=True).agg(
        size=("patient_id", "size"), age=("age", "mean"), cases=("label", "mean")
    )
    groups["stratum"] = [age_stratum_index(age, settings.age_bins) for age in groups["age"]]
    groups["subset"] = ""
    for group_id, members in frame.groupby("group", sort=True)["patient_id"]:
        earlier = {kept[p] for p in members if p in kept}
        if len(earlier) > 1:
            raise UnusableInput(f"previous split puts members of {group_id} in {' and '.join(sorted(earlier))}")
        if earlier:
            groups.loc[group_id, "subset"] = earlier.pop()

    placed = groups[groups["subset"] != ""]
    counts = np.array([placed.loc[placed["subset"] == s, "size"].sum() for s in SPLITS], dtype=float)
    newcomers = groups[groups["subset"] == ""].copy()
    # Unknown ages (stratum -1) sort last, as their own stratum.
    newcomers["order_stratum"] = newcomers["stratum"].where(newcomers["stratum"] >= 0, len(labels))
    newcomers["hash"] = [group_hash(settings.seed, g) for g in newcomers.index]
    unpaired = bool((frame["pair_id"] == "").all())
    order = ["cases", "order_stratum", "hash"] if unpaired else ["order_stratum", "cases", "hash"]
    newcomers = newcomers.sort_values(order, kind="mergesort")
    fractions = np.asarray(settings.fractions)
    preference = np.argsort(-fractions, kind="stable")  # ties go to the larger subset
    for group_id, size in newcomers["size"].items():
        deficit = fractions * (counts.sum() + size) - counts
        choice = preference[np.argmax(deficit[preference])]
        counts[choice] += size
        groups.loc[group_id, "subset"] = SPLITS[choice]

    frame["age_stratum"] = [labels[i] if i >= 0 else UNKNOWN_STRATUM for i in groups.loc[frame["group"], "stratum"]]
    frame["split"] = groups.loc[frame["group"], "subset"].to_numpy()
    return frame[COLUMNS].reset_index(drop=True)


def assign_fixed_split(cohort: pd.DataFrame, settings: SplitSettings,
                       previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Keep a dataset's official split: its test (and validation) patients stay; its training patients are split.

    Official splits (CBIS-DDSM, VinDr-Mammo) have only train and test, but training needs a validation subset
    for early stopping and the G-mean threshold. So the official test set is kept whole (Shen et al. report
    on it), and the official training patients are divided into train and validation by the scheme above,
    in the profile's train:validation ratio (70:10 -> 87.5% / 12.5%), still age-stratified and pair-preserving.
    """
    official = cohort["split"].fillna("").astype(str)
    if (official == "").any():
        raise UnusableInput(f"--fixed needs an official split for every patient; {int((official == '').sum())} "
                            "patient(s) have an empty split column")
    train_share, validation_share = settings.fractions[0], settings.fractions[1]
    if train_share + validation_share <= 0:
        raise UnusableInput("--fixed needs a non-zero train or validation fraction in the profile")
    inner = SplitSettings(train=train_share / (train_share + validation_share),
                          validation=validation_share / (train_share + validation_share), test=0.0,
                          age_bins=settings.age_bins, seed=settings.seed)
    training = cohort[official == "train"]
    parts = [assign_split(training, inner, previous)] if len(training) else []
    for subset in ("validation", "test"):
        kept = cohort[official == subset]
        if len(kept):
            placed = assign_split(kept, settings)  # for the age strata; the subset itself is the official one
            placed["split"] = subset
            parts.append(placed)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def split_counts(split: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Patients and cases per subset, for `_SUCCESS.json` and logs."""
    return {
        subset: {"patients": int((split["split"] == subset).sum()),
                 "cases": int(split.loc[split["split"] == subset, "label"].sum())}
        for subset in SPLITS
    }


def _fmt(edge: float) -> str:
    return str(int(edge)) if float(edge).is_integer() else f"{edge:g}"
