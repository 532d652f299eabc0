"""The container engine on this machine (podman, else docker) and the flags it needs here to run anything.

Two limits of sandboxed hosts, found by probing instead of assumed, so a normal host gets no extra flags:
- crun, podman's default OCI runtime, refuses hybrid cgroup v1/v2 hierarchies; runc runs there.
- podman gives root containers RLIMIT_NOFILE and RLIMIT_NPROC limits of about a million, more than a sandbox's
  own hard limits allow, so the runtime's setrlimit fails. The container then gets this process's hard limits,
  which it can always have.
Builds need the same flags: every RUN instruction is a container.

Standard library only: the Makefile runs this before any virtual environment exists.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROBE_SECONDS = 180


class EngineUnavailable(RuntimeError):
    """No container engine, or one that cannot start a container on this machine; the message says why."""


@dataclass(frozen=True)
class Engine:
    binary: str
    global_flags: tuple[str, ...] = ()  # before the subcommand: podman --runtime runc ...
    limit_flags: tuple[str, ...] = ()  # for run and build: --ulimit ...

    @property
    def name(self) -> str:
        return self.binary.rsplit("/", 1)[-1]

    def command(self, *args: str) -> list[str]:
        return [self.binary, *self.global_flags, *args]

    def run_command(self, *args: str) -> list[str]:
        return self.command("run", *self.limit_flags, *args)

    def build_command(self, *args: str) -> list[str]:
        return self.command("build", *self.limit_flags, *args)

    def image_exists(self, image: str) -> bool:
        if self.name == "podman":
            return subprocess.run(self.command("image", "exists", image)).returncode == 0
        return subprocess.run(self.command("image", "inspect", image), capture_output=True).returncode == 0


def find_binary() -> str:
    binary = shutil.which("podman") or shutil.which("docker")
    if binary is None:
        raise EngineUnavailable("neither podman nor docker is installed (make container-deps installs podman)")
    return binary


def host_limit_flags() -> tuple[str, ...]:
    """This process's own hard limits as --ulimit flags (soft = hard, as podman sets its own).

    Processes are also capped at the kernel's pid_max: some sandboxes refuse any higher RLIMIT_NPROC even
    where the parent's hard limit is higher.
    """
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc/sys/kernel/pid_max").is_file() else 0
    flags: list[str] = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(limit)[1]
        if name == "nproc" and pid_max:
            hard = pid_max if hard == resource.RLIM_INFINITY else min(hard, pid_max)
        if hard != resource.RLIM_INFINITY:
            flags += ["--ulimit", f"{name}={hard}:{hard}"]
    return tuple(flags)


# Where even the host's own limits are refused: small enough for any sandbox, ample for one step.
MODEST_LIMIT_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


def candidates(binary: str) -> list[Engine]:
    """The flag sets to try, plainest first."""
    runtimes: list[tuple[str, ...]] = [()]
    if binary.endswith("podman") and shutil.which("runc"):
        runtimes.append(("--runtime", "runc"))
    limits = list(dict.fromkeys([(), host_limit_flags(), MODEST_LIMIT_FLAGS]))
    return [Engine(binary, runtime, limit) for runtime in runtimes for limit in limits]


def detect(image: str, binary: str | None = None) -> Engine:
    """The first flag set with which `image` (which must exist locally) runs `true` instead of its entrypoint."""
    binary = binary or find_binary()
    errors = []
    for engine in candidates(binary):
        try:
            probe = subprocess.run(engine.run_command("--rm", "--network", "none", "--entrypoint", "true", image),
                                   capture_output=True, text=True, timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            errors.append(f"{' '.join(engine.global_flags + engine.limit_flags) or 'default flags'}: timed out")
            continue
        if probe.returncode == 0:
            return engine
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        errors.append(f"{' '.join(engine.global_flags + engine.limit_flags) or 'default flags'}: {last}")
    raise EngineUnavailable(f"{binary} cannot run a container here ({'; '.join(errors)})")
