"""Offline checks of Argo objects: unknown fields against Hera's models, and the semantics a controller
would only reject at run time (DAG references, cycles, artifact wiring, parameters, command lines)."""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from hera.workflows import models as m
from pydantic import BaseModel, RootModel

from common import steps

KINDS = {"Workflow": m.Workflow, "WorkflowTemplate": m.WorkflowTemplate, "CronWorkflow": m.CronWorkflow}
GPU_STEPS = set(steps.gpu_steps())
PARAM_REF = re.compile(r"workflow\.parameters\.([A-Za-z0-9_-]+)|workflow\.parameters\['([^']+)'\]")
FROM_REF = re.compile(r"^\{\{tasks\.([A-Za-z0-9-]+)\.outputs\.artifacts\.([A-Za-z0-9_-]+)\}\}$")
METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def unknown_fields(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Keys in `data` that the model does not define (pydantic silently drops them), recursively."""
    if issubclass(model, RootModel):
        return _walk(model.model_fields["root"].annotation, data, path)
    if not isinstance(data, dict):
        return [f"{path or '.'}: expected an object, got {type(data).__name__}"]
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    problems = []
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{path}.{key}: unknown field of {model.__name__}")
        else:
            problems += _walk(fields[key].annotation, value, f"{path}.{key}")
    return problems


def _walk(annotation: Any, data: Any, path: str) -> list[str]:
    if data is None or annotation is Any:
        return []
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _walk(args[0], data, path)
    if origin in (Union, types.UnionType):
        outcomes = [_walk(option, data, path) for option in args if option is not type(None)]
        return min(outcomes, key=len) if outcomes else []
    if origin is list and isinstance(data, list):
        return [p for i, item in enumerate(data) for p in _walk(args[0], item, f"{path}[{i}]")]
    if origin is dict and isinstance(data, dict):
        return [p for key, item in data.items() for p in _walk(args[1], item, f"{path}.{key}")]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return unknown_fields(annotation, data, path)
    return []


def workflow_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["workflowSpec"] if obj["kind"] == "CronWorkflow" else obj["spec"]


def substitute(text: str, parameters: dict[str, str]) -> str:
    """What Argo does to simple tags before a pod starts (parameters at their defaults, a workflow name)."""
    tag = re.compile(r"\{\{workflow\.parameters\.([A-Za-z0-9_-]+)\}\}")
    text = tag.sub(lambda match: parameters.get(match[1], match[0]), text)
    return text.replace("{{workflow.name}}", "wf-test")


def semantic_problems(obj: dict[str, Any], parser) -> list[str]:
    spec = workflow_spec(obj)
    problems: list[str] = []
    templates = {t["name"]: t for t in spec["templates"]}
    if len(templates) != len(spec["templates"]):
        problems.append("duplicate template names")
    parameters = {p["name"]: p.get("value", "") for p in spec.get("arguments", {}).get("parameters", [])}
    for name in (spec.get("entrypoint"), spec.get("onExit")):
        if name not in templates:
            problems.append(f"entrypoint/onExit {name!r} is not a template")

    for ref in _all_strings(obj):
        for match in PARAM_REF.finditer(ref):
            if (match[1] or match[2]) not in parameters:
                problems.append(f"reference to undeclared parameter {match[1] or match[2]!r}")

    for template in spec["templates"]:
        if "dag" in template:
            problems += _dag_problems(template, templates)
        if "container" in template:
            problems += _container_problems(template, parameters, parser)
    return problems


def _dag_problems(template: dict[str, Any], templates: dict[str, Any]) -> list[str]:
    where = f"dag {template['name']}"
    problems: list[str] = []
    tasks = {task["name"]: task for task in template["dag"]["tasks"]}
    edges: dict[str, set[str]] = {}
    for name, task in tasks.items():
        if task["template"] not in templates:
            problems.append(f"{where}: task {name} uses unknown template {task['template']}")
            continue
        depends = set()
        for token in re.split(r"&&|\|\||!|\(|\)", task.get("depends", "")):
            token = token.strip()
            if token:
                target = token.split(".")[0]
                if target not in tasks:
                    problems.append(f"{where}: task {name} depends on unknown task {target}")
                depends.add(target)
        edges[name] = depends
        declared = {a["name"]: a for a in templates[task["template"]].get("inputs", {}).get("artifacts", [])}
        supplied = set()
        for artifact in task.get("arguments", {}).get("artifacts", []):
            supplied.add(artifact["name"])
            if artifact["name"] not in declared:
                problems.append(f"{where}: task {name} passes undeclared input artifact {artifact['name']}")
            match = FROM_REF.match(artifact.get("from", ""))
            if not match:
                problems.append(f"{where}: task {name} artifact {artifact['name']} has no tasks.* from reference")
                continue
            producer, output = match.groups()
            if producer not in tasks:
                problems.append(f"{where}: {name} takes an artifact from unknown task {producer}")
                continue
            outputs = templates[tasks[producer]["template"]].get("outputs", {}).get("artifacts", [])
            if output not in {o["name"] for o in outputs}:
                problems.append(f"{where}: {name} takes undeclared output {output} of {producer}")
            if producer not in depends:
                problems.append(f"{where}: {name} takes an artifact of {producer} without depending on it")
        for artifact_name, artifact in declared.items():
            if artifact_name not in supplied and "s3" not in artifact and not artifact.get("optional"):
                problems.append(f"{where}: task {name} does not supply input artifact {artifact_name}")
    problems += [f"{where}: cycle through {name}" for name in _cyclic(edges)]
    return problems


def _cyclic(edges: dict[str, set[str]]) -> list[str]:
    done: set[str] = set()
    remaining = dict(edges)
    while remaining:
        ready = [n for n, deps in remaining.items() if deps <= done]
        if not ready:
            return sorted(remaining)
        for name in ready:
            done.add(name)
            del remaining[name]
    return []


def _container_problems(template: dict[str, Any], parameters: dict[str, str], parser) -> list[str]:
    where = f"template {template['name']}"
    problems: list[str] = []
    container = template["container"]
    for key in ("retryStrategy", "activeDeadlineSeconds"):
        if key not in template:
            problems.append(f"{where}: no {key}")
    security = container.get("securityContext", {})
    if security.get("allowPrivilegeEscalation") is not False or security.get("runAsNonRoot") is not True:
        problems.append(f"{where}: container may escalate privileges or run as root")
    for metric in template.get("metrics", {}).get("prometheus", []):
        labels = [label["key"] for label in metric.get("labels", [])]
        if not all(METRIC_NAME.match(n) for n in [metric["name"], *labels]):
            problems.append(f"{where}: metric {metric['name']} has an invalid name or label")
    if container.get("command") != ["mammo"]:
        return problems
    argv = [substitute(arg, parameters) for arg in container["args"]]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return problems + [f"{where}: `mammo {' '.join(argv)}` does not parse"]
    outputs = template.get("outputs", {}).get("artifacts", [])
    out_paths = [o["path"] for o in outputs]
    if hasattr(args, "out") and not str(args.out).startswith("s3://") and args.out not in out_paths:
        problems.append(f"{where}: --out {args.out} is not an output artifact path ({out_paths})")
    for output in outputs:
        if not output.get("s3", {}).get("key", "").endswith("/") or output.get("archive") != {"none": {}}:
            problems.append(f"{where}: output {output['name']} is not a key-only, unarchived directory")
    values = [str(value) for value in vars(args).values() if isinstance(value, str)]
    for artifact in template.get("inputs", {}).get("artifacts", []):
        path = artifact["path"]
        if not any(v == path or v.startswith(path + "/") or path.startswith(v + "/") for v in values):
            problems.append(f"{where}: input artifact {artifact['name']} at {path} is not used by the command")
    step = args.step
    limits = container.get("resources", {}).get("limits", {})
    if step in GPU_STEPS:
        gpus = limits.get("nvidia.com/gpu")
        allowed = {"1", "{{workflow.parameters.gpus}}"} if "gpus" in parameters else {"1"}
        if gpus not in allowed or not template.get("tolerations") or not template.get("nodeSelector"):
            problems.append(f"{where}: GPU step without GPU limit, toleration and node selector")
        if "podSpecPatch" not in template:
            problems.append(f"{where}: GPU step without the CPU switch (podSpecPatch)")
    elif "nvidia.com/gpu" in limits:
        problems.append(f"{where}: CPU step requests a GPU")
    return problems


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _all_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _all_strings(item)]
    return []
