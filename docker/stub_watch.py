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

import json
import os
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"
# Both launchers: the stubs are checked every POLL_S once the server is ready; a server with a
# dead stub gets DEATH_DRAIN_S to finish what its healthy instances hold, then is killed (with a
# dead stub Triton would otherwise wait out its whole --exit-timeout-secs).
POLL_S = 1.0
DEATH_DRAIN_S = 5.0
PROC = Path("/proc")


@dataclass(frozen=True)
class Stub:
    pid: int
    instance: str  # the model instance it serves, e.g. "cross_encoder_0_1"
    model: str = ""  # the model's folder name in the repository


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
    # argv[1] is <repository>/<model>/<version>/model.py
    model = Path(argv[1].decode("utf-8", "replace")).parent.parent.name if len(argv) > 1 else ""
    return Stub(pid, instance, model)


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


def expected_stubs(base_url: str, timeout: float = 10.0) -> dict[str, int] | None:
    """Python-backend instances per loaded model, from the server's own configs
    (`POST /v2/repository/index`, `GET /v2/models/<name>/config`); None if it cannot say."""
    try:
        request = urllib.request.Request(f"{base_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            index = json.loads(response.read())
        expected = {}
        for entry in index:
            if entry.get("state") != "READY":
                continue
            with urllib.request.urlopen(f"{base_url}/v2/models/{entry['name']}/config", timeout=timeout) as response:
                config = json.loads(response.read())
            if config.get("backend") == "python":
                expected[entry["name"]] = sum(int(g.get("count", 1)) for g in config.get("instance_group", [{}]))
        return expected
    except (OSError, ValueError, KeyError):
        return None


class StubWatch:
    """Snapshot the stubs of a ready server; `dead()` names those that have died since, and
    those that `expected` (model -> instances) says should run but were not alive at the snapshot
    (a stub killed between its model's load and the server's readiness: review of issue 26)."""

    def __init__(self, server_pid: int, expected: dict[str, int] | None = None) -> None:
        self.server_pid = server_pid
        self.watched = stubs(server_pid)
        found = Counter(s.model for s in self.watched if is_alive(s.pid))
        self.missing = [
            Stub(0, f"{model} ({count - found[model]} of {count} instance(s) gone before the server was ready)", model)
            for model, count in sorted((expected or {}).items())
            if found[model] < count
        ]

    def dead(self) -> list[Stub]:
        gone = sorted((s for s in self.watched if not is_alive(s.pid)), key=lambda s: s.instance)
        return self.missing + gone


def describe(dead: list[Stub]) -> str:
    names = ", ".join(f"{s.instance} (pid {s.pid})" if s.pid else s.instance for s in dead)
    return (
        f"Python backend stub(s) died: {names}; tritonserver never restarts a stub and would fail "
        f"every request sent to that instance while its health endpoints stay 200"
    )


def own_pid_is_watchable() -> bool:
    """The watch reads /proc (Linux); elsewhere it is off."""
    return PROC.is_dir() and (PROC / str(os.getpid())).is_dir()
