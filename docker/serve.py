#!/usr/bin/env python3
"""Runs tritonserver with an engine cache that cannot corrupt itself; the image's command.

    python3 serve.py [--local /trt-cache] [--shared /trt-cache-shared] -- tritonserver ARGS...

ONNX Runtime's TensorRT EP writes engine files in place and does not rebuild a corrupt one:
a server killed mid-build (OOM, a failed startup probe) would leave a file that crash-loops
every later start that reads it. So:

- Triton writes only to `--local`, a per-pod volume (emptyDir). A `.complete` marker is written
  there once the server is ready (every engine built, warm-up passed); at start, a local cache
  without the marker is a killed build and is emptied first.
- `--shared` (optional, a ReadWriteMany volume shared by pods) holds published engines under
  `<GPU name>-trt<TensorRT version>/`: a pod starts by copying them into its local cache, and
  publishes what it built after it is ready, each file copied under a temporary name and then
  renamed into place (rename is atomic on one filesystem, NFS included), never overwriting a
  published file. Pods that build at the same time each build locally; whichever renames first
  wins, and a reader never sees half a file. Engine names carry the model's hash
  (`trt_engine_cache_prefix`), so models do not collide.

Shared memory: regions a killed predecessor left in /dev/shm are removed before tritonserver
starts (`clear_stale_shm`).

Self-certification (`--self-certify fail|warn`, self_certify.py): once Triton is ready, check that
TensorRT took every class model and send the certificate through `rerank`; the verdict file is what
readiness (`probe.py --verdict`) reads. Engines that fail it are neither marked complete nor
published.

Dead stubs: once ready, the Python-backend stubs are watched (stub_watch.py: Triton never
restarts one, and its health endpoints keep saying 200). When one dies, tritonserver is stopped
(5 s drain, then killed) and a fresh one started in this container - shared memory cleared, engine
cache seeded, certified again - up to --stub-restarts times in STUB_RESTART_WINDOW_S; past that
this script exits 75 so the kubelet restarts the container (and counts it). In place rather than
by container restart first: compose's proxy shares this container's network namespace and would
lose it on a container restart, and the kubelet's back-off would delay a second recovery.

Signals: SIGTERM/SIGINT/SIGHUP are passed to tritonserver (which drains for --exit-timeout-secs)
and its exit code is ours. The NGC entrypoint stays in front of this script (the chart passes
`args`, not `command`). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# self_certify.py sits beside this file (/opt/reranker in the image); also when loaded by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_once  # noqa: E402 - shipped beside this file
import self_certify  # noqa: E402
import stub_watch  # noqa: E402 - shipped beside this file
from stub_watch import StubWatch, describe, expected_stubs, own_pid_is_watchable  # noqa: E402

MARKER = ".complete"
# A dead Python-backend stub: checked every STUB_POLL_S once ready; in-flight requests on the
# healthy instances get STUB_DEATH_DRAIN_S, then tritonserver is killed and replaced. After
# --stub-restarts replacements within STUB_RESTART_WINDOW_S we exit with EXIT_STUB_DIED
# (EX_TEMPFAIL) for the kubelet to restart the container.
STUB_POLL_S = stub_watch.POLL_S
STUB_DEATH_DRAIN_S = stub_watch.DEATH_DRAIN_S
STUB_RESTART_WINDOW_S = 600.0
DEFAULT_STUB_RESTARTS = 3
EXIT_STUB_DIED = 75
# The Python backend's default name for its shared-memory regions.
SHM_REGION_PREFIX = "triton_python_backend_shm_region"


def gpu_key() -> str:
    """Engines run only on the GPU model and TensorRT release they were built with."""
    try:
        name = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        name = "unknown-gpu"
    trt = os.environ.get("TRT_VERSION", "unknown")
    return re.sub(r"[^A-Za-z0-9.]+", "-", f"{name}-trt{trt}").strip("-")


def prepare_local(local: Path, shared_dir: Path | None) -> list[str]:
    """Empty a local cache left by a killed build; seed it from the shared one. Returns the seeded names."""
    local.mkdir(parents=True, exist_ok=True)
    if not (local / MARKER).exists():
        for entry in local.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    seeded = []
    if shared_dir is not None and shared_dir.is_dir():
        for item in sorted(shared_dir.iterdir()):
            if item.is_file() and not item.name.startswith(".") and not (local / item.name).exists():
                atomic_copy(item, local / item.name)
                seeded.append(item.name)
    return seeded


def atomic_copy(src: Path, dest: Path) -> None:
    """dest appears whole or not at all."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def publish(local: Path, shared_dir: Path) -> list[str]:
    """Copy each complete local file the shared cache lacks, by temporary name + rename."""
    shared_dir.mkdir(parents=True, exist_ok=True)
    published = []
    for item in sorted(local.iterdir()):
        if item.is_file() and not item.name.startswith(".") and not (shared_dir / item.name).exists():
            atomic_copy(item, shared_dir / item.name)
            published.append(item.name)
    return published


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def clear_stale_shm(shm_dir: Path) -> list[str]:
    """Remove the regions a killed predecessor's Python models left in /dev/shm. On Kubernetes
    that is the pod's memory-backed emptyDir, which outlives a container restart and counts
    against its sizeLimit: after a few restarts (a killed stub fails the probe) the leftovers
    would fill it and the next tritonserver could not create its own regions. Nothing in this
    container uses them yet: tritonserver starts after this."""
    removed = []
    for region in sorted(shm_dir.glob(f"{SHM_REGION_PREFIX}*")):
        region.unlink(missing_ok=True)
        removed.append(region.name)
    return removed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: serve.py [options] -- tritonserver ARGS...", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--local", type=Path, default=Path("/trt-cache"))
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--ready-url", default="http://127.0.0.1:8000/v2/health/ready")
    parser.add_argument("--shm-dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument(
        "--stub-restarts",
        type=int,
        default=DEFAULT_STUB_RESTARTS,
        help=f"fresh tritonservers started in place after a stub dies, per {STUB_RESTART_WINDOW_S:.0f} s, "
        f"before exiting {EXIT_STUB_DIED} for the kubelet (0: exit at once)",
    )
    self_certify.add_arguments(parser)
    args = parser.parse_args(argv[:split])
    certifier = self_certify.SelfCertifier(args, args.ready_url.split("/v2/")[0])
    certifier.prepare()
    command = argv[split + 1 :]
    launcher = Launcher(args, command, certifier)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, launcher.forward)
    replaced: list[float] = []
    while True:
        code = launcher.serve_once()
        if code != EXIT_STUB_DIED or launcher.stopping:
            return code
        now = time.monotonic()
        replaced = [t for t in replaced if now - t < STUB_RESTART_WINDOW_S]
        if len(replaced) >= args.stub_restarts:
            print(
                f"[serve] tritonserver already replaced {len(replaced)} time(s) in {STUB_RESTART_WINDOW_S:.0f} s: "
                f"exiting {EXIT_STUB_DIED} so the kubelet restarts the container",
                flush=True,
            )
            return code
        replaced.append(now)
        if certifier.enabled:
            certifier.verdict_path.unlink(missing_ok=True)  # unready until the new server is certified
        print("[serve] starting a fresh tritonserver in place", flush=True)


class Launcher:
    """One tritonserver at a time; signals go to the current one."""

    def __init__(self, args: argparse.Namespace, command: list[str], certifier: self_certify.SelfCertifier) -> None:
        self.args, self.command, self.certifier = args, command, certifier
        self.server: subprocess.Popen | None = None
        self.stopping = False

    def forward(self, signum, _frame) -> None:
        self.stopping = True
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT if signum == signal.SIGHUP else signum)

    def serve_once(self) -> int:
        """Start tritonserver, certify it once ready, publish its engines; its exit code, or
        EXIT_STUB_DIED when one of its stubs died and it was stopped."""
        args, certifier = self.args, self.certifier
        stale = clear_stale_shm(args.shm_dir)
        if stale:
            print(
                f"[serve] removed {len(stale)} shared-memory region(s) left in {args.shm_dir} by a killed server",
                flush=True,
            )
        shared_dir = args.shared / gpu_key() if args.shared else None
        seeded = prepare_local(args.local, shared_dir)
        print(f"[serve] engine cache {args.local}: {len(seeded)} file(s) from {shared_dir}", flush=True)

        if self.stopping:  # signalled between two servers
            return 0
        # Each missing TensorRT EP engine built once, one instance at a time (build_once.py).
        build_once.ensure_engines(args.local, shared_dir, self.command, args.ready_url)
        self.server = server = subprocess.Popen(self.command)
        while server.poll() is None and not ready(args.ready_url):
            time.sleep(1)
        # Engines that fail the self-certification are neither marked complete nor published.
        verdict = certifier.run() if server.poll() is None and certifier.enabled else None
        if server.poll() is None and (verdict is None or verdict["passed"]):
            (args.local / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
            if shared_dir is not None:
                try:
                    names = publish(args.local, shared_dir)
                    print(f"[serve] published {len(names)} engine file(s) to {shared_dir}", flush=True)
                except OSError as err:  # read-only or full shared volume: serving goes on
                    print(f"[serve] not published to {shared_dir}: {err}", flush=True)
        return watch_until_exit(server, lambda: self.stopping, base_url=args.ready_url.split("/v2/")[0])


def watch_until_exit(
    server: subprocess.Popen, stopping=lambda: False, poll_s: float = STUB_POLL_S, base_url: str | None = None
) -> int:
    """tritonserver's exit code; or, when one of its Python-backend stubs dies (Triton never
    restarts one: stub_watch.py), stop it and return EXIT_STUB_DIED. A server already asked to
    stop is left to drain."""
    watch = None
    if server.poll() is None and own_pid_is_watchable():
        watch = StubWatch(server.pid, expected_stubs(base_url) if base_url else None)
    while True:
        try:
            return server.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        dead = watch.dead() if watch is not None and not stopping() else []
        if dead:
            print(f"[serve] {describe(dead)}: stopping tritonserver", flush=True)
            stop_fast(server)
            return EXIT_STUB_DIED


def stop_fast(server: subprocess.Popen) -> None:
    """SIGINT (Triton drains what healthy instances hold), then SIGKILL after STUB_DEATH_DRAIN_S:
    with a dead stub Triton would otherwise wait out its whole --exit-timeout-secs."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=STUB_DEATH_DRAIN_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
