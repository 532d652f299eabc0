"""The step registry: every `mammo` subcommand once, with what the CLI, the pipeline, Argo and the images need.

One row per step says which module implements it, which image runs it (and whether a GPU build of that image
exists), what its container asks the cluster for, what it writes and which profile values its result depends
on. jobs/cli.py builds its subcommands from it, common.pipeline gives each task its step's resources,
common.argo_render picks images and GPU limits from it, common.fingerprint reads `profile_reads`, the Makefile
asks `python -m common.steps images|gpu-images` for the images to build, and the Dockerfile checks compare
both Dockerfiles' targets with it. Adding a step is a row here plus its module (and a Dockerfile target when
it has an image of its own).

This module imports nothing but the standard library: `mammo --help`, the Makefile and the runner read it
without TensorFlow, and a step's own run imports only its module.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """What a task's container asks the cluster for; GPU tasks fall back to CPU where no GPU exists."""

    gpu: bool
    cpu: str
    memory: str
    memory_limit: str
    deadline_seconds: int


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    summary: str  # `mammo --help` line; lives here so the help imports no step module
    # Dockerfile target (image mammo-<image>) that runs the step; None: no image (local-only or in-image tool).
    image: str | None = None
    gpu_image: bool = False  # Dockerfile.gpu builds `image` too
    # Requests are what the scheduler reserves (small enough for a kind node); limits bound the full profile.
    resources: Resources | None = None
    multi_gpu: bool = False  # mirrors over every GPU of its pod (common.distribute), `gpus` workflow parameter
    outputs: tuple[str, ...] = ()  # the main files of its output folder (docs/contracts.md has the detail)
    # Profile values (dotted keys, `{--option}` for that option's value) the result depends on; None: all of it.
    profile_reads: tuple[str, ...] | None = None

    @property
    def own_image(self) -> bool:
        """The step has an image named after it (a build target of its own)."""
        return self.image == self.name


def _cpu(cpu: str, memory: str, limit: str, hours: float) -> Resources:
    return Resources(gpu=False, cpu=cpu, memory=memory, memory_limit=limit, deadline_seconds=int(hours * 3600))


def _gpu(cpu: str, memory: str, limit: str, hours: float) -> Resources:
    return Resources(gpu=True, cpu=cpu, memory=memory, memory_limit=limit, deadline_seconds=int(hours * 3600))


_MODEL = ("image", "model", "training")
_TRAINED = ("model.keras", "preprocessing.json", "history.csv")

STEPS: dict[str, Step] = {step.name: step for step in (
    Step("synth", "jobs.synth", "write a synthetic four-view cohort (DICOM + cohort.csv) for one domain",
         image="synth", resources=_cpu("1", "1Gi", "8Gi", 2), outputs=("dicom/", "cohort.csv"),
         profile_reads=("synth.size", "synth.size_by_domain", "synth.patients.{--domain}")),
    Step("cohort", "jobs.cohort", "public dataset metadata (CBIS-DDSM, INbreast, CMMD, VinDr-Mammo) -> cohort.csv",
         resources=_cpu("1", "1Gi", "4Gi", 2), outputs=("cohort.csv", "image_table.csv"),
         profile_reads=()),  # takes --profile for uniformity only
    Step("preprocess", "jobs.preprocess",
         "DICOM folder -> oriented, resized 16-bit PNGs + images.csv/rejected.csv",
         image="preprocess", resources=_cpu("2", "2Gi", "16Gi", 6),
         outputs=("images/", "hires/", "images.csv", "rejected.csv"),
         profile_reads=("image", "radiomics.target_spacing_mm")),
    Step("split", "jobs.split", "patient-level 70/10/20 split, age-stratified, pairs together, stable under growth",
         image="split", resources=_cpu("250m", "256Mi", "2Gi", 0.5), outputs=("split.csv",),
         profile_reads=("split",)),
    Step("pretrain", "jobs.pretrain", "train End2End VGG16 on a source domain (the baseline when no checkpoint)",
         image="pretrain", gpu_image=True, resources=_gpu("4", "4Gi", "48Gi", 48), multi_gpu=True,
         outputs=_TRAINED, profile_reads=_MODEL),
    Step("baseline-infer", "jobs.baseline_infer", "score every image with a baseline model or published checkpoint",
         image="baseline-infer", gpu_image=True, resources=_gpu("2", "2Gi", "24Gi", 8),
         outputs=("scores.csv", "metrics.json"), profile_reads=(*_MODEL, "metrics")),
    Step("finetune-stage1", "jobs.finetune_stage1", "transfer learning: train Block 2 (+ Block 1) and the head",
         image="finetune-stage1", gpu_image=True, resources=_gpu("4", "4Gi", "48Gi", 24), multi_gpu=True,
         outputs=_TRAINED, profile_reads=_MODEL),
    Step("finetune-stage2", "jobs.finetune_stage2", "fine-tune the whole network, then score and evaluate",
         image="finetune-stage2", gpu_image=True, resources=_gpu("4", "4Gi", "48Gi", 24), multi_gpu=True,
         outputs=(*_TRAINED, "scores.csv", "metrics.json"), profile_reads=(*_MODEL, "metrics")),
    Step("radiomics", "jobs.radiomics",
         "34 features per image, 141-attribute patient vectors, PCA + gradient boosting",
         image="radiomics", resources=_cpu("2", "2Gi", "16Gi", 12),
         outputs=("features.csv", "patient_vectors.csv", "model.joblib", "cv_results.csv", "scores.csv",
                  "metrics.json"),
         profile_reads=("radiomics", "metrics")),
    Step("report", "jobs.report",
         "thesis tables and figures: report.html, report.md, tables/, figures/, summary.json",
         image="report", resources=_cpu("1", "1Gi", "8Gi", 2),
         outputs=("report.html", "report.md", "tables/", "figures/", "summary.json")),
    # The CronWorkflow's container: the whole package, so the retraining DAG's own steps run in it too.
    Step("retrain", "jobs.retrain", "scheduled retraining on new hospital data with a champion/challenger gate",
         image="retrain", gpu_image=True, outputs=("decision.json",)),
    # Runs in the image of the step it plans for (common.argo_render's plan template).
    Step("shard-plan", "jobs.shard_plan",
         "how many shards a sharded CPU step runs as (the list Argo fans out over)",
         resources=Resources(gpu=False, cpu="100m", memory="256Mi", memory_limit="1Gi", deadline_seconds=600)),
    # The retraining DAG's own steps (common.retrain_dag): S3 transfers and bookkeeping.
    Step("retrain-discover", "jobs.retrain_discover",
         "retraining DAG: new studies, champion and training data, or stop",
         image="retrain", resources=_cpu("500m", "1Gi", "8Gi", 4),
         outputs=("discovery.json", "proceed.txt", "dicom/", "cohort.csv", "previous/", "champion/")),
    Step("retrain-data", "jobs.retrain_data", "retraining DAG: previous training data + the new studies",
         image="retrain", resources=_cpu("500m", "1Gi", "8Gi", 2), outputs=("images/", "images.csv", "cohort.csv")),
    Step("retrain-gate", "jobs.retrain_gate", "retraining DAG: champion/challenger gate, registration, new state",
         image="retrain", resources=_cpu("500m", "1Gi", "8Gi", 4), outputs=("decision.json",)),
    Step("model", "jobs.model", "inspect the End2End architecture (parameter counts per training phase)"),
    Step("pipeline", "jobs.pipeline", "run the whole pipeline locally (synthetic demo unless hospital data is given)"),
)}


def resources(name: str) -> Resources:
    """What the step's container asks for; KeyError for a step that never runs as a container of its own."""
    found = STEPS[name].resources
    if found is None:
        raise KeyError(f"step {name} has no resources in common.steps: it cannot run as a task")
    return found


def task_steps() -> list[Step]:
    """Steps that run as tasks of a DAG (they have a container template's resources)."""
    return [s for s in STEPS.values() if s.resources is not None and s.name != "shard-plan"]


def image_steps() -> list[str]:
    """Dockerfile.cpu targets, one image each (`make images`)."""
    return [s.name for s in STEPS.values() if s.own_image]


def gpu_image_steps() -> list[str]:
    """Dockerfile.gpu targets."""
    return [s.name for s in STEPS.values() if s.own_image and s.gpu_image]


def gpu_steps() -> list[str]:
    """Steps whose pods request a GPU."""
    return [s.name for s in STEPS.values() if s.resources is not None and s.resources.gpu]


LISTS = {"images": image_steps, "gpu-images": gpu_image_steps, "gpu": gpu_steps}


def main(argv: list[str]) -> int:
    """`python -m common.steps images|gpu-images|gpu`: the list, space-separated (the Makefile's variables)."""
    if len(argv) != 1 or argv[0] not in LISTS:
        print(f"usage: python -m common.steps {'|'.join(LISTS)}", file=sys.stderr)
        return 2
    print(" ".join(LISTS[argv[0]]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
