"""How much the numbers move when TensorFlow's oneDNN kernels change: the stand-in for another CPU type.

Two machines of different CPU types run other oneDNN kernels (vector width, blocking, accumulation
order), which no seed or thread setting removes. One machine cannot be another CPU, but it can run the
same training with oneDNN's kernels switched off (TF_ENABLE_ONEDNN_OPTS=0, TensorFlow's own Eigen
kernels): another summation order of the same arithmetic, the same kind of difference. Each setting
trains the ci-profile End2End model from one seed on one synthetic toy task (a bright blob marks the
positives), in a fresh process with common.determinism's settings, and scores held-out images; the
result compares the scores and AUC, and checks that two runs with the same setting are identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _common

NAME = "onednn_variation"
WHAT = "ci-profile End2End, 3 epochs on 96 toy images, 64 scored"


def child() -> None:
    import keras
    import numpy as np

    from common.determinism import configure_determinism
    from common.metrics import roc_auc
    from common.model import Architecture, build_end2end
    from common.profile import load_profile

    profile = load_profile("ci")
    configure_determinism(profile)
    keras.utils.set_random_seed(0)
    arch = Architecture.from_profile(profile)
    rng = np.random.default_rng(0)

    def images(n):
        x = rng.normal(60.0, 20.0, (n, arch.height, arch.width, 3)).astype("float32")
        y = rng.integers(0, 2, n)
        rows, cols = np.mgrid[: arch.height, : arch.width]
        for i in np.flatnonzero(y):
            cy, cx = rng.integers(20, arch.height - 20), rng.integers(20, arch.width - 20)
            x[i] += (80.0 * (np.hypot(rows - cy, cols - cx) < 6))[..., None]
        return x - 60.0, y

    train_x, train_y = images(96)
    test_x, test_y = images(64)
    model = build_end2end(arch, dropout=0.2, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="categorical_crossentropy")
    model.fit(train_x, np.eye(2)[train_y], batch_size=8, epochs=3, shuffle=True, verbose=0)
    scores = model.predict(test_x, batch_size=16, verbose=0)[:, 1]
    print(json.dumps({"scores": scores.astype(float).tolist(), "auc": float(roc_auc(test_y, scores))}))


def run(onednn: str) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True,
                         cwd=_common.REPO_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    if "--child" in sys.argv:
        child()
        return 0
    p = _common.parser(NAME, __doc__.splitlines()[0])
    args = p.parse_args()
    started = _common.machine()
    on, on_again, off = run("1"), run("1"), run("0")
    diff = max(abs(a - b) for a, b in zip(on["scores"], off["scores"], strict=True))
    summary = {
        "max_abs_score_difference": diff,
        "auc_onednn": on["auc"],
        "auc_eigen": off["auc"],
        "auc_difference": abs(on["auc"] - off["auc"]),
        "same_setting_identical": on == on_again,
    }
    _common.table("oneDNN on vs off (same seed, same data)", [summary], list(summary))
    _common.write_result(NAME, args.results, args.quick, started, summary=summary, what=WHAT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
