"""The rendered Argo Workflow, run on this machine as one podman (or docker) container per task.

This is the closest a machine without a cluster comes to the kind test: it reads the Workflow object that
common.argo_render renders from common/pipeline.py (the one `argo submit` gets, not a copy of its task
list) and does for each DAG task what Argo's controller and executor would:
- evaluates `when` and `depends`, and the `{{workflow.parameters...}}`, `{{workflow.name}}`,
  `{{inputs.parameters...}}`, `{{tasks.X.outputs.parameters...}}` and `{{=... ? ... : ...}}` tags;
- fans a task with `withParam` out over the JSON list its producing task wrote as an output parameter
  (`valueFrom.path`): one container per item, `{{item}}` / `{{item.field}}` substituted into the task's
  arguments; the task's status for `depends` is the aggregate (Succeeded when every item did, Failed when
  any did, after all of them ran as Argo's parallel children would; Skipped when the list is empty);
- downloads the task's input artifacts from the artifact repository (an S3 bucket) into fresh emptyDir
  folders mounted where the template mounts them, and runs the template's image with its command,
  arguments and environment, as the pod's user and group, with a read-only root file system (only the
  emptyDir mounts are writable), no capabilities and no privilege escalation;
- uploads the output artifact to its key (`<workflow name>/<task>/`) once the task succeeded;
- runs the exit handler with the workflow's status and duration.
Tasks pass nothing to each other except through S3, exactly as in the cluster. What it does not do:
schedule by resource requests (tasks, and the items of a fan-out, run one after the other), retry pod
errors, or emit the controller's own task metrics. A template using an Argo feature outside that subset
fails with its name, rather than running differently from Argo.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.constants import DOMAINS
from common.engine import Engine
from common.storage import S3Uri, Storage

Echo = Callable[[str], None]
TAG = re.compile(r"\{\{(.*?)\}\}")
TERNARY = re.compile(r"^=\s*workflow\.parameters\.([\w-]+)\s*==\s*'([^']*)'\s*\?\s*'([^']*)'\s*:\s*'([^']*)'\s*$")
COMPARISON = re.compile(r"^\s*(\S+)\s*(==|!=)\s*(\S+)\s*$")
WITH_PARAM = re.compile(r"^\{\{tasks\.([a-z0-9-]+)\.outputs\.parameters\.([\w-]+)\}\}$")
UNSUPPORTED_TASK_FIELDS = ("withItems", "withSequence", "continueOn", "hooks", "onExit")
SUPPORTED_VALUE_FROM = {"path", "default"}
HOST_VALUE_FROM = {"configMapKeyRef", "secretKeyRef"}  # taken from this process's environment instead
SUPPORTED_TEMPLATE_KINDS = ("container", "dag")


class UnsupportedWorkflow(ValueError):
    """The Workflow uses an Argo feature this executor does not reproduce."""


class WorkflowFailed(RuntimeError):
    """A task failed; the workflow stopped there, as Argo's fail-fast DAG does."""


@dataclass
class Run:
    """One workflow run: its name, parameters and what happened to each task."""

    name: str
    parameters: dict[str, str]
    status: dict[str, str] = field(default_factory=dict)  # task -> Succeeded | Skipped | Failed
    seconds: dict[str, float] = field(default_factory=dict)
    output_keys: dict[str, str] = field(default_factory=dict)  # task -> S3 key of its output folder
    output_parameters: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> name -> value
    started: float = field(default_factory=time.time)

    def substitute(self, text: str, extra: Mapping[str, str] | None = None) -> str:
        """Replace every template tag; an unknown tag is an error, never left in a command line."""
        values = {"workflow.name": self.name, **{f"workflow.parameters.{k}": v for k, v in self.parameters.items()},
                  **{f"tasks.{task}.outputs.parameters.{k}": v
                     for task, outputs in self.output_parameters.items() for k, v in outputs.items()},
                  **(extra or {})}

        def replace(match: re.Match) -> str:
            expression = match[1].strip()
            if expression.startswith("="):
                ternary = TERNARY.match(expression)
                if not ternary:
                    raise UnsupportedWorkflow(f"expression tag {match[0]!r}")
                name, expected, when_true, when_false = ternary.groups()
                return when_true if self.parameter(name) == expected else when_false
            if expression not in values:
                raise UnsupportedWorkflow(f"tag {match[0]!r} has no value here")
            return values[expression]

        return TAG.sub(replace, text)

    def parameter(self, name: str) -> str:
        if name not in self.parameters:
            raise UnsupportedWorkflow(f"workflow parameter {name!r} is not defined")
        return self.parameters[name]


def workflow_parameters(spec: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """The Workflow's parameter defaults with `-p name=value` style overrides (unknown names refused)."""
    defaults = {p["name"]: str(p.get("value", "")) for p in spec.get("arguments", {}).get("parameters", [])}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise UnsupportedWorkflow(f"the Workflow has no parameter(s) {', '.join(unknown)}")
    return {**defaults, **{k: str(v) for k, v in overrides.items()}}


def condition_holds(expression: str) -> bool:
    """A `when` after substitution: `a == b` or `a != b`, quotes ignored (all this Workflow uses)."""
    match = COMPARISON.match(expression)
    if not match:
        raise UnsupportedWorkflow(f"when {expression!r}")
    left, operator, right = (part.strip("'\"") for part in match.groups())
    return (left == right) == (operator == "==")


def item_tags(item: Any) -> dict[str, str]:
    """`{{item}}` and, for an object, `{{item.<field>}}` as Argo renders them: strings as they are, other values
    (numbers, booleans, objects) as JSON."""
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    fields = {f"item.{k}": text(v) for k, v in item.items()} if isinstance(item, dict) else {}
    return {"item": text(item), **fields}


def fan_out_items(task_name: str, value: str) -> list[Any]:
    """The list a `withParam` expands to; anything but a JSON list fails the task, as it does in Argo."""
    try:
        items = json.loads(value)
    except ValueError:
        items = None
    if not isinstance(items, list):
        raise WorkflowFailed(f"task {task_name}: withParam value could not be parsed as a JSON list: {value[:200]!r}")
    return items


def depends_on(task: Mapping[str, Any]) -> list[str]:
    """Task names of a `depends` made only of `&&` (a skipped dependency counts as done, as in Argo)."""
    text = task.get("depends") or ""
    names = [part.strip() for part in text.split("&&") if part.strip()]
    for name in names:
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise UnsupportedWorkflow(f"task {task['name']}: depends {text!r}")
    return names


class Executor:
    """Runs one Workflow object (a dict as rendered) with an engine, an S3 bucket and a scratch folder."""

    def __init__(self, workflow: Mapping[str, Any], engine: Engine, storage: Storage, bucket: str,
                 scratch: Path, echo: Echo = print):
        self.spec = workflow["spec"]
        self.generate_name = workflow.get("metadata", {}).get("generateName") or "mammo-"
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        self.engine = engine
        self.storage = storage
        self.bucket = bucket
        self.scratch = scratch
        self.echo = echo

    def check(self) -> None:
        """Refuse, before anything runs, a Workflow using what this executor would run differently from Argo."""
        for volume in self.spec.get("volumes", []):
            if set(volume) != {"name", "emptyDir"}:
                raise UnsupportedWorkflow(f"volume {volume['name']}: only emptyDir volumes are run here")
        for template in self.spec["templates"]:
            kinds = [kind for kind in SUPPORTED_TEMPLATE_KINDS if kind in template]
            if len(kinds) != 1:
                raise UnsupportedWorkflow(f"template {template['name']}: only container and dag templates run here")
            for task in template.get("dag", {}).get("tasks", []):
                used = [key for key in UNSUPPORTED_TASK_FIELDS if key in task]
                if used:
                    raise UnsupportedWorkflow(f"task {task['name']}: {', '.join(used)}")
                source = WITH_PARAM.match(task.get("withParam", ""))
                if "withParam" in task and not (source and source[1] in depends_on(task)):
                    raise UnsupportedWorkflow(f"task {task['name']}: withParam {task['withParam']!r}: only an output "
                                              "parameter of a task it depends on is run here")
                depends_on(task)
            for parameter in template.get("outputs", {}).get("parameters", []):
                source = parameter.get("valueFrom", {})
                if "path" not in source or set(source) - SUPPORTED_VALUE_FROM:
                    raise UnsupportedWorkflow(f"template {template['name']}: output parameter {parameter['name']}: "
                                              "only valueFrom.path is run here")
            for variable in template.get("container", {}).get("env", []):
                if "value" not in variable and set(variable.get("valueFrom", {"-": 0})) - HOST_VALUE_FROM:
                    raise UnsupportedWorkflow(f"env {variable['name']}: only literal values and ConfigMap/Secret "
                                              "keys (this machine's own variable of that name) are run here")

    def run(self, parameters: Mapping[str, str], name: str | None = None) -> Run:
        self.check()
        run = Run(name or f"{self.generate_name}{secrets.token_hex(3)[:5]}", workflow_parameters(self.spec, parameters))
        self.echo(f"workflow {run.name}: {self.engine.name} containers, artifacts in s3://{self.bucket}/{run.name}/")
        status = "Succeeded"
        try:
            self._template(run, self.spec["entrypoint"], self.spec["entrypoint"], {}, {})
        except WorkflowFailed:
            status = "Failed"
            raise
        finally:
            if self.spec.get("onExit"):
                duration = f"{time.time() - run.started:.1f}"
                self._container(run, self.spec["onExit"], self.templates[self.spec["onExit"]], {},
                                {"workflow.status": status, "workflow.duration": duration})
        return run

    def _template(self, run: Run, task_name: str, name: str, artifacts: Mapping[str, str],
                  parameters: Mapping[str, str]) -> None:
        template = self.templates[name]
        if "dag" in template:
            self._dag(run, template)
        else:
            self._container(run, task_name, template, artifacts, input_tags(template, parameters, task_name))

    def _dag(self, run: Run, template: Mapping[str, Any]) -> None:
        for task in template["dag"]["tasks"]:
            waiting = [d for d in depends_on(task) if d not in run.status]
            if waiting:
                raise UnsupportedWorkflow(f"task {task['name']} is listed before {waiting} it depends on")
            if task.get("when") and not condition_holds(run.substitute(task["when"])):
                run.status[task["name"]] = "Skipped"
                continue
            artifacts = {}
            for artifact in task.get("arguments", {}).get("artifacts", []):
                source = re.fullmatch(r"\{\{tasks\.([a-z0-9-]+)\.outputs\.artifacts\.out\}\}", artifact.get("from", ""))
                if not source:
                    raise UnsupportedWorkflow(f"task {task['name']}: artifact argument {artifact}")
                if run.status.get(source[1]) != "Succeeded":
                    raise UnsupportedWorkflow(f"task {task['name']} takes the output of {source[1]}, which did not run")
                artifacts[artifact["name"]] = run.output_keys[source[1]]
            if "withParam" in task:
                self._fan_out(run, task, artifacts)
                continue
            self._template(run, task["name"], task["template"], artifacts, self._arguments(run, task, {}))
            run.status[task["name"]] = "Succeeded"

    def _arguments(self, run: Run, task: Mapping[str, Any], item: Mapping[str, str]) -> dict[str, str]:
        return {p["name"]: run.substitute(str(p.get("value", "")), item)
                for p in task.get("arguments", {}).get("parameters", [])}

    def _fan_out(self, run: Run, task: Mapping[str, Any], artifacts: Mapping[str, str]) -> None:
        """One container per item of the list; all items run (Argo starts them together), then the aggregate."""
        items = fan_out_items(task["name"], run.substitute(task["withParam"]))
        if not items:
            self.echo(f"{task['name']}: withParam is an empty list; skipped, as Argo skips it")
            run.status[task["name"]] = "Skipped"
            return
        failures = []
        for position, item in enumerate(items):
            node = f"{task['name']}-{position}"
            try:
                self._template(run, node, task["template"], artifacts, self._arguments(run, task, item_tags(item)))
            except WorkflowFailed as error:
                failures.append(str(error))
        run.status[task["name"]] = "Failed" if failures else "Succeeded"
        if failures:
            raise WorkflowFailed(f"task {task['name']}: {len(failures)} of {len(items)} item(s) failed; "
                                 f"first: {failures[0]}")

    def _container(self, run: Run, task_name: str, template: Mapping[str, Any], arguments: Mapping[str, str],
                   extra: Mapping[str, str]) -> None:
        """Stage inputs, run the container, publish the output; raises WorkflowFailed on a non-zero exit."""
        folder = self.scratch / run.name / task_name
        volumes = self._volumes(folder)
        mounts = {m["mountPath"]: volumes[m["name"]] for m in template["container"].get("volumeMounts", [])}
        for artifact in template.get("inputs", {}).get("artifacts", []):
            key = arguments.get(artifact["name"])
            if key is None and "s3" in artifact:
                key = run.substitute(artifact["s3"]["key"], extra)
            if key is None:
                raise UnsupportedWorkflow(f"{task_name}: input artifact {artifact['name']} has no source")
            uri = S3Uri(self.bucket, key)
            target = host_path(mounts, run.substitute(artifact["path"], extra))
            if not key.endswith("/"):  # one object, placed at the artifact's path as Argo does
                self.storage.download_file(uri, target)
                continue
            if artifact.get("optional") and not self.storage.list_keys(uri):
                continue
            self.storage.download_dir(uri, target)
        for path in volumes.values():
            give_to(path, self._user())
        argv = self.command(run, template, mounts, extra, container_name=f"{run.name}-{task_name}")
        self.echo(f"{task_name}: {' '.join(run.substitute(a, extra) for a in template['container'].get('args', []))}")
        started = time.time()
        timeout = int(template.get("activeDeadlineSeconds") or 0) or None
        try:
            code = subprocess.run(argv, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            subprocess.run(self.engine.command("kill", f"{run.name}-{task_name}"), capture_output=True)
            code = -1
        run.seconds[task_name] = round(time.time() - started, 1)
        if code != 0:
            run.status[task_name] = "Failed"
            raise WorkflowFailed(f"task {task_name} failed with exit code {code} after {run.seconds[task_name]}s; "
                                 f"its folders are in {folder}")
        for artifact in template.get("outputs", {}).get("artifacts", []):
            key = run.substitute(artifact["s3"]["key"], extra)
            local = host_path(mounts, run.substitute(artifact["path"], extra))
            self.storage.publish_dir(local, S3Uri(self.bucket, key))
            run.output_keys[task_name] = key
        for parameter in template.get("outputs", {}).get("parameters", []):
            run.output_parameters.setdefault(task_name, {})[parameter["name"]] = output_parameter(
                task_name, parameter, mounts)
        run.status[task_name] = "Succeeded"
        self.echo(f"{task_name}: finished in {run.seconds[task_name]:.1f}s")
        shutil.rmtree(folder, ignore_errors=True)

    def _volumes(self, folder: Path) -> dict[str, Path]:
        """A fresh host folder for each emptyDir volume of the pod."""
        volumes = {}
        for volume in self.spec.get("volumes", []):
            path = folder / volume["name"]
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            volumes[volume["name"]] = path
        return volumes

    def _user(self) -> tuple[int, int]:
        pod = self.spec.get("securityContext", {})
        return int(pod.get("runAsUser", 0)), int(pod.get("fsGroup", pod.get("runAsGroup", 0)))

    def command(self, run: Run, template: Mapping[str, Any], mounts: Mapping[str, Path],
                extra: Mapping[str, str], container_name: str) -> list[str]:
        """The engine command line that runs a template the way its pod spec says."""
        container = template["container"]
        security = container.get("securityContext", {})
        pod = self.spec.get("securityContext", {})
        flags = ["--rm", "--name", container_name, "--network", "host"]
        if "runAsUser" in pod:
            flags += ["--user", f"{pod['runAsUser']}:{pod.get('runAsGroup', pod['runAsUser'])}"]
        if security.get("readOnlyRootFilesystem"):
            flags += ["--read-only"]
            if self.engine.name == "podman":
                flags += ["--read-only-tmpfs=false"]  # podman would add writable /tmp, /var/tmp, /run
        for capability in security.get("capabilities", {}).get("drop", []):
            flags += ["--cap-drop", capability]
        if security.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        for target, source in mounts.items():
            flags += ["-v", f"{source}:{target}"]
        for variable in container.get("env", []):
            if "value" in variable:
                flags += ["-e", f"{variable['name']}={run.substitute(variable['value'], extra)}"]
            elif variable["name"] in os.environ:  # valueFrom a ConfigMap/Secret: this machine's own value
                flags += ["-e", variable["name"]]
        if container.get("command"):
            flags += ["--entrypoint", json.dumps(container["command"])]
        args = [run.substitute(a, extra) for a in container.get("args", [])]
        return self.engine.run_command(*flags, run.substitute(container["image"]), *args)


def input_tags(template: Mapping[str, Any], given: Mapping[str, str], task_name: str) -> dict[str, str]:
    """`{{inputs.parameters.<name>}}` of a template: the task's argument, else the template's default."""
    tags = {}
    for parameter in template.get("inputs", {}).get("parameters", []):
        value = given.get(parameter["name"], parameter.get("value"))
        if value is None:
            raise UnsupportedWorkflow(f"{task_name}: input parameter {parameter['name']} has no value")
        tags[f"inputs.parameters.{parameter['name']}"] = str(value)
    return tags


def output_parameter(task_name: str, parameter: Mapping[str, Any], mounts: Mapping[str, Path]) -> str:
    """An output parameter's `valueFrom.path` file as text (its `default` where the file is missing)."""
    source = parameter["valueFrom"]
    path = host_path(mounts, source["path"])
    if path.is_file():
        return path.read_text().rstrip("\n")
    if "default" in source:
        return str(source["default"])
    raise WorkflowFailed(f"task {task_name}: output parameter {parameter['name']}: {source['path']} was not written")


def host_path(mounts: Mapping[str, Path], container_path: str) -> Path:
    """Where a container path lives on the host: under the deepest mount that holds it."""
    for target in sorted(mounts, key=len, reverse=True):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return mounts[target] / container_path[len(target):].lstrip("/")
    raise UnsupportedWorkflow(f"{container_path} is on no mounted volume (the root file system is read-only)")


def give_to(path: Path, owner: tuple[int, int]) -> None:
    """Hand an emptyDir to the pod's user, as fsGroup does; without root, open it to everyone instead."""
    for item in [path, *path.rglob("*")]:
        if os.geteuid() == 0:
            os.chown(item, *owner, follow_symlinks=False)
        elif item.is_dir():
            item.chmod(0o777)


def pipeline_parameters(profile: str, configs: tuple[int, ...], data: Mapping[str, str], bucket: str) -> dict[str, str]:
    """`-p` values for the rendered Workflow, as a user of `argo submit` would give them on this machine.

    Synthetic patient counts come from the profile (the rendering defaults to the demo's); real data must
    already be in the artifact bucket, because Argo takes external inputs as keys of that bucket.
    """
    from common.argo_render import argo_name
    from common.pipeline import FINETUNE_CONFIGS, _profile_value

    values = {"profile": profile, "gpu": "false", "image-registry": "localhost",
              "pushgateway-url": os.environ.get("PUSHGATEWAY_URL", ""),
              "mode": "real" if "hospital_dicom" in data or "hospital_cohort" in data else "synthetic"}
    if os.environ.get("PIPELINE_ID"):
        values["pipeline-id"] = os.environ["PIPELINE_ID"]
    for domain in DOMAINS:
        values[f"synth-patients-{domain}"] = str(_profile_value(profile, f"synth.patients.{domain}"))
    for config in FINETUNE_CONFIGS:
        values[f"finetune-config{config}"] = "true" if config in configs else "false"
    for name, value in data.items():
        if name == "checkpoint_mean":
            values[argo_name(name)] = str(value)
            continue
        uri = S3Uri.parse(str(value)) if str(value).startswith("s3://") else None
        if uri is None or uri.bucket != bucket:
            raise UnsupportedWorkflow(f"{name}: give it as s3://{bucket}/<key>, as Argo takes it from its bucket")
        values[argo_name(name)] = uri.key
    return values


def run_pipeline(profile: str, configs: tuple[int, ...], data: Mapping[str, str], artifacts: str, workdir: Path,
                 echo: Echo = print) -> Run:
    """Render the Workflow, run it in containers, and fetch its report folder into `workdir/report`."""
    from common import __version__, argo_render
    from common.engine import detect

    bucket = S3Uri.parse(artifacts).bucket
    parameters = {"image-tag": __version__, **pipeline_parameters(profile, configs, data, bucket)}
    workflow = argo_render.as_dict(argo_render.full_pipeline())
    first_image = Run("-", workflow_parameters(workflow["spec"], parameters)).substitute(
        next(t for t in workflow["spec"]["templates"] if "container" in t)["container"]["image"])
    executor = Executor(workflow, detect(first_image), Storage(), bucket, workdir / "containers", echo)
    run = executor.run(parameters)
    report = workdir / "report"
    shutil.rmtree(report, ignore_errors=True)
    executor.storage.download_dir(S3Uri(bucket, run.output_keys["report"]), report)
    return run
