"""Scheduled retraining as a DAG of the pipeline's own step tasks (common.pipeline.Task): the CronWorkflow renders it
with the same templates as the full pipeline (CPU steps on CPU nodes, GPU steps on GPU nodes, each retried and
reporting on its own), and `mammo retrain` runs the same task list locally.

  discover -> preprocess-new (sharded) -> training-data -> split-hospital (old split locked) ->
  challenger-stage1 -> challenger -> score-champion, score-challenger -> gate

Three steps exist only here: `retrain-discover` (new studies, the current champion and training data, the early
stop), `retrain-data` (previous training data + the new studies) and `retrain-gate` (locked-split check,
champion/challenger gate, registration, promotion, state). Every task after `discover` runs only when discover
found enough new studies (its `proceed` output).
"""

from __future__ import annotations

from collections.abc import Mapping

from common.pipeline import Out, Param, Task, check_dag

DISCOVER = "discover"
PARAMS = ("hospital", "cohort", "registry", "state", "run_id", "min_new_studies", "seed_champion", "margin",
          "alpha", "finetune_config")


def _task(name: str, step: str, profile: str, params: Mapping[str, str], *args, profile_arg: bool = True) -> Task:
    tail = (("--out", ""), ("--profile", "")) if profile_arg else (("--out", ""),)
    return Task(name, step, (*args, *tail), profile, dict(params))


def _value(name: str) -> Param:
    return Param(name, "value")


def retrain_tasks(profile: str, params: Mapping[str, str] | None = None) -> list[Task]:
    """The retraining DAG in topological order; `params` binds PARAMS for a local run."""
    bound = dict(params or {})
    p = profile
    data = (("--images", Out("training-data")), ("--split", Out("split-hospital")))
    champion = Out(DISCOVER, "champion")
    plan = [
        _task(DISCOVER, "retrain-discover", p, bound, *[(f"--{n.replace('_', '-')}", _value(n)) for n in
              ("hospital", "cohort", "registry", "state", "run_id", "min_new_studies", "seed_champion")],
              profile_arg=False),
        _task("preprocess-new", "preprocess", p, bound, ("--input", Out(DISCOVER, "dicom")),
              ("--cohort", Out(DISCOVER, "cohort.csv"))),
        _task("training-data", "retrain-data", p, bound, ("--discovery", Out(DISCOVER)),
              ("--new", Out("preprocess-new")), profile_arg=False),
        _task("split-hospital", "split", p, bound, ("--cohort", Out("training-data", "cohort.csv")),
              ("--previous", Out(DISCOVER, "previous/split/split.csv"))),
        _task("challenger-stage1", "finetune-stage1", p, bound, ("--model", champion), *data,
              ("--config", _value("finetune_config"))),
        _task("challenger", "finetune-stage2", p, bound, ("--model", Out("challenger-stage1")), *data),
        _task("score-champion", "baseline-infer", p, bound, ("--model", champion), *data, ("--splits", "test")),
        _task("score-challenger", "baseline-infer", p, bound, ("--model", Out("challenger")), *data,
              ("--splits", "test")),
        _task("gate", "retrain-gate", p, bound, ("--discovery", Out(DISCOVER)), *data,
              ("--challenger", Out("challenger")), ("--champion-scores", Out("score-champion")),
              ("--challenger-scores", Out("score-challenger")), ("--margin", _value("margin")),
              ("--alpha", _value("alpha")), ("--finetune-config", _value("finetune_config"))),
    ]
    check_dag(plan)
    return plan
