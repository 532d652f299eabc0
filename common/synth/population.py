"""Who is in a synthetic cohort: age-matched case-control pairs, cancer side, breast density by age.

Every random draw comes from a stream keyed by (seed, domain, pair, member, purpose) via numpy's
SeedSequence spawn keys, so a patient is the same whatever the cohort size, the number of worker
processes or the order they run in, and domains generated with the same seed are independent women
(a model pretrained on one domain never meets the same lesions again in another).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

CASE, CONTROL = 0, 1
BILATERAL_RATE = 0.03


@dataclass(frozen=True)
class Patient:
    index: int
    patient_id: str
    pair_id: str
    age: int
    label: int
    cancer_laterality: str  # "L", "R", "B" or "" for controls
    density: float  # fraction of breast area that is dense, falls with age
    key: tuple[int, ...]  # entropy of this patient's random streams

    def stream(self, *purpose: int) -> np.random.Generator:
        """Independent generator for one purpose (view texture, lesion shape, detector noise...)."""
        return stream(self.key, *purpose)

    @property
    def cancer_sides(self) -> tuple[str, ...]:
        return {"L": ("L",), "R": ("R",), "B": ("L", "R")}.get(self.cancer_laterality, ())


def stream(key: tuple[int, ...], *purpose: int) -> np.random.Generator:
    entropy, *spawn = key
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(*spawn, *purpose)))


def domain_entropy(seed: int, domain: str) -> int:
    """Mix the domain name into the seed so domains sampled with one seed do not share patients."""
    return int(seed) * 2**32 + zlib.crc32(domain.encode("utf-8"))


def patient_id(domain: str, index: int) -> str:
    return f"{domain}-{index:04d}"


def make_patient(seed: int, domain: str, index: int) -> Patient:
    """Patient `index` of a cohort: even indices are cases, the next odd index is the matched control."""
    entropy = domain_entropy(seed, domain)
    pair, member = divmod(index, 2)
    pair_rng = stream((entropy, pair), 0)
    case_age = int(np.clip(round(pair_rng.normal(60.0, 9.0)), 41, 85))  # controls stay in 40-86
    laterality = "B" if pair_rng.random() < BILATERAL_RATE else str(pair_rng.choice(["L", "R"]))
    control_offset = int(pair_rng.integers(-1, 2))  # matched within one year, as a registry match would be
    age = case_age if member == CASE else case_age + control_offset
    key = (entropy, pair, member + 1)
    patient_rng = stream(key, 0)
    density = float(np.clip(0.45 - 0.009 * (age - 45) + patient_rng.normal(0.0, 0.08), 0.05, 0.65))
    return Patient(
        index=index,
        patient_id=patient_id(domain, index),
        pair_id=f"{domain}-pair-{pair:04d}",
        age=age,
        label=1 if member == CASE else 0,
        cancer_laterality=laterality if member == CASE else "",
        density=density,
        key=key,
    )
