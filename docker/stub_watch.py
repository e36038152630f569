"""Watches tritonserver's Python-backend stubs: a dead stub is never restarted by Triton.

tritonserver 2.51 runs each Python-model instance in its own stub process and does not restart
one that dies (OOM-killed, segfaulted, killed by hand): its instance then fails every request it
is given ("Stub process ... is not healthy") while /v2/health/live and /ready stay 200, so a pod
with one of two `cross_encoder` stubs dead fails about half of all requests for as long as it
runs, and an inference probe that fails only every other time never reaches its failure
threshold. Only a new tritonserver heals it. Both launchers (docker/serve.py in the image,
local_triton/server.py here) watch the stubs once the server is ready and replace the server
when one dies: the image launcher exits (the kubelet restarts the container), the local one
restarts tritonserver in place.

Standard library only: it ships in the serving image next to serve.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"
PROC = Path("/proc")


@dataclass(frozen=True)
class Stub:
    pid: int
    instance: str  # the model instance it serves, e.g. "cross_encoder_0_1"


def children(parent: int) -> list[int]:
    """Processes whose parent is `parent` (/proc scan: no psutil in the image)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # The command name is in parentheses and may contain spaces: fields follow the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def _stub_of(pid: int) -> Stub | None:
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not argv or not argv[0].endswith(STUB_BINARY.encode()):
        return None
    # The backend starts a stub as: stub MODEL_PATH SHM_REGION SHM_DEFAULT SHM_GROWTH PARENT_PID
    # BACKEND_DIR IPC_CONTROL_HANDLE INSTANCE_NAME RUNTIME_MODIFIER (python_backend r24.10
    # src/stub_launcher.cc, the execvp of the stub); the instance name is the 9th argument.
    instance = argv[8].decode("utf-8", "replace") if len(argv) > 8 else f"pid {pid}"
    return Stub(pid, instance)


def stubs(server_pid: int) -> set[Stub]:
    """The Python-backend stubs tritonserver `server_pid` runs now."""
    return {stub for pid in children(server_pid) if (stub := _stub_of(pid)) is not None}


def is_alive(pid: int) -> bool:
    """Running, not a zombie (a dead stub stays a zombie until tritonserver reaps it)."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


class StubWatch:
    """Snapshot the stubs of a ready server; `dead()` names those that have died since."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.watched = stubs(server_pid)

    def dead(self) -> list[Stub]:
        return sorted((s for s in self.watched if not is_alive(s.pid)), key=lambda s: s.instance)


def describe(dead: list[Stub]) -> str:
    names = ", ".join(f"{s.instance} (pid {s.pid})" for s in dead)
    return (
        f"Python backend stub(s) died: {names}; tritonserver never restarts a stub and would fail "
        f"every request sent to that instance while its health endpoints stay 200"
    )


def own_pid_is_watchable() -> bool:
    """The watch reads /proc (Linux); elsewhere it is off."""
    return PROC.is_dir() and (PROC / str(os.getpid())).is_dir()
