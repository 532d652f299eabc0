"""Tasks forked from one interpreter that imported TensorFlow and the step modules once.

Importing TensorFlow, Keras and the steps costs about 4 core-seconds, and a demo runs twelve TensorFlow tasks,
several of whose own work is shorter than that (a baseline-infer scores its images in 1-2 s): on two cores the
imports were a tenth of the whole run. The server (`python -m common.preloaded FD`) imports them once, before
TensorFlow has run anything (no thread pool, no context: each task still sets its own thread counts and
determinism), and forks one child per task. The child is what a fresh `mammo` process would have been: it leads
its own session and process group, runs niced when asked (`prepare_child`), dies with its parent, has the task's
environment and exits with the step's exit code. The server reaps it and reports its exit status and
core-seconds (wait4, its own finished children included), so the runner treats it like any child process.

Requests come over a SEQPACKET socket, one record each, carrying the task's argv, environment and niceness and
one end of a socket pair on which the child says its pid once it leads its group, then the server its exit.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
REQUEST_BYTES = 1 << 20
# Exit code of a task whose outcome is unknown because the server ended before reporting it.
LOST = 1


def prepare_child(niceness: int) -> None:
    """In a task's process before the step runs: its niceness (a background task), and SIGTERM when its parent dies.

    The task leads a new session, and where the kernel groups sessions (autogroup) they share the CPU equally
    whatever their processes' nice values, so the session's autogroup is niced as well."""
    if niceness:
        os.nice(niceness)
        try:
            Path("/proc/self/autogroup").write_text(str(niceness))
        except OSError:
            pass  # no autogroups here: the process nice value is what the scheduler weighs
    die_with_parent()


def die_with_parent() -> None:
    """SIGTERM the process when its parent dies, even by SIGKILL (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the runner's SIGTERM/SIGINT forwarding still applies


class Interpreter:
    """The runner's side: the server, started on the first task, and one request per task (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._ended_cpu = 0.0  # core-seconds of servers that ended (killed) before this one
        self._server_cpu = 0.0  # this server's own core-seconds (its imports), as it last reported them

    @property
    def cpu_seconds(self) -> float:
        return self._ended_cpu + self._server_cpu

    def start(self, argv: list[str], env: dict[str, str], niceness: int) -> ForkedTask:
        """Fork the task; returns once the child has said its pid. A server that ended (the out-of-memory killer,
        an operator's kill) is replaced: its running tasks died with it, the later ones need not."""
        ours, theirs = socket.socketpair()
        with self._lock:
            if self._server is not None and self._server.poll() is not None:
                self._stop_server()
                self._ended_cpu, self._server_cpu = self.cpu_seconds, 0.0
            control = self._control or self._start_server(env)
            request = json.dumps({"argv": argv, "env": env, "niceness": niceness}).encode()
            socket.send_fds(control, [request], [theirs.fileno()])
        theirs.close()
        task = ForkedTask(ours)
        with self._lock:
            self._server_cpu = max(self._server_cpu, task.server_cpu)
        return task

    def _start_server(self, env: dict[str, str]) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server_env = {k: v for k, v in env.items() if k != "MAMMO_TASK"}
        # A session of its own: a Ctrl-C at the terminal is the runner's to pass on, not the server's to die of.
        self._server = subprocess.Popen([sys.executable, "-m", "common.preloaded", str(theirs.fileno())],
                                        env=server_env, pass_fds=(theirs.fileno(),), start_new_session=True,
                                        preexec_fn=die_with_parent)
        theirs.close()
        self._control = ours
        return ours

    def close(self) -> None:
        """The server exits once its control socket closes and its children are reaped."""
        with self._lock:
            self._stop_server()

    def _stop_server(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._server is not None:
            self._server.wait()
            self._server = None

    def __enter__(self) -> Interpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ForkedTask:
    """One forked task as the runner sees it: its pid (its process group), then its exit code and core-seconds."""

    def __init__(self, channel: socket.socket):
        self._channel = channel
        self._received = b""
        first = self._message(block=True)
        if not first or "pid" not in first:
            self.close()
            raise OSError("the preloaded interpreter ended before starting the task")
        self.pid = int(first["pid"])
        self.server_cpu = float(first["server_cpu"])

    def _message(self, *, block: bool) -> dict[str, Any] | None:
        """The next line as JSON, {} at the end of the stream, None when nothing complete has arrived (not
        blocking). Unbuffered reads: a line already read ahead would never make the socket readable again."""
        while b"\n" not in self._received:
            if not block and not select.select([self._channel], [], [], 0)[0]:
                return None
            chunk = self._channel.recv(1 << 16)
            if not chunk:
                return {}
            self._received += chunk
        line, _, self._received = self._received.partition(b"\n")
        return json.loads(line)

    def poll(self) -> tuple[int, float] | None:
        """(exit code, core-seconds) once the task has ended, else None; never blocks."""
        outcome = self._message(block=False)
        if outcome is None:
            return None
        self.close()
        if "exit" not in outcome:
            print(f"the preloaded interpreter ended before task {self.pid} did: outcome unknown", file=sys.stderr)
            return LOST, 0.0
        return int(outcome["exit"]), float(outcome["cpu"])

    def close(self) -> None:
        self._channel.close()


def preload() -> None:
    """Every step module and what it imports (TensorFlow, Keras), without running a TensorFlow op: a context
    created here would fix every forked task's thread counts before the task could set its own."""
    from common.steps import STEPS
    from jobs.cli import build_parser
    from jobs.startup import quiet_native_notices

    with quiet_native_notices():
        build_parser(load=set(STEPS))


def serve(control: socket.socket) -> None:
    """Import everything once, then fork a child per request and report each child's exit until the runner
    closes the control socket."""
    preload()
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, socket.socket] = {}
    open_control = True
    while open_control or children:
        if open_control and select.select([control], [], [], 0.1)[0]:
            message, fds, _, _ = socket.recv_fds(control, REQUEST_BYTES, 1)
            if not message:
                open_control = False
                control.close()
            else:
                reply = socket.socket(fileno=fds[0])
                usage = resource.getrusage(resource.RUSAGE_SELF)
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(message), reply, usage.ru_utime + usage.ru_stime, (control, *children.values()))
                children[pid] = reply
        elif not open_control:
            _reap(children, block=True)
            continue
        _reap(children, block=False)


def _reap(children: dict[int, socket.socket], *, block: bool) -> None:
    while children:
        pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        reply = children.pop(pid, None)
        if reply is None:
            continue
        outcome = {"exit": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime}
        try:
            reply.sendall(json.dumps(outcome).encode() + b"\n")
        except OSError:
            pass  # the runner stopped listening (it is stopping): nothing to tell
        reply.close()
        if block:
            return


def _child(request: dict[str, Any], reply: socket.socket, server_cpu: float, others: tuple[socket.socket, ...]) -> None:
    """The forked task: a process of its own (the runner hears its pid only then, so a stop reaches its group),
    then the step, then exit as a finished interpreter would."""
    for channel in others:
        channel.close()
    os.setsid()
    prepare_child(int(request["niceness"]))
    reply.sendall(json.dumps({"pid": os.getpid(), "server_cpu": server_cpu}).encode() + b"\n")
    reply.close()
    os.environ.clear()
    os.environ.update(request["env"])
    code = 1
    try:
        from jobs.cli import main

        code = main(list(request["argv"]))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:  # as an uncaught exception ends a process: the traceback, exit code 1
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    die_with_parent()
    serve(socket.socket(fileno=int(sys.argv[1])))
