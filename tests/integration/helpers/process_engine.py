"""A stand-in `podman` for the executor tests: runs a container's command as a host process.

`podman run [flags] IMAGE ARGS...` as common.containers builds it becomes the entrypoint run here, with every
argument under a mounted container path (`-v HOST:CONTAINER`) rewritten to its host folder, the `-e` variables
set, HOME and the caches in the mounted /tmp as the images set them, and the working directory /work. No image,
user or isolation: what it checks is the executor's side (which containers, in which order, with which
arguments, environment and staged folders). Each run is appended as one JSON line to $PROCESS_ENGINE_LOG.
"""

import json
import os
import subprocess
import sys

VALUED = {"--name", "--network", "--user", "--cap-drop", "--security-opt", "-v", "-e", "--entrypoint", "--ulimit"}
ENTRYPOINTS = {"mammo": [sys.executable, "-m", "jobs.cli"], "python": [sys.executable]}


def parse(words: list[str]) -> tuple[dict[str, list[str]], str, list[str]]:
    flags: dict[str, list[str]] = {}
    position = 0
    while words[position].startswith("-"):
        if words[position] in VALUED:
            flags.setdefault(words[position], []).append(words[position + 1])
            position += 2
        else:
            flags.setdefault(words[position], []).append("")
            position += 1
    return flags, words[position], words[position + 1:]


def to_host(word: str, mounts: dict[str, str]) -> str:
    for target in sorted(mounts, key=len, reverse=True):
        if word == target or word.startswith(target + "/"):
            return mounts[target] + word[len(target):]
    return word


def main(argv: list[str]) -> int:
    if argv[0] != "run":
        return 0  # kill, image exists ...: nothing to do for processes
    flags, image, args = parse(argv[1:])
    mounts = dict(reversed(v.split(":", 1)) for v in flags.get("-v", []))
    env = dict(os.environ)
    for variable in flags.get("-e", []):
        name, _, value = variable.partition("=")
        env[name] = value if "=" in variable else os.environ.get(name, "")
    home = mounts.get("/tmp", env.get("TMPDIR", "/tmp"))
    env.update(HOME=home, MPLCONFIGDIR=f"{home}/matplotlib", KERAS_HOME=f"{home}/keras")
    entrypoint = json.loads(flags["--entrypoint"][0])
    program = ENTRYPOINTS.get(entrypoint[0], entrypoint[:1])  # a host path: never rewritten
    command = [*program, *(to_host(word, mounts) for word in [*entrypoint[1:], *args])]
    with open(os.environ["PROCESS_ENGINE_LOG"], "a") as log:
        log.write(json.dumps({"name": flags["--name"][0], "image": image, "args": args,
                              "env": [e for e in flags.get("-e", []) if "=" in e]}) + "\n")
    return subprocess.run(command, env=env, cwd=mounts.get("/work")).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
