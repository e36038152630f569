#!/usr/bin/env python3
"""Build each TensorRT engine once per class model per device (issue 25 item 5), before serving.

Triton loads the instances of an onnxruntime model in parallel (since 23.08), and ONNX Runtime's
TensorRT EP builds its engine at session creation when explicit profiles are set: the two
instances of a class model would build the same engine at the same time (twice the builder's
host and device memory at once) and both write `<prefix>_*.engine` into the same cache folder.

The build pass, run by the launcher (serve.py) before the serving start whenever a class model's
engine is missing from the local cache:
- tritonserver with the same flags plus `--model-config-name=build_once` (each onnxruntime class
  model's configs/build_once.pbtxt: one instance; export/triton_config.build_once_config),
  `--model-control-mode=explicit`, one `--load-model` per class model that lacks its engine and
  `--model-load-thread-count=1` (one builder at a time: one builder's host and device peak);
- waits until those models are ready (engines built and written), stops it (SIGINT), and the
  serving start that follows deserializes every engine from the cache, each instance reading it.
A repository without build_once configs (plan or Python backend) has no build pass.

An object-store repository (`--model-repository=s3://...`, gs://, as://) cannot be listed here, but
tritonserver reads it: its build pass loads every model (`--load-model=*`, explicit mode) with the
same `--model-config-name=build_once` and one load at a time. Triton takes `configs/build_once.pbtxt`
where a model has one and its config.pbtxt otherwise, through its filesystem layer, which reads
object stores too (triton-inference-server/core r24.10
src/model_repository_manager/model_repository_manager.cc:186-211 GetModelConfigFullPath, used for
every model at :1533-1534; `*` as the one startup model loads all, :546-560). Once that server is
ready, the loaded configs say which models run the TensorRT EP and with how many instances, and the
local cache says which engines exist; then it is stopped like the local pass. With the model hash
known (trtCache.modelHash) and its engines already in the cache (seeded), no pass runs.
Not the load API's "config" override: it replaces the model's config whole (server r24.10
docs/protocol/extension_model_repository.md:138-141), and a bucket's config cannot be read before
its model is loaded, so an override could not carry the TensorRT accelerator's parameters.

Across pods sharing `--shared`: a pod that has engines to build holds an exclusive lock on
`<shared>/<gpu key>/.build.lock` (BuildLock: fcntl.flock; NFS v4 supports it) from the re-seed
through the build pass, the serving start, the self-certification and the publish (serve.py), so
a pod that waited on another's build re-seeds and finds the published entry: each engine is built
once per device type. The holder leaves a one-line note in the lock file as it releases it (what
became of its build), which the next holder logs when it has to build after all.

Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import self_certify  # shipped beside this file: the loaded configs and the engine check
from engine_cache import BUILD_LOCK_NAME  # shipped beside this file: the cache layout's names

BUILD_CONFIG = "build_once"  # export/triton_config.py BUILD_ONCE_CONFIG
# tritonserver's startup model name for "every model in the repository" (explicit mode only).
ALL_MODELS = "*"
# The accelerator's parameters are a map<string, string>: `key: "..." value: "..."` in text format.
PREFIX = re.compile(r'key:\s*"trt_engine_cache_prefix"\s*value:\s*"([^"]*)"')


def class_models(repository: Path) -> dict[str, str]:
    """model -> its trt_engine_cache_prefix, for every model with a build_once config."""
    found = {}
    for config in sorted(Path(repository).glob(f"*/configs/{BUILD_CONFIG}.pbtxt")):
        match = PREFIX.search(config.read_text())
        found[config.parent.parent.name] = match.group(1) if match else ""
    return found


def missing_engines(repository: Path, cache: Path) -> list[str]:
    """The class models whose engine is not in `cache` (a prefix that another model's prefix
    extends is not credited with that model's files: self_certify.engine_checks does the same)."""
    models = class_models(repository)
    missing = []
    for model, prefix in models.items():
        longer = [p for p in models.values() if p != prefix and p.startswith(prefix)]
        files = [
            f
            for f in Path(cache).glob(f"{prefix}_*.engine" if prefix else "*.engine")
            if not any(f.name.startswith(p + "_") for p in longer)
        ]
        if not files:
            missing.append(model)
    return missing


def build_command(command: list[str], models: list[str]) -> list[str]:
    """The serving command with the build pass's flags (later flags win in tritonserver)."""
    kept = [a for a in command if not a.startswith(("--model-control-mode", "--load-model", "--model-config-name"))]
    return [
        *kept,
        f"--model-config-name={BUILD_CONFIG}",
        "--model-control-mode=explicit",
        "--model-load-thread-count=1",
        *[f"--load-model={m}" for m in models],
    ]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run_build_pass(
    command: list[str],
    models: list[str],
    ready_url: str,
    timeout_s: float,
    stopping: Callable[[], bool] = lambda: False,
    on_ready: Callable[[], object] | None = None,
) -> bool:
    """Start the build-pass server, wait until it is ready (or gone, or out of time, or the
    launcher is told to stop), call `on_ready` while it still runs, stop it.
    True when it became ready: every listed model loaded, so its engine was built and written."""
    what = "every model of the repository" if models == [ALL_MODELS] else ", ".join(models)
    print(f"[build-once] building the engines of {what} one instance at a time", flush=True)
    server = subprocess.Popen(build_command(command, models))
    deadline = time.monotonic() + timeout_s
    try:
        while server.poll() is None and time.monotonic() < deadline and not stopping():
            if _ready(ready_url):
                if on_ready is not None:
                    on_ready()
                return True
            time.sleep(1)
        return False
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


class BuildLock:
    """The exclusive build lock of one GPU key's folder in the shared cache. Held through an open
    file: a holder that dies (OOM, SIGKILL, a failed probe) releases it with its descriptors.
    `acquire` blocks in flock(2); a signal handler that raises (serve.py's Stopped) ends the wait."""

    def __init__(self, gpu_dir: Path) -> None:
        self.path = Path(gpu_dir) / BUILD_LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> str:
        """Wait for the lock; the note its last holder left ('' when none)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            note = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        except BaseException:  # a stop signal while waiting: nothing held
            os.close(fd)
            raise
        self.fd = fd
        return note

    def release(self, note: str | None = None) -> None:
        """Release (idempotent); `note` replaces the last holder's when given."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if note is not None:
                os.ftruncate(fd, 0)
                os.pwrite(fd, note.encode() + b"\n", 0)
        except OSError:
            pass  # a note is news, not state: the lock is released all the same
        finally:
            os.close(fd)  # closing the only descriptor releases the flock


@contextmanager
def shared_lock(shared_dir: Path | None):
    """Exclusive across pods sharing the cache volume; a no-op without one."""
    if shared_dir is None:
        yield
        return
    lock = BuildLock(shared_dir)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def engines_to_build(command: list[str], local: Path, model_hash: str | None = None) -> bool:
    """Whether a class model of the command's repository lacks its engine in `local`. An
    object-store repository cannot be read here: with the model hash, whether any of that model's
    engines is in `local` (the shared cache's entries and a ready server's marker hold every class
    model's engines or none); without it, unknown, so True."""
    repository = repository_of(command)
    if repository is None and remote_repository(command):
        return not seeded(local, model_hash)
    return repository is not None and bool(class_models(repository)) and bool(missing_engines(repository, local))


def seeded(local: Path, model_hash: str | None) -> bool:
    """Whether `local` holds engines of the model `model_hash` names (False when it is unknown)."""
    return model_hash is not None and any(Path(local).glob(f"{model_hash}_*.engine"))


def ensure_engines(
    local: Path,
    shared_dir: Path | None,
    command: list[str],
    ready_url: str,
    timeout_s: float = 3600.0,
    reseed: Callable[[], object] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    model_hash: str | None = None,
) -> list[str]:
    """Run the build pass when a class model's engine is missing; returns the models still missing
    afterwards (the serving start then builds them itself, as before, and the self-certification
    reports what TensorRT did not take). With `shared_dir`, the pass alone holds the shared lock;
    serve.py passes None and holds the lock itself until its engines are published."""
    repository = repository_of(command)
    if repository is None and remote_repository(command):
        return remote_build_pass(local, shared_dir, command, ready_url, timeout_s, stopping, model_hash)
    if repository is None or not class_models(repository):
        return []
    missing = missing_engines(repository, local)
    if not missing:
        return []
    with shared_lock(shared_dir):
        if reseed is not None:
            reseed()  # another pod may have published while we waited (serve.py: engine_cache.seed)
            missing = missing_engines(repository, local)
        if missing and not run_build_pass(command, missing, ready_url, timeout_s, stopping):
            print("[build-once] the build pass did not become ready; the serving start builds instead", flush=True)
    return missing_engines(repository, local) if missing else []


def remote_build_pass(
    local: Path,
    shared_dir: Path | None,
    command: list[str],
    ready_url: str,
    timeout_s: float = 3600.0,
    stopping: Callable[[], bool] = lambda: False,
    model_hash: str | None = None,
) -> list[str]:
    """The build pass of a repository only tritonserver can read (an object store; a local folder
    takes this path too when asked, which is how it is tested against the real server): every
    model loaded under its build_once config, one at a time. Returns the TensorRT-EP models whose
    engine is still not in `local` afterwards."""
    where = remote_repository(command) or str(repository_of(command))
    if seeded(local, model_hash):
        print(f"[build-once] {where}: the engines of {model_hash} are in {local}: no build pass", flush=True)
        return []
    loaded: dict[str, dict] = {}
    base_url = ready_url.split("/v2/")[0]

    def read_configs() -> None:
        try:
            loaded.update(self_certify.loaded_configs(base_url))
        except (OSError, ValueError) as err:  # the pass still ran; the serving start's checks remain
            print(f"[build-once] could not read the loaded configs ({err}): no per-model report", flush=True)

    with shared_lock(shared_dir):
        if not run_build_pass(command, [ALL_MODELS], ready_url, timeout_s, stopping, on_ready=read_configs):
            print(f"[build-once] {where}: the build pass did not become ready; the serving start builds", flush=True)
            return []
    return report_remote_pass(loaded, local)


def report_remote_pass(loaded: dict[str, dict], local: Path) -> list[str]:
    """What the build-pass server loaded, per TensorRT-EP model: its instance count (1 when the
    repository has its build_once config: an export from before build-once has none, and then its
    instances built at once) and whether its engine is now in `local`; the models still missing."""
    ort = {name: config for name, config in loaded.items() if config.get("platform") != "tensorrt_plan"}
    checks = self_certify.engine_checks(ort, local)  # TensorRT-EP models only: a plan has nothing to build
    for model in sorted(checks):
        instances = sum(int(group.get("count", 1)) for group in loaded[model].get("instance_group", []))
        engine = "engine built" if checks[model]["taken"] else f"NO engine: {checks[model]['detail']}"
        note = "" if instances == 1 else f" (no configs/{BUILD_CONFIG}.pbtxt: its {instances} instances built at once)"
        print(f"[build-once] {model}: loaded with {instances} instance(s), {engine}{note}", flush=True)
    if not checks:
        print(f"[build-once] no model of the {len(loaded)} loaded runs the TensorRT EP: nothing to build", flush=True)
    return sorted(model for model, check in checks.items() if not check["taken"])


def repository_of(command: list[str]) -> Path | None:
    """The --model-repository of a tritonserver command line; None for an object-store URI
    (s3://, gs://, as://), which only Triton reads."""
    for arg in command:
        if arg.startswith("--model-repository="):
            value = arg.split("=", 1)[1]
            return None if "://" in value else Path(value)
    return None


def remote_repository(command: list[str]) -> str | None:
    """The object-store URI the command serves from, if any."""
    for arg in command:
        if arg.startswith("--model-repository=") and "://" in arg:
            return arg.split("=", 1)[1]
    return None
