"""Renders the pipeline definition (common.pipeline) as Argo Workflows 4.x objects with Hera's models.

`python -m common.argo_render argo/ [manifests/base/]` (what `make argo` runs) writes
- `full-pipeline.yaml`: a Workflow, submittable as is (`argo submit argo/full-pipeline.yaml -p ...`),
- `full-pipeline-template.yaml`: a WorkflowTemplate with the same spec (installed by the kustomize base),
- `retrain-cron.yaml`: the CronWorkflow of scheduled retraining, a DAG of the same step templates
  (common.retrain_dag; `mammo retrain` runs that DAG locally),
and copies the last two into the kustomize base, which cannot reference files outside its own folder.

One container template per task: its command line is exactly `Task.argv("/work")`, its inputs are the
upstream tasks' output folders mounted at `/work/<task>` (key-only S3 artifacts, directories without
archiving), its output is `/work/<task>` stored under `<workflow name>/<task>/`. Both modes of the
pipeline are in one Workflow as two DAGs; the `mode` parameter picks one. GPU tasks carry the GPU limit,
toleration and node selector; `-p gpu=false` (kind, CPU clusters) strips them with a podSpecPatch and
switches to the CPU image.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from hera.workflows import models as m

from common import __version__, retrain_dag, shards
from common.constants import DOMAINS, RETRAIN
from common.pipeline import DEFAULT_CHECKPOINT_MEAN, FINETUNE_CONFIGS, Param, Task, tasks
from common.profile import DEFAULT_PROFILE, load_profile
from common.steps import STEPS, Resources, resources

# The namespace the kustomize base installs into (service account, artifact repository, S3 Secret). The Workflow
# names it itself: the argo CLI submits a manifest into its metadata.namespace, else into the kube context's.
NAMESPACE = "mammo"
NAMESPACE_SERVICE_ACCOUNT = "mammo-workflow"
ARTIFACT_REPOSITORY = m.ArtifactRepositoryRef(config_map="artifact-repositories", key="default-v1")
WORK = "/work"
RUN_AS = 10001
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
# What a GPU step asks for when it runs on a CPU node instead (kind, CPU clusters): a GPU step's 4 CPUs would
# keep it Pending on a small node, and without the GPU the step is slow whatever it reserves.
CPU_FALLBACK_CPU = "1"
# Strategic-merge patch that takes a GPU template back to a plain CPU pod (null deletes a field). Written
# with spaces between closing braces because Argo's template tags end at the first double brace.
CPU_PATCH = json.dumps({"nodeSelector": None, "containers": [
    {"name": "main", "resources": {"requests": {"cpu": CPU_FALLBACK_CPU}, "limits": {GPU_RESOURCE: None}}}]}
).replace("}}", "} }").replace("}}", "} }")
HEADER = "# Rendered by `make argo` (python -m common.argo_render) from common/pipeline.py - do not edit by hand.\n"


def _tag(expression: str) -> str:
    """An Argo template tag, `{{...}}`."""
    return "{{" + expression + "}}"


def _param(name: str) -> str:
    return _tag(f"workflow.parameters.{name}")


def _artifact_key(task_name: str) -> str:
    """Where a task's output folder lives in the artifact repository (a directory key ends in /)."""
    return _tag("workflow.name") + f"/{task_name}/"


def _gpu_switch(when_gpu: str, when_cpu: str) -> str:
    return _tag(f"=workflow.parameters.gpu == 'true' ? '{when_gpu}' : '{when_cpu}'")


def argo_name(name: str) -> str:
    """Argo parameter names use hyphens; pipeline params and profile keys use underscores and dots."""
    return name.replace("_", "-").replace(".", "-")


# Workflow parameters: (name, default, description, enum).
def _pipeline_parameters() -> list[m.Parameter]:
    demo = load_profile(DEFAULT_PROFILE)
    rows: list[tuple[str, str, str, list[str] | None]] = [
        ("mode", "synthetic", "synthetic: demo domains generated in the cluster; real: hospital data + checkpoint",
         ["synthetic", "real"]),
        ("profile", DEFAULT_PROFILE, "settings profile (full needs GPUs; ci: wiring check)", ["full", "demo", "ci"]),
        ("gpu", "true", "false runs the GPU steps on CPU nodes with the CPU images (kind)", ["true", "false"]),
        ("gpus", "1", "GPUs per training pod (MirroredStrategy over them; the global batch stays the profile's)",
         None),
        ("shards", "4", "pods per sharded CPU step (preprocess, radiomics); fewer when the data is small", None),
        ("hospital-dicom", "hospital/dicom/", "real mode: S3 key (folder, ending in /) of the hospital's DICOMs", None),
        ("hospital-cohort", "hospital/cohort.csv", "real mode: S3 key of the hospital's cohort.csv", None),
        ("checkpoint", "checkpoints/inbreast_vgg16_512x1.h5", "real mode: S3 key of the published End2End .h5", None),
        ("checkpoint-mean", DEFAULT_CHECKPOINT_MEAN, "featurewise mean of the checkpoint (44.33 INbreast, 52.18 DDSM)",
         None),
    ]
    rows += [(f"finetune-config{c}", "true", f"run fine-tuning configuration {c} (thesis Table 6)", ["true", "false"])
             for c in FINETUNE_CONFIGS]
    rows += [(f"synth-patients-{d}", str(demo.value(f"synth.patients.{d}")),
              f"synthetic mode: patients of the {d} domain (the profile's synth.patients.{d} for demo)", None)
             for d in DOMAINS]
    rows += [
        ("image-registry", "localhost:5000", "registry holding the mammo-<step> images (make images REGISTRY=...)",
         None),
        ("image-tag", __version__, "image version tag; GPU images add -gpu", None),
        ("pushgateway-url", "http://mammo-pushgateway:9091", "Prometheus Pushgateway the steps push to", None),
        ("pipeline-id", "mammo-full-pipeline", "stable grouping key of the pushed metrics (not a run id)", None),
    ]
    return [m.Parameter(name=n, value=v, description=d, enum=e) for n, v, d, e in rows]


def _image(step: str, gpu: bool) -> str:
    image = STEPS[step].image
    if image is None:
        raise KeyError(f"step {step} has no image in common.steps")
    base = f"{_param('image-registry')}/mammo-{image}:{_param('image-tag')}"
    return base + _gpu_switch("-gpu", "") if gpu else base


def _env(task_name: str, extra: Iterable[m.EnvVar] = ()) -> list[m.EnvVar]:
    """Every step gets the storage region: boto3 falls back to us-east-1 without it, wrong for any other region."""
    region = m.EnvVarSource(config_map_key_ref=m.ConfigMapKeySelector(name="mammo-storage", key="region"))
    return [
        m.EnvVar(name="PUSHGATEWAY_URL", value=_param("pushgateway-url")),
        m.EnvVar(name="PIPELINE_ID", value=_param("pipeline-id")),
        m.EnvVar(name="MAMMO_TASK", value=task_name),
        m.EnvVar(name="AWS_REGION", value_from=region),
        m.EnvVar(name="AWS_DEFAULT_REGION", value_from=region),
        *extra,
    ]


def _container_security() -> m.SecurityContext:
    return m.SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=m.Capabilities(drop=["ALL"]),
    )


def _mounts() -> list[m.VolumeMount]:
    return [m.VolumeMount(name="work", mount_path=WORK), m.VolumeMount(name="tmp", mount_path="/tmp")]


def _metrics(label: str) -> m.Metrics:
    """Emitted by the controller for every task run: its duration and a count by final status."""
    labels = [m.MetricLabel(key="task", value=label), m.MetricLabel(key="status", value="{{status}}")]
    return m.Metrics(prometheus=[
        m.Prometheus(name="mammo_task_duration_seconds", help="Duration of a mammo pipeline task run.",
                     labels=labels, gauge=m.Gauge(realtime=False, value="{{duration}}")),
        m.Prometheus(name="mammo_task_runs_total", help="Finished mammo pipeline task runs by final status.",
                     labels=labels, counter=m.Counter(value="1")),
    ])


def _retry() -> m.RetryStrategy:
    """Retries pod-level errors (node lost, preempted GPU, eviction), not a step's own failures:
    exit code 2 means unusable input, which a retry cannot fix; storage faults are retried in-process.

    No backoff.maxDuration: the controller measures it from the first attempt's start, so with any value below
    the step's own deadline a training step failing after that long is never retried, and a retry's pod is
    killed at first start + maxDuration. Each attempt is bounded by the template's activeDeadlineSeconds, the
    number of attempts by the limit, and the whole run by the workflow's deadline."""
    return m.RetryStrategy(limit=m.IntOrString(2), retry_policy="OnError",
                           backoff=m.Backoff(duration="1m", factor=m.IntOrString(2)))


def _resources(task: Task) -> m.ResourceRequirements:
    res = task.resources
    if not res.gpu:
        return _cpu_resources(res)
    limits = {"memory": m.Quantity(res.memory_limit)}
    if res.gpu:
        # Training steps mirror over every GPU of their pod (common.distribute); `gpus` says how many.
        limits[GPU_RESOURCE] = m.Quantity(_param("gpus") if STEPS[task.step].multi_gpu else "1")
    return m.ResourceRequirements(requests={"cpu": m.Quantity(res.cpu), "memory": m.Quantity(res.memory)},
                                  limits=limits)


def _cpu_resources(res: Resources) -> m.ResourceRequirements:
    return m.ResourceRequirements(requests={"cpu": m.Quantity(res.cpu), "memory": m.Quantity(res.memory)},
                                  limits={"memory": m.Quantity(res.memory_limit)})


def _external_path(param: Param) -> str:
    folder = f"{WORK}/input/{argo_name(param.name)}"
    return f"{folder}/{param.filename}" if param.kind == "file" else folder


def _conditional(task_name: str) -> str | None:
    """The workflow parameter that switches a task on, if any (the fine-tuning configurations)."""
    for config in FINETUNE_CONFIGS:
        if task_name.startswith(f"finetune{config}-"):
            return f"finetune-config{config}"
    return None


def _step_template(task: Task, template_name: str) -> m.Template:
    bindings: dict[str, str] = {}
    artifacts: list[m.Artifact] = []
    for param in task.external_inputs:
        if param.kind == "value":
            bindings[param.name] = _param(argo_name(param.name))
            continue
        bindings[param.name] = _external_path(param)
        artifacts.append(m.Artifact(name=argo_name(param.name), path=_external_path(param),
                                    s3=m.S3Artifact(key=_param(argo_name(param.name)))))
    for domain in DOMAINS:
        bindings[f"synth.patients.{domain}"] = _param(f"synth-patients-{domain}")
    for upstream in task.depends:
        if _conditional(upstream) and not _conditional(task.name):
            # A task that may have been skipped: read its folder by key, tolerating its absence.
            artifacts.append(m.Artifact(name=upstream, path=f"{WORK}/{upstream}", optional=True,
                                        s3=m.S3Artifact(key=_artifact_key(upstream))))
        else:
            artifacts.append(m.Artifact(name=upstream, path=f"{WORK}/{upstream}"))
    argv = task.argv(WORK, params=bindings, profile=_param("profile"))
    gpu = task.resources.gpu
    return m.Template(
        name=template_name,
        inputs=m.Inputs(artifacts=artifacts or None),
        outputs=m.Outputs(artifacts=[m.Artifact(
            name="out", path=f"{WORK}/{task.name}", archive=m.ArchiveStrategy(none=m.NoneStrategy()),
            s3=m.S3Artifact(key=_artifact_key(task.name)))]),
        container=m.Container(
            image=_image(task.step, gpu), command=["mammo"], args=argv, env=_env(task.name),
            resources=_resources(task), volume_mounts=_mounts(), security_context=_container_security()),
        node_selector={GPU_NODE_LABEL: "true"} if gpu else None,
        tolerations=[m.Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")] if gpu else None,
        pod_spec_patch=_gpu_switch("{}", CPU_PATCH) if gpu else None,
        retry_strategy=_retry(),
        active_deadline_seconds=m.IntOrString(task.resources.deadline_seconds),
        metrics=_metrics(task.name),
    )


def _dag(name: str, plan: list[Task], template_names: dict[str, str]) -> m.Template:
    dag_tasks = []
    for task in plan:
        if shards.is_sharded(task.step):
            dag_tasks += _sharded_dag_tasks(task, template_names[task.name])
        else:
            dag_tasks.append(_dag_task(task, task.name, template_names[task.name]))
    return m.Template(name=name, dag=m.DAGTemplate(tasks=dag_tasks))


def _dag_task(task: Task, name: str, template: str, after: tuple[str, ...] = (), **fields: Any) -> m.DAGTask:
    switch = _conditional(task.name)
    arguments = [m.Artifact(name=u, from_=_tag(f"tasks.{u}.outputs.artifacts.out"))
                 for u in task.depends if not (_conditional(u) and not _conditional(task.name))]
    parameters = fields.pop("parameters", None)
    return m.DAGTask(
        name=name,
        template=template,
        depends=" && ".join(dict.fromkeys((*task.depends, *after))) or None,
        when=f"{_param(switch)} == true" if switch else None,
        arguments=m.Arguments(artifacts=arguments or None, parameters=parameters) if arguments or parameters else None,
        **fields,
    )


# --- Sharded CPU steps: plan -> shards (withParam fan-out) -> merge, named <task>-plan, <task>-shard, <task> ----

def _templates(task: Task, name: str) -> list[m.Template]:
    if not shards.is_sharded(task.step):
        return [_step_template(task, name)]
    return [_merge_template(task, name), _plan_template(task, name), _shard_template(task, name)]


def _shards_path(task: Task) -> str:
    return f"{WORK}/{task.name}{shards.SHARDS_SUFFIX}"


def _size_source(task: Task) -> tuple[str | None, str]:
    """(upstream task or None, S3 key) of the small table the plan pod counts."""
    sharded = shards.SHARDED_STEPS[task.step]
    value = dict(task.args)[sharded.size_arg]
    if isinstance(value, Param):
        return None, _param(argo_name(value.name))
    path = "/".join(part for part in (value.path, sharded.size_file) if part)
    return value.task, _tag("workflow.name") + f"/{value.task}/{path}"


PLAN_RESOURCES = resources("shard-plan")


def _plan_template(task: Task, name: str) -> m.Template:
    rows = f"{WORK}/plan/rows.csv"
    return m.Template(
        name=f"{name}-plan",
        inputs=m.Inputs(artifacts=[m.Artifact(name="rows", path=rows, s3=m.S3Artifact(key=_size_source(task)[1]))]),
        outputs=m.Outputs(parameters=[m.Parameter(name="shards", value_from=m.ValueFrom(path="/tmp/plan.json"))]),
        container=m.Container(
            image=_image(task.step, gpu=False), command=["mammo"],
            args=["shard-plan", "--step", task.step, "--rows", rows, "--shards", _param("shards"),
                  "--plan", "/tmp/plan.json"],
            env=_env(f"{task.name}-plan"),
            resources=_cpu_resources(PLAN_RESOURCES),
            volume_mounts=_mounts(), security_context=_container_security()),
        retry_strategy=_retry(),
        active_deadline_seconds=m.IntOrString(PLAN_RESOURCES.deadline_seconds),
    )


def _shard_template(task: Task, name: str) -> m.Template:
    """The task's own template, run on shard {{inputs.parameters.index}} of {{inputs.parameters.count}}."""
    index, count = _tag("inputs.parameters.index"), _tag("inputs.parameters.count")
    template = _step_template(task, f"{name}-shard")
    out = f"{_shards_path(task)}/{index}"
    template.container.args = shards.shard_argv(template.container.args, _shards_path(task), index, count)
    template.container.env = _env(f"{task.name}-shard-{index}")  # its own Pushgateway group
    template.inputs.parameters = [m.Parameter(name="index"), m.Parameter(name="count")]
    template.outputs = m.Outputs(artifacts=[m.Artifact(
        name="out", path=out, archive=m.ArchiveStrategy(none=m.NoneStrategy()),
        s3=m.S3Artifact(key=_tag("workflow.name") + f"/{task.name}{shards.SHARDS_SUFFIX}/{index}/"))])
    return template


def _merge_task(task: Task) -> Task:
    """The task as its merge runs it: without the inputs only shards read, with the shards folder."""
    drops = shards.SHARDED_STEPS[task.step].merge_drops
    args = tuple(arg for arg in task.args if arg[0] not in drops)
    return replace(task, args=(*args, ("--merge-shards", _shards_path(task))))


def _merge_template(task: Task, name: str) -> m.Template:
    template = _step_template(_merge_task(task), name)
    shards_key = _tag("workflow.name") + f"/{task.name}{shards.SHARDS_SUFFIX}/"
    template.inputs.artifacts = [*(template.inputs.artifacts or []),
                                 m.Artifact(name="shards", path=_shards_path(task), s3=m.S3Artifact(key=shards_key))]
    return template


def _sharded_dag_tasks(task: Task, template: str) -> list[m.DAGTask]:
    upstream, _ = _size_source(task)
    plan = m.DAGTask(name=f"{task.name}-plan", template=f"{template}-plan", depends=upstream)
    shard = _dag_task(task, f"{task.name}-shard", f"{template}-shard", after=(plan.name,),
                      with_param=_tag(f"tasks.{plan.name}.outputs.parameters.shards"),
                      parameters=[m.Parameter(name="index", value=_tag("item.index")),
                                  m.Parameter(name="count", value=_tag("item.count"))])
    merge = _dag_task(_merge_task(task), task.name, template, after=(shard.name,))
    return [plan, shard, merge]


def _exit_handler() -> m.Template:
    """Records the workflow's outcome on the Pushgateway, whatever happened to the tasks."""
    return m.Template(
        name="record-outcome",
        container=m.Container(
            image=_image("report", gpu=False), command=["python", "-m", "common.telemetry"],
            env=_env("record-outcome", [m.EnvVar(name="WORKFLOW_STATUS", value="{{workflow.status}}"),
                                        m.EnvVar(name="WORKFLOW_DURATION", value="{{workflow.duration}}")]),
            resources=m.ResourceRequirements(requests={"cpu": m.Quantity("50m"), "memory": m.Quantity("128Mi")},
                                             limits={"memory": m.Quantity("512Mi")}),
            volume_mounts=_mounts(), security_context=_container_security()),
        retry_strategy=m.RetryStrategy(limit=m.IntOrString(2), retry_policy="Always"),
        active_deadline_seconds=m.IntOrString(300),
    )


def pipeline_spec() -> m.WorkflowSpec:
    """Spec shared by the Workflow and the WorkflowTemplate: both modes' DAGs, chosen by `mode`."""
    plans = {
        "synthetic": tasks("synthetic", DEFAULT_PROFILE),
        "real": tasks("real", DEFAULT_PROFILE, {"hospital_dicom": "-", "hospital_cohort": "-", "checkpoint": "-"}),
    }
    templates: dict[str, m.Template] = {}
    dags = []
    for mode, plan in plans.items():
        names: dict[str, str] = {}
        for task in plan:
            candidates = _templates(task, task.name)
            existing = [templates.get(t.name) for t in candidates]
            if existing == [None] * len(candidates) or existing == candidates:
                names[task.name] = task.name
            else:
                names[task.name] = f"{task.name}-{mode}"
                candidates = _templates(task, names[task.name])
            templates.update({t.name: t for t in candidates})
        dags.append(_dag(mode, plan, names))
    entry = m.Template(name="pipeline", dag=m.DAGTemplate(tasks=[
        m.DAGTask(name=mode, template=mode, when=f"'{_param('mode')}' == '{mode}'") for mode in plans]))
    return _workflow_spec("pipeline", [entry, *dags, *templates.values(), _exit_handler()],
                          _pipeline_parameters(), deadline_seconds=5 * 24 * 3600)


def _workflow_spec(entrypoint: str, templates: list[m.Template], parameters: list[m.Parameter],
                   deadline_seconds: int) -> m.WorkflowSpec:
    return m.WorkflowSpec(
        entrypoint=entrypoint,
        arguments=m.Arguments(parameters=parameters),
        templates=templates,
        on_exit="record-outcome",
        service_account_name=NAMESPACE_SERVICE_ACCOUNT,
        artifact_repository_ref=ARTIFACT_REPOSITORY,
        security_context=m.PodSecurityContext(
            run_as_non_root=True, run_as_user=RUN_AS, run_as_group=RUN_AS, fs_group=RUN_AS,
            seccomp_profile=m.SeccompProfile(type="RuntimeDefault")),
        volumes=[m.Volume(name="work", empty_dir=m.EmptyDirVolumeSource()),
                 m.Volume(name="tmp", empty_dir=m.EmptyDirVolumeSource())],
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_success=7 * 24 * 3600, seconds_after_failure=14 * 24 * 3600),
        active_deadline_seconds=deadline_seconds,
        pod_metadata=m.Metadata(labels={"app.kubernetes.io/part-of": "mammo"}),
    )


def _metadata(**fields: Any) -> m.ObjectMeta:
    return m.ObjectMeta(labels={"app.kubernetes.io/part-of": "mammo"}, **fields)


def full_pipeline() -> m.Workflow:
    return m.Workflow(api_version="argoproj.io/v1alpha1", kind="Workflow",
                      metadata=_metadata(generate_name="mammo-full-pipeline-", namespace=NAMESPACE),
                      spec=pipeline_spec())


def full_pipeline_template() -> m.WorkflowTemplate:
    return m.WorkflowTemplate(api_version="argoproj.io/v1alpha1", kind="WorkflowTemplate",
                              metadata=_metadata(name="mammo-full-pipeline", namespace=NAMESPACE),
                              spec=pipeline_spec())


def _retrain_parameters() -> list[m.Parameter]:
    rows = [
        ("profile", DEFAULT_PROFILE, "settings profile", ["full", "demo", "ci"]),
        ("gpu", "true", "false runs the GPU steps on CPU nodes with the CPU images (kind)", ["true", "false"]),
        ("hospital", "s3://mammo/hospital/incoming/", "where the hospital drops new studies (one folder each)"),
        ("cohort", "s3://mammo/hospital/cohort.csv", "the hospital's cohort.csv covering every study"),
        ("registry", "s3://mammo/models/", "model registry (models/<id>/, champion.json)"),
        ("state", "s3://mammo/retrain/", "retraining state, training data and run records"),
        ("min-new-studies", str(RETRAIN.min_new_studies), "fewer new studies than this end the run early"),
        ("margin", str(RETRAIN.margin), "non-inferiority margin on the AUC difference challenger - champion"),
        ("finetune-config", str(RETRAIN.finetune_config), "stage-1 configuration used to fine-tune the challenger",
         ["1", "2"]),
        ("alpha", str(RETRAIN.alpha), "one-sided level of the non-inferiority test"),
        ("seed-champion", "", "s3:// model folder registered as champion when the registry has none (first run)"),
        ("shards", "4", "pods per sharded CPU step (preprocess of the new studies)"),
        ("gpus", "1", "GPUs per fine-tuning pod (MirroredStrategy; the global batch stays the profile's)"),
        ("image-registry", "localhost:5000", "registry holding the mammo-<step> images"),
        ("image-tag", __version__, "image version tag; GPU images add -gpu"),
        ("pushgateway-url", "http://mammo-pushgateway:9091", "Prometheus Pushgateway"),
        ("pipeline-id", "mammo-retrain", "stable grouping key of the pushed metrics"),
    ]
    return [m.Parameter(name=r[0], value=r[1], description=r[2], enum=r[3] if len(r) > 3 else None) for r in rows]


def retrain_cron() -> m.CronWorkflow:
    """Scheduled retraining as a DAG of the pipeline's step templates (common.retrain_dag); every task after
    `discover` runs only when discover found enough new studies."""
    storage_env = [
        m.EnvVar(name="AWS_ACCESS_KEY_ID", value_from=m.EnvVarSource(
            secret_key_ref=m.SecretKeySelector(name="mammo-s3", key="accesskey"))),
        m.EnvVar(name="AWS_SECRET_ACCESS_KEY", value_from=m.EnvVarSource(
            secret_key_ref=m.SecretKeySelector(name="mammo-s3", key="secretkey"))),
        m.EnvVar(name="AWS_ENDPOINT_URL", value_from=m.EnvVarSource(
            config_map_key_ref=m.ConfigMapKeySelector(name="mammo-storage", key="endpoint", optional=True))),
    ]
    plan = retrain_dag.retrain_tasks(DEFAULT_PROFILE)
    templates = [t for task in plan for t in _templates(task, task.name)]
    for template in templates:
        template.container.env = [*template.container.env, *storage_env]
        # The run id is the workflow's name (unique per run, and the artifact keys' prefix already).
        template.container.args = [arg.replace(_param("run-id"), _tag("workflow.name"))
                                   for arg in template.container.args]
    discover = next(t for t in templates if t.name == retrain_dag.DISCOVER)
    discover.outputs.parameters = [m.Parameter(name="proceed", value_from=m.ValueFrom(
        path=f"{WORK}/{retrain_dag.DISCOVER}/proceed.txt"))]
    proceed = f"{_tag(f'tasks.{retrain_dag.DISCOVER}.outputs.parameters.proceed')} == true"
    dag_tasks = []
    for task in plan:
        made = _sharded_dag_tasks(task, task.name) if shards.is_sharded(task.step) else \
            [_dag_task(task, task.name, task.name)]
        for dag_task in made:
            if task.name != retrain_dag.DISCOVER:
                dag_task.when = proceed
        dag_tasks += made
    entry = m.Template(name="retrain", dag=m.DAGTemplate(tasks=dag_tasks))
    spec = _workflow_spec("retrain", [entry, *templates, _exit_handler()], _retrain_parameters(),
                          deadline_seconds=4 * 24 * 3600)
    return m.CronWorkflow(
        api_version="argoproj.io/v1alpha1", kind="CronWorkflow",
        metadata=_metadata(name="mammo-retrain", namespace=NAMESPACE),
        spec=m.CronWorkflowSpec(
            schedules=["0 3 * * 1"], timezone="Etc/UTC", concurrency_policy="Forbid",
            starting_deadline_seconds=3600, successful_jobs_history_limit=5, failed_jobs_history_limit=5,
            workflow_spec=spec),
    )


RENDERINGS = {
    "full-pipeline.yaml": full_pipeline,
    "full-pipeline-template.yaml": full_pipeline_template,
    "retrain-cron.yaml": retrain_cron,
}
# The kustomize base installs these two into the cluster.
INSTALLED = ("full-pipeline-template.yaml", "retrain-cron.yaml")


def as_dict(obj: m.Workflow | m.WorkflowTemplate | m.CronWorkflow) -> dict[str, Any]:
    return obj.model_dump(by_alias=True, exclude_none=True, mode="json")


def render_text(name: str) -> str:
    return HEADER + yaml.safe_dump(as_dict(RENDERINGS[name]()), sort_keys=False, width=1000)


def write(argo_dir: Path, manifests_base: Path | None = None) -> list[Path]:
    written = []
    for name in RENDERINGS:
        targets = [argo_dir / name] + ([manifests_base / "argo" / name] if manifests_base and name in INSTALLED else [])
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render_text(name))
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m common.argo_render ARGO_DIR [KUSTOMIZE_BASE_DIR]", file=sys.stderr)
        return 2
    for path in write(Path(argv[0]), Path(argv[1]) if len(argv) == 2 else None):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

