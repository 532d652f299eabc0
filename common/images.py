"""The step images: their base image, their builds, and what they cost (`make images`, `make base-image`).

The Dockerfiles start from the published `python:3.11.x-slim-bookworm`. Where no registry can be reached, the
base is built here instead: `debootstrap --variant=minbase` of Debian bookworm with Debian's python3 (3.11, the
same minor version, so every pinned wheel is the same file), python3-venv (the Dockerfiles make a venv),
ca-certificates (pip's TLS) and python-is-python3 (the Dockerfiles call `python`), trimmed of apt's
package lists and caches, documentation and translations as the slim image is, and imported with
`podman import`.

Builds use the host's network and its CA bundle, so pip reaches PyPI the way the host does (through a proxy
with its own CA, where there is one), and the engine flags this host needs (common.engine).

Standard library only: the Makefile runs it before any virtual environment exists.

    python3 -m common.images base
    python3 -m common.images build --steps "synth preprocess" --gpu-steps "pretrain" --tag 0.1.0 \
        [--registry localhost] [--results benchmarks/results/container_images.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common.engine import Engine, EngineUnavailable, detect, find_binary

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": "Dockerfile.cpu", "gpu": "Dockerfile.gpu"}
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "python-is-python3")
LOCAL_BASE = "localhost/mammo-base:bookworm-python{minor}"
# What the slim image leaves out too: nothing here is read at run time.
TRIMMED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
           "usr/share/locale")
HOST_CA_BUNDLE = "/etc/ssl/certs"


def _python_image_arg(dockerfile: Path) -> str:
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{dockerfile.name} declares no ARG PYTHON_IMAGE default")
    return match[1]


def published_base() -> str:
    """The PYTHON_IMAGE default both Dockerfiles declare (they must agree)."""
    found = {_python_image_arg(ROOT / name) for name in DOCKERFILES.values()}
    if len(found) != 1:
        raise SystemExit(f"the Dockerfiles disagree on PYTHON_IMAGE: {sorted(found)}")
    return found.pop()


def python_minor(image: str) -> str:
    """`python:3.11.11-slim-bookworm` -> `3.11`."""
    match = re.search(r":(\d+)\.(\d+)", image)
    if not match:
        raise ValueError(f"{image}: no Python version in the tag")
    return f"{match[1]}.{match[2]}"


def ensure_base(binary: str, echo: Callable[[str], None] = print) -> str:
    """The base image to build on: the published one if present or pullable, else the local Debian one."""
    published = published_base()
    plain = Engine(binary)
    if plain.image_exists(published):
        return published
    pulled = subprocess.run(plain.command("pull", f"docker.io/library/{published}"), capture_output=True, text=True)
    if pulled.returncode == 0:
        return published
    reason = (pulled.stderr.strip().splitlines() or ["no message"])[-1]
    local = LOCAL_BASE.format(minor=python_minor(published))
    if plain.image_exists(local):
        return local
    echo(f"base image: cannot pull {published} ({reason}); building {local} with debootstrap")
    build_debian_base(plain, local, python_minor(published), echo)
    return local


def build_debian_base(engine: Engine, image: str, minor: str, echo: Callable[[str], None] = print) -> None:
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("debootstrap is not installed (make container-deps installs it)")
    if os.geteuid() != 0:
        raise EngineUnavailable("debootstrap needs root to build the base image")
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mammo-base-", dir="/var/tmp") as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                        DEBIAN_SUITE, str(rootfs), mirror], check=True, stdout=subprocess.DEVNULL)
        if not (rootfs / f"usr/bin/python{minor}").exists():
            found = sorted(p.name for p in (rootfs / "usr/bin").glob("python3.*"))
            raise SystemExit(f"Debian {DEBIAN_SUITE} has {found}, not python{minor} as the published image")
        for relative in TRIMMED:
            for child in (rootfs / relative).glob("*"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                   'CMD ["python3"]']
        imported = subprocess.run(engine.command("import", *[f"--change={c}" for c in changes], "-", image),
                                  stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.stdout is not None:
            tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise SystemExit(f"importing the Debian root file system as {image} failed")
    echo(f"base image: {image} built in {time.time() - started:.0f}s")


def image_name(registry: str, step: str, tag: str, flavour: str) -> str:
    return f"{registry}/mammo-{step}:{tag}" + ("-gpu" if flavour == "gpu" else "")


def build(engine: Engine, base: str, flavour: str, step: str, image: str) -> float:
    """Build one step target; returns its wall seconds (cached layers make later targets cheap)."""
    flags = ["--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", "-f", DOCKERFILES[flavour],
             "--target", step, "-t", image]
    if engine.name == "podman" and Path(HOST_CA_BUNDLE).is_dir():
        flags += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    started = time.time()
    subprocess.run(engine.build_command(*flags, str(ROOT)), check=True)
    return round(time.time() - started, 1)


def layers(engine: Engine, image: str) -> list[dict]:
    """The image's layers, base first: id, bytes and the instruction that made it."""
    out = subprocess.run(engine.command("history", "--no-trunc", "--format", "json", image),
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    return [{"id": row.get("id", ""), "bytes": int(row.get("size", 0)),
             "created_by": " ".join(str(row.get("CreatedBy", row.get("createdBy", ""))).split())[:160]}
            for row in reversed(rows)]


def costs(engine: Engine, images: dict[str, str]) -> dict:
    """Per image its size; for the set, the bytes of its distinct layers against its largest image."""
    per_image, distinct = {}, {}
    for step, image in images.items():
        rows = layers(engine, image)
        per_image[step] = {"image": image, "bytes": sum(r["bytes"] for r in rows),
                           "layers": [r for r in rows if r["bytes"] > 0]}
        # A layer is its instruction on top of its parent chain (intermediate layers have no id of their own).
        chain: tuple[str, ...] = ()
        for row in rows:
            chain += (row["id"] if row["id"] not in ("", "<missing>") else row["created_by"],)
            distinct[chain] = row["bytes"]
    largest = max(v["bytes"] for v in per_image.values())
    return {"images": per_image, "set_bytes": sum(distinct.values()), "largest_bytes": largest,
            "set_over_largest": round(sum(distinct.values()) / largest, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.images", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("base", help="make sure the base image exists (pull, else debootstrap); print its name")
    builder = sub.add_parser("build", help="build the step images (base image first)")
    builder.add_argument("--steps", default="", help="CPU step targets of Dockerfile.cpu, space-separated")
    builder.add_argument("--gpu-steps", default="", help="targets of Dockerfile.gpu, space-separated")
    builder.add_argument("--registry", default="localhost")
    builder.add_argument("--tag", required=True)
    builder.add_argument("--results", type=Path, help="write build times and layer costs to this JSON file")
    args = parser.parse_args(argv)
    try:
        binary = find_binary()
        base = ensure_base(binary, echo=lambda line: print(line, file=sys.stderr))
        if args.action == "base":
            print(base)
            return 0
        engine = detect(base, binary)
    except EngineUnavailable as error:
        print(f"images: {error}", file=sys.stderr)
        return 2
    print(f"images: {engine.name} {' '.join(engine.global_flags + engine.limit_flags)} on {base}", file=sys.stderr)
    seconds, built = {}, {}
    started = time.time()
    for flavour, steps in (("cpu", args.steps.split()), ("gpu", args.gpu_steps.split())):
        for step in steps:
            image = image_name(args.registry, step, args.tag, flavour)
            seconds[image] = build(engine, base, flavour, step, image)
            built[f"{step}-gpu" if flavour == "gpu" else step] = image
            print(f"images: {image} built in {seconds[image]:.0f}s", file=sys.stderr)
    if args.results and built:
        result = {"engine": engine.command(), "limit_flags": list(engine.limit_flags), "base": base,
                  "build_seconds": seconds, "total_build_seconds": round(time.time() - started, 1),
                  "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "machine": platform.machine(),
                  **costs(engine, built)}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
