"""Model registry in S3 and the champion/challenger gate of scheduled retraining.

Layout under the registry prefix:
  models/<model_id>/   the model folder (model.keras, preprocessing.json, ...), metrics.json, lineage.json,
                       and `_SUCCESS.json` last, so a half-uploaded model is never listed as registered;
  champion.json        {"model_id", "promoted_unixtime", "previous", "reason"}: which model serves.
  history/<time>-<model_id>.json   one record per promotion.

The champion pointer is one small object, and S3 replaces an object atomically, so readers see the old or
the new champion, never a mix. Promotion is also a compare-and-swap (If-Match on the ETag read when the
run started, If-None-Match for the first champion): if someone else promoted in between, this run fails
loudly instead of overwriting that decision.

The gate is a non-inferiority test on the locked test set, paired because both models score the same
images: the challenger is promoted only if the lower end of the one-sided (1 - alpha) DeLong confidence
interval of AUC_challenger - AUC_champion lies above -margin. A clearly worse challenger fails; so does
one whose advantage is too uncertain to rule out a loss larger than the margin.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.artifacts import SUCCESS, atomic_write_json, require_success, step_output
from common.constants import RETRAIN
from common.storage import S3Uri, Storage, StorageError

CHAMPION = "champion.json"
# What S3 answers when a conditional write lost the race.
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class PromotionConflict(StorageError):
    """The champion changed while this run was deciding; its decision is no longer valid."""


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str
    n: int
    n_pos: int
    champion_auc: float
    challenger_auc: float
    p_value: float
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    margin: float
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def champion_challenger_gate(labels: npt.ArrayLike, champion_scores: npt.ArrayLike, challenger_scores: npt.ArrayLike,
                             margin: float, alpha: float = RETRAIN.alpha) -> GateResult:
    """Decide whether the challenger may replace the champion (paired DeLong non-inferiority test)."""
    from common.metrics import delong_difference_ci, delong_test

    if margin < 0 or not 0 < alpha < 0.5:
        raise ValueError(f"need margin >= 0 and 0 < alpha < 0.5, got margin={margin}, alpha={alpha}")
    y = np.asarray(labels).astype(int)
    champion = np.asarray(champion_scores, dtype=float)
    challenger = np.asarray(challenger_scores, dtype=float)
    if not len(y) == len(champion) == len(challenger):
        raise ValueError("labels and both score vectors must describe the same cases")
    n, n_pos = len(y), int(y.sum())
    if n_pos == 0 or n_pos == n:
        nan = float("nan")
        return GateResult(False, "the locked test set needs both cases and controls", n, n_pos, nan, nan, nan, nan,
                          nan, nan, margin, alpha)
    auc_challenger, auc_champion, p_value = delong_test(y, challenger, champion)
    low, high = delong_difference_ci(y, challenger, champion, level=1 - 2 * alpha)
    difference = auc_challenger - auc_champion
    promote = low > -margin
    if promote:
        reason = f"non-inferior: lower {100 * (1 - alpha):.0f}% bound of the AUC difference {low:+.4f} > -{margin}"
    else:
        reason = (f"not shown non-inferior: lower {100 * (1 - alpha):.0f}% bound of the AUC difference "
                  f"{low:+.4f} <= -{margin}")
    return GateResult(promote, reason, n, n_pos, auc_champion, auc_challenger, p_value, difference, low, high,
                      margin, alpha)


@dataclass(frozen=True)
class Champion:
    model_id: str
    etag: str
    record: dict[str, Any]


class ModelRegistry:
    def __init__(self, root: str | S3Uri, storage: Storage):
        self.root = root if isinstance(root, S3Uri) else S3Uri.parse(root)
        self.storage = storage

    def model_uri(self, model_id: str) -> S3Uri:
        return self.root.join("models", model_id)

    def register(self, model_dir: str | Path, metrics: dict[str, Any], lineage: dict[str, Any]) -> str:
        """Upload a finished model folder with its metrics and lineage; returns the new model id."""
        model_dir = Path(model_dir)
        require_success(model_dir)
        model_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{_folder_digest(model_dir)[:10]}"
        with tempfile.TemporaryDirectory(prefix="mammo-register-") as tmp:
            staging = Path(tmp) / model_id
            shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(SUCCESS))
            with step_output("register", staging, {"model": str(model_dir)}) as record:
                atomic_write_json(staging / "metrics.json", metrics)
                atomic_write_json(staging / "lineage.json", {"model_id": model_id, **lineage})
                record.extra["model_id"] = model_id
            self.storage.publish_dir(staging, self.model_uri(model_id))
        return model_id

    def is_registered(self, model_id: str) -> bool:
        return self.storage.exists(self.model_uri(model_id).join(SUCCESS))

    def read_json(self, model_id: str, name: str) -> dict[str, Any]:
        return json.loads(self.storage.get_bytes(self.model_uri(model_id).join(name)))

    def fetch(self, model_id: str, local: Path) -> Path:
        """Download a registered model folder (refusing one whose upload never finished)."""
        if not self.is_registered(model_id):
            raise StorageError(f"model {model_id} is not (completely) registered under {self.root}")
        self.storage.download_dir(self.model_uri(model_id), local)
        return local

    def champion(self) -> Champion | None:
        found = self.storage.get_with_etag(self.root.join(CHAMPION))
        if found is None:
            return None
        data, etag = found
        record = json.loads(data)
        return Champion(record["model_id"], etag, record)

    def promote(self, model_id: str, expected: Champion | None, reason: str) -> None:
        """Make `model_id` the champion if the champion is still `expected` (None: there was none)."""
        if not self.is_registered(model_id):
            raise StorageError(f"cannot promote {model_id}: it is not registered under {self.root}")
        now = time.time()
        record = {"model_id": model_id, "promoted_unixtime": now, "reason": reason,
                  "previous": expected.model_id if expected else None}
        body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        from botocore.exceptions import ClientError

        try:
            if expected is None:
                self.storage.put_bytes(self.root.join(CHAMPION), body, if_none_match=True)
            else:
                self.storage.put_bytes(self.root.join(CHAMPION), body, if_match=expected.etag)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _PRECONDITION_CODES:
                raise PromotionConflict(
                    f"the champion under {self.root} changed during this run (expected "
                    f"{expected.model_id if expected else 'none'}); {model_id} was not promoted"
                ) from error
            raise
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        self.storage.put_bytes(self.root.join("history", f"{stamp}-{model_id}.json"), body)


def _folder_digest(folder: Path) -> str:
    """Content hash of a folder, so a model id names what was trained, not only when."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUCCESS):
        digest.update(path.relative_to(folder).as_posix().encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
