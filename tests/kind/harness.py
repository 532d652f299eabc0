"""What the kind test submits and how it waits: plain functions, so an offline test (tests/k8s) can check the
commands and the timeout handling with a fake `argo` without a cluster.

Three submissions, all into the pipeline's namespace with `gpu=false` (the GPU steps on CPU with the CPU images):
the Workflow file as the README writes it, the installed WorkflowTemplate, and a manual trigger of the
retraining CronWorkflow. Each is submitted, then waited for with the run's timeout (MAMMO_KIND_TIMEOUT); a run
still going at the timeout is stopped and the test fails with its name, instead of hanging for hours.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "mammo"


class TimedOut(AssertionError):
    """The workflow did not finish within the kind run's timeout; it was stopped."""


@dataclass(frozen=True)
class Submission:
    label: str
    argv: list[str]


def timeout_seconds(text: str) -> int:
    """A timeout such as 90m, 2h, 45s or 1h30m."""
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"cannot read the timeout {text!r}: use e.g. 90m, 2h or 1h30m")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def submissions(image: tuple[str, str], patients: dict[str, int], context: str = "kind",
                retrain: dict[str, str] | None = None) -> list[Submission]:
    """The argo commands of a kind run (ci profile, CPU only, the images loaded into kind)."""
    registry, tag = image
    # Two shards per sharded step: a small node runs them side by side instead of queueing four.
    common = ["-p", "profile=ci", "-p", "gpu=false", "-p", "shards=2", "-p", f"image-registry={registry}",
              "-p", f"image-tag={tag}"]
    synthetic = [arg for d, n in patients.items() for arg in ("-p", f"synth-patients-{d}={n}")]
    base = ["argo", "--context", context, "-n", NAMESPACE, "submit"]
    retrain_args = [arg for k, v in (retrain or {}).items() for arg in ("-p", f"{k}={v}")]
    return [
        Submission("workflow file", [*base, str(ROOT / "argo/full-pipeline.yaml"), *common, *synthetic]),
        Submission("workflow template", [*base, "--from", "workflowtemplate/mammo-full-pipeline", *common,
                                         *synthetic]),
        Submission("retraining cron (manual trigger)", [*base, "--from", "cronwf/mammo-retrain", *common,
                                                        *retrain_args]),
    ]


def submit_and_wait(submission: Submission, context: str, timeout: str) -> str:
    """Submit, wait at most `timeout`, return the workflow name; stop the workflow and raise TimedOut after it."""
    result = subprocess.run([*submission.argv, "--output", "json"], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"{submission.label}: argo submit failed: {result.stderr[-2000:]}")
    name = json.loads(result.stdout)["metadata"]["name"]
    limit = timeout_seconds(timeout)
    try:
        subprocess.run(["argo", "--context", context, "-n", NAMESPACE, "wait", name], capture_output=True,
                       text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        subprocess.run(["argo", "--context", context, "-n", NAMESPACE, "stop", name], capture_output=True,
                       text=True, timeout=120)
        raise TimedOut(f"{submission.label}: workflow {name} still running after {timeout}; stopped it") from None
    return name
