"""The pipeline DAG as data: the one definition the local runner executes and the Argo YAML is rendered from.

A task is one `mammo <step>` invocation writing the folder named after the task (docs/contracts.md, work
directory layout). Its arguments are literals, references to other tasks' output folders (`Out`), external
inputs a user provides (`Param`: a hospital's DICOM folder, a cohort file, a published checkpoint), or
values taken from the profile (`ProfileValue`). The dependencies follow from the `Out` references, so the
DAG cannot disagree with the command lines. Locally `Task.argv(workdir)` turns the references into paths
under one work directory; the Argo rendering turns them into artifacts mounted at `/work/<task>`.

Two modes:
- `synthetic` (demo, tests): three synthetic domains (`synth-film`, `synth-ffdm`, `synth-hospital`), source
  models pretrained on film (A) and film then FFDM (AB), every baseline row, both fine-tunings, radiomics.
- `real`: a hospital's DICOM folder and cohort, plus a baseline: a published checkpoint (`checkpoint`, .h5),
  a model folder (`model`), or source data for both domains to pretrain on. Source domains given as
  `film_dicom`/`film_cohort` or `ffdm_dicom`/`ffdm_cohort` add their in-domain rows; without them there are
  no synth, pretrain or in-domain tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.constants import DOMAINS, SOURCES, TARGET
from common.datasets import DATASETS, OFFICIAL_SPLIT
from common.profile import load_profile
from common.steps import Resources, resources

MODES = ("synthetic", "real")
FINETUNE_CONFIGS = (1, 2)
# Deterministic synthetic cohorts: one fixed seed per domain, so reruns reproduce the same data.
SYNTH_SEEDS = {"film": 11, "ffdm": 23, "hospital": 37}
# `pipeline run --seed S` moves every domain's seed by S steps of this size: other women, same recipe.
SEED_STRIDE = 1000
# Thesis: the published INbreast checkpoints were trained with this featurewise mean.
DEFAULT_CHECKPOINT_MEAN = "44.33"


@dataclass(frozen=True)
class Out:
    """Another task's output folder, or a path inside it."""

    task: str
    path: str = ""


@dataclass(frozen=True)
class Param:
    """An external input: a local path or s3:// URI locally, an S3 key given as a workflow parameter in Argo."""

    name: str
    kind: str = "dir"  # "dir", "file" (a file input) or "value" (a plain string such as a number)
    filename: str = ""  # what a file input is called once mounted (Argo)


@dataclass(frozen=True)
class ProfileValue:
    """A value read from the profile (dotted key), e.g. how many synthetic patients a domain has."""

    key: str


Arg = str | Out | Param | ProfileValue


@dataclass(frozen=True)
class Task:
    name: str
    step: str
    args: tuple[tuple[str, Arg], ...]
    profile: str
    params: Mapping[str, str] = field(default_factory=dict, compare=False)
    # The report reads every other task's folder from --workdir; these are the folders it needs mounted.
    reads: tuple[str, ...] = ()

    @property
    def resources(self) -> Resources:
        return resources(self.step)

    @property
    def depends(self) -> tuple[str, ...]:
        """Upstream tasks, in first-use order."""
        names = [value.task for _, value in self.args if isinstance(value, Out)] + list(self.reads)
        return tuple(dict.fromkeys(names))

    @property
    def external_inputs(self) -> tuple[Param, ...]:
        return tuple(dict.fromkeys(value for _, value in self.args if isinstance(value, Param)))

    def argv(self, workdir: Any, params: Mapping[str, str] | None = None, profile: str | None = None) -> list[str]:
        """`mammo` arguments (without the program name) with folders under `workdir`.

        `workdir` may be a local path or an s3:// prefix; `params` and `profile` override the values bound
        when the task list was built (the Argo rendering binds them to mount paths and parameters).
        """
        root = str(workdir).rstrip("/")
        bound = {**self.params, **(params or {})}
        argv = [self.step]
        for option, value in self.args:
            if option:  # an empty option name marks a positional argument or a bare flag (the value)
                argv.append(option)
            if option == "--out":
                argv.append(f"{root}/{self.name}")
            elif isinstance(value, Out):
                argv.append("/".join(part for part in (root, value.task, value.path) if part))
            elif isinstance(value, Param):
                if value.name not in bound:
                    raise KeyError(f"task {self.name} needs the input {value.name!r}")
                argv.append(str(bound[value.name]))
            elif isinstance(value, ProfileValue):
                argv.append(str(bound.get(value.key) or _profile_value(self.profile, value.key)))
            elif option == "--profile":
                argv.append(profile or self.profile)
            elif option == "--workdir":
                argv.append(root)
            else:
                argv.append(value)
        return argv


def _profile_value(profile: str, key: str) -> Any:
    return load_profile(profile).value(key)


def _task(name: str, step: str, profile: str, params: Mapping[str, str], *args: tuple[str, Arg],
          reads: Iterable[str] = ()) -> Task:
    return Task(name, step, (*args, ("--out", ""), ("--profile", "")), profile, dict(params), tuple(reads))


def tasks(mode: str, profile_name: str, params: Mapping[str, Any] | None = None) -> list[Task]:
    """The pipeline's tasks in topological order: data, baselines, adaptation, report.

    params (all optional in synthetic mode):
      hospital_dicom, hospital_cohort        real mode: the target cohort (folder of DICOMs, cohort.csv)
      film_dicom, film_cohort, ffdm_dicom, ffdm_cohort   source domains (in-domain rows, pretraining)
      <domain>_dataset, <domain>_metadata_<i>, <domain>_dicom   a domain straight from a public dataset's
                                             metadata (`mammo cohort`, e.g. film = cbis-ddsm); datasets with an
                                             official split keep it (`mammo split --fixed`)
      checkpoint (+ checkpoint_mean)         a published End2End HDF5 checkpoint as the baseline
      model                                  a model folder as the baseline (instead of a checkpoint)
      finetune_configs                       which stage-1 configurations to run, default (1, 2)
      seed                                   synthetic mode: draw other cohorts (0, the default, is the README's)
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    params = dict(params or {})
    cohort_seed = int(params.pop("seed", 0) or 0)
    configs = tuple(int(c) for c in params.pop("finetune_configs", FINETUNE_CONFIGS))
    if not configs or set(configs) - set(FINETUNE_CONFIGS):
        raise ValueError(f"finetune_configs must be a non-empty subset of {FINETUNE_CONFIGS}, got {configs}")
    bound = {k: str(v) for k, v in params.items() if v is not None}
    domains, plan = _data_tasks(mode, profile_name, bound, cohort_seed)
    baselines, start_model = _baseline_tasks(mode, profile_name, bound, domains)
    plan += baselines
    plan += _adaptation_tasks(profile_name, bound, configs, start_model)
    plan.append(_report_task(plan, profile_name, bound))
    check_dag(plan)
    return plan


def _data_tasks(mode: str, p: str, bound: dict[str, str], cohort_seed: int) -> tuple[list[str], list[Task]]:
    """Where each domain's DICOM folder and cohort file come from, then each domain's preprocess and split."""
    if mode == "synthetic":
        domains, data, plan = _synthetic_data(p, bound, cohort_seed)
    else:
        domains, data, plan = _real_data(p, bound)
    for domain in domains:
        dicom, cohort = data[domain]
        table = (("--image-table", Out(f"cohort-{domain}", "image_table.csv")),) if isinstance(cohort, Out) \
            and cohort.task.startswith("cohort-") else ()
        plan.append(_task(f"preprocess-{domain}", "preprocess", p, bound, ("--input", dicom), ("--cohort", cohort),
                          *table))
    for domain in domains:
        fixed = (("", "--fixed"),) if bound.get(f"{domain}_dataset") in OFFICIAL_SPLIT else ()
        plan.append(_task(f"split-{domain}", "split", p, bound, ("--cohort", data[domain][1]), *fixed))
    return domains, plan


DomainData = dict[str, tuple[Arg, Arg]]  # domain -> (DICOM folder, cohort.csv)


def _synthetic_data(p: str, bound: dict[str, str], cohort_seed: int) -> tuple[list[str], DomainData, list[Task]]:
    """Every domain generated by `mammo synth` (deterministic seeds, moved by `pipeline run --seed`)."""
    domains = list(DOMAINS)
    plan = [_task(f"synth-{domain}", "synth", p, bound,
                  ("--domain", domain), ("--patients", ProfileValue(f"synth.patients.{domain}")),
                  ("--seed", str(SYNTH_SEEDS[domain] + SEED_STRIDE * cohort_seed))) for domain in domains]
    data: DomainData = {d: (Out(f"synth-{d}", "dicom"), Out(f"synth-{d}", "cohort.csv")) for d in domains}
    return domains, data, plan


def _real_data(p: str, bound: dict[str, str]) -> tuple[list[str], DomainData, list[Task]]:
    """The hospital, and the source domains given: as a DICOM folder and cohort.csv, or a public dataset's
    metadata turned into cohort.csv by a `mammo cohort` task."""
    if f"{TARGET}_dicom" not in bound or not {f"{TARGET}_cohort", f"{TARGET}_dataset"} & set(bound):
        raise ValueError(f"real mode needs {TARGET}_dicom and {TARGET}_cohort (the hospital's DICOM folder and "
                         f"cohort.csv) or {TARGET}_dataset")
    given = [d for d in SOURCES if f"{d}_dicom" in bound and {f"{d}_cohort", f"{d}_dataset"} & set(bound)]
    domains = [*given, TARGET]
    data: DomainData = {d: (Param(f"{d}_dicom"), Param(f"{d}_cohort", "file", "cohort.csv")) for d in domains}
    plan = []
    for domain in domains:
        if f"{domain}_dataset" in bound:
            plan.append(_cohort_task(domain, p, bound))
            data[domain] = (Param(f"{domain}_dicom"), Out(f"cohort-{domain}", "cohort.csv"))
    return domains, data, plan


def _baseline_tasks(mode: str, p: str, bound: dict[str, str], domains: list[str]) -> tuple[list[Task], Arg]:
    """Baselines trained here on the sources (A = film, AB = film then FFDM), or given, each scored on every
    domain; returns the tasks and the model fine-tuning starts from."""
    if "checkpoint" in bound and "model" in bound:
        raise ValueError("give the baseline as checkpoint or as model, not both")
    plan = []
    if mode == "synthetic" or ("checkpoint" not in bound and "model" not in bound):
        if [d for d in SOURCES if d in domains] != list(SOURCES):
            raise ValueError("real mode needs a baseline: checkpoint (.h5), model (folder), or both source domains")
        plan.append(_task("pretrain-a", "pretrain", p, bound, *_training_inputs("film"),
                          ("--source-name", "film")))
        plan.append(_task("pretrain-ab", "pretrain", p, bound, *_training_inputs("ffdm"),
                          ("--init-model", Out("pretrain-a")), ("--source-name", "film+ffdm")))
        baselines: dict[str, tuple[tuple[str, Arg], ...]] = {"a": (("--model", Out("pretrain-a")),),
                                                             "ab": (("--model", Out("pretrain-ab")),)}
        start_model: Arg = Out("pretrain-ab")
    elif "checkpoint" in bound:
        bound.setdefault("checkpoint_mean", DEFAULT_CHECKPOINT_MEAN)
        baselines = {"ab": (("--checkpoint", Param("checkpoint", "file", "checkpoint.h5")),
                            ("--checkpoint-mean", Param("checkpoint_mean", "value")))}
        # Fine-tuning starts from the imported checkpoint, which baseline-infer saves as a model folder.
        start_model = Out(f"infer-ab-{TARGET}")
    else:
        baselines = {"ab": (("--model", Param("model")),)}
        start_model = Param("model")
    for baseline, source in baselines.items():
        for domain in domains:
            splits = "all" if (baseline, domain) == ("ab", TARGET) else "test"
            plan.append(_task(f"infer-{baseline}-{domain}", "baseline-infer", p, bound, *source,
                              *_training_inputs(domain), ("--splits", splits)))
    return plan, start_model


def _adaptation_tasks(p: str, bound: dict[str, str], configs: tuple[int, ...], start_model: Arg) -> list[Task]:
    """Adaptation to the hospital: the thesis' two fine-tuning configurations, then radiomics."""
    plan = []
    for config in configs:
        plan.append(_task(f"finetune{config}-stage1", "finetune-stage1", p, bound, ("--model", start_model),
                          *_training_inputs(TARGET), ("--config", str(config))))
        plan.append(_task(f"finetune{config}-stage2", "finetune-stage2", p, bound,
                          ("--model", Out(f"finetune{config}-stage1")), *_training_inputs(TARGET)))
    plan.append(_task("radiomics", "radiomics", p, bound, *_training_inputs(TARGET),
                      ("--scores", Out(f"infer-ab-{TARGET}"))))
    return plan


def _report_task(plan: list[Task], p: str, bound: dict[str, str]) -> Task:
    """The report reads every task's folder but the synthetic DICOM folders, which are large and already
    summarised by preprocess."""
    reported = [t.name for t in plan if t.step != "synth"]
    return Task("report", "report", (("--workdir", ""), ("--out", ""), ("--profile", "")), p, bound,
                tuple(reported))


def _cohort_task(domain: str, profile: str, bound: Mapping[str, str]) -> Task:
    """`mammo cohort <dataset>`: the domain's cohort.csv and image table from the dataset's own metadata."""
    dataset = bound[f"{domain}_dataset"]
    if dataset not in DATASETS:
        raise ValueError(f"{domain}: unknown dataset {dataset!r}, use one of {', '.join(DATASETS)}")
    metadata = sorted((k for k in bound if k.startswith(f"{domain}_metadata_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if not metadata:
        raise ValueError(f"{domain}: a {dataset} domain needs its metadata file(s)")
    return _task(f"cohort-{domain}", "cohort", profile, bound, ("", dataset),
                 *(("--metadata", Param(name, "file")) for name in metadata), ("--dicom", Param(f"{domain}_dicom")))


def _training_inputs(domain: str) -> tuple[tuple[str, Arg], ...]:
    return (("--images", Out(f"preprocess-{domain}")), ("--split", Out(f"split-{domain}")))


def check_dag(plan: list[Task]) -> None:
    """Every reference names an earlier task (which also rules out cycles) and names are unique."""
    seen: set[str] = set()
    for task in plan:
        if task.name in seen:
            raise ValueError(f"duplicate task {task.name}")
        missing = [d for d in task.depends if d not in seen]
        if missing:
            raise ValueError(f"task {task.name} depends on {missing}, which are not earlier tasks")
        seen.add(task.name)
