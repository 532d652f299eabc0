"""Champion/challenger gate (both ways) and the S3 model registry's atomic champion pointer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from common.artifacts import step_output
from common.registry import ModelRegistry, PromotionConflict, champion_challenger_gate
from common.storage import S3Uri, Storage, StorageError


def scores(labels: np.ndarray, separation: float, seed: int) -> np.ndarray:
    return separation * labels + np.random.default_rng(seed).standard_normal(len(labels))


@pytest.fixture
def labels() -> np.ndarray:
    return (np.random.default_rng(0).random(400) < 0.25).astype(int)


def rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC from ranks (ties averaged)."""
    ranks = rankdata(s)
    n_pos = int(y.sum())
    return (ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos))


def paired_bootstrap_lower(y, challenger, champion, alpha, n=2000, seed=1):
    """Independent check of the gate's bound: percentile of a paired (case-resampling) bootstrap."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            diffs.append(rank_auc(y[idx], challenger[idx]) - rank_auc(y[idx], champion[idx]))
    return float(np.quantile(diffs, alpha))


def test_better_challenger_is_promoted(labels):
    champion, challenger = scores(labels, 1.0, 1), scores(labels, 2.5, 2)
    gate = champion_challenger_gate(labels, champion, challenger, margin=0.02)
    assert gate.promote
    assert gate.champion_auc == pytest.approx(roc_auc_score(labels, champion))
    assert gate.challenger_auc == pytest.approx(roc_auc_score(labels, challenger))
    assert gate.difference > 0.1 and gate.p_value < 0.001
    assert gate.difference_ci_low == pytest.approx(paired_bootstrap_lower(labels, challenger, champion, 0.05),
                                                   abs=0.02)


def test_worse_challenger_is_not_promoted(labels):
    champion, challenger = scores(labels, 2.5, 2), scores(labels, 1.0, 1)
    gate = champion_challenger_gate(labels, champion, challenger, margin=0.02)
    assert not gate.promote and gate.difference < -0.1
    assert "not shown non-inferior" in gate.reason


def test_uncertain_small_loss_within_the_margin_is_not_enough():
    """A point estimate inside the margin does not promote when the data cannot rule out a larger loss."""
    y = np.array([0, 1] * 15)
    champion = scores(y, 1.5, 3)
    challenger = scores(y, 1.5, 4)
    gate = champion_challenger_gate(y, champion, challenger, margin=0.05)
    assert -0.05 < gate.difference <= 0.05, "premise: the estimated difference is inside the margin"
    assert gate.difference_ci_low < -0.05 and not gate.promote
    # The same models judged with a generous margin pass: the margin is what the decision turns on.
    assert champion_challenger_gate(y, champion, challenger, margin=0.5).promote


def test_identical_models_are_not_inferior(labels):
    same = scores(labels, 1.0, 5)
    gate = champion_challenger_gate(labels, same, same.copy(), margin=0.02)
    assert gate.promote and gate.difference == 0.0


def test_one_class_test_set_never_promotes():
    gate = champion_challenger_gate([1, 1, 1], [0.1, 0.2, 0.3], [0.9, 0.8, 0.7], margin=0.02)
    assert not gate.promote and "both cases and controls" in gate.reason


def test_bad_settings_are_refused(labels):
    with pytest.raises(ValueError):
        champion_challenger_gate(labels, labels, labels, margin=-0.1)
    with pytest.raises(ValueError):
        champion_challenger_gate(labels, labels[:-1], labels, margin=0.1)


def model_folder(path, content: bytes):
    with step_output("finetune-stage2", path, {}):
        (path / "model.keras").write_bytes(content)
        (path / "preprocessing.json").write_text(json.dumps({"featurewise_mean": 40.0}))
    return path


def test_registry_register_fetch_and_atomic_promotion(s3_env, bucket, tmp_path):
    storage = Storage()
    registry = ModelRegistry(f"s3://{bucket}/models/", storage)
    assert registry.champion() is None

    first = registry.register(model_folder(tmp_path / "m1", b"weights-1"), {"auc": 0.7}, {"parent": None})
    second = registry.register(model_folder(tmp_path / "m2", b"weights-2"), {"auc": 0.8}, {"parent": first})
    assert first != second
    fetched = registry.fetch(second, tmp_path / "fetched")
    assert (fetched / "model.keras").read_bytes() == b"weights-2"
    assert json.loads((fetched / "lineage.json").read_text()) == {"model_id": second, "parent": first}
    assert json.loads((fetched / "metrics.json").read_text()) == {"auc": 0.8}

    registry.promote(first, None, "first champion")
    with pytest.raises(PromotionConflict):  # a second "first champion" loses: there is one now
        registry.promote(second, None, "racing first champion")
    seen_by_run_a = registry.champion()
    seen_by_run_b = registry.champion()
    registry.promote(second, seen_by_run_a, "run A")
    with pytest.raises(PromotionConflict, match="changed during this run"):
        registry.promote(first, seen_by_run_b, "run B, stale")
    champion = registry.champion()
    assert champion.model_id == second and champion.record["previous"] == first
    history = storage.list_keys(S3Uri(bucket, "models/history"))
    assert len(history) == 2 and all(key.endswith(".json") for key in history)


def test_half_uploaded_model_is_not_promotable(s3_server, s3_env, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="models/models/broken/model.keras", Body=b"x")
    registry = ModelRegistry(f"s3://{bucket}/models/", Storage())
    with pytest.raises(StorageError, match="not registered"):
        registry.promote("broken", None, "should fail")
    with pytest.raises(StorageError, match="not \\(completely\\) registered"):
        registry.fetch("broken", __import__("pathlib").Path("/tmp/never"))
    assert registry.champion() is None
