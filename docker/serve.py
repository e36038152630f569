#!/usr/bin/env python3
"""Runs tritonserver with an engine cache that cannot corrupt itself; the image's command.

    python3 serve.py [--local /trt-cache] [--shared /trt-cache-shared] -- tritonserver ARGS...

ONNX Runtime's TensorRT EP writes engine files in place and does not rebuild a corrupt one:
a server killed mid-build (OOM, a failed startup probe) would leave a file that crash-loops
every later start that reads it. So:

- Triton writes only to `--local`, a per-pod volume (emptyDir). Once the server is ready, a
  `.complete` marker there records every file's size and modification time; at start, a file not
  recorded as it is (written or rewritten since: a build killed midway) is removed, and without
  a marker everything is (engine_cache.prepare_local).
- `--shared` (optional, a ReadWriteMany volume shared by pods) holds one entry per model hash
  under `<GPU name>-trt<TensorRT version>/<model hash>/` (engine_cache.py): written in a
  temporary folder, its own `.complete` marker (names and sizes) last, then renamed into place;
  readers take only marked entries. A pod seeds only the current model's entry (the hash from
  --model-hash or --repository's manifest.json), and only if it fits --local-size; it publishes
  what it built once ready and certified. A pod with engines to build holds the cache's build
  lock (build_once.BuildLock) from a re-seed through the build, the self-certification and the
  publish, so pods waiting on it seed the entry instead of building it again: each engine is
  built once per GPU key. Waiting on the lock ends at once on a stop signal.
- `--prebuild-only` (the chart's prebuild Job, one per GPU type): the same start, then stop
  tritonserver and exit 0 once this model's entry is in the shared cache (1 if it is not, or if
  pods could not seed it); `--prune` then removes the other models' entries for this GPU.

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
and its exit code is ours (128 + N when it died of signal N). A signal while serve.py works on its
own (nvidia-smi, seeding, waiting for the build lock, publishing) stops that work at once,
removes its temporary files and exits 128 + N; one while tritonserver is still loading (building
engines) marks nothing complete, and the server is killed if it has not exited after
BUILD_STOP_GRACE_S.

The NGC entrypoint stays in front of this script (the chart passes
`args`, not `command`). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# self_certify.py sits beside this file (/opt/reranker in the image); also when loaded by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_once  # noqa: E402 - shipped beside this file
import engine_cache  # noqa: E402 - shipped beside this file
import self_certify  # noqa: E402
import stub_watch  # noqa: E402 - shipped beside this file
from stub_watch import StubWatch, describe, expected_stubs, own_pid_is_watchable  # noqa: E402

MARKER = engine_cache.MARKER
# nvidia-smi answers in well under a second on a healthy node; a hung driver must not hold the
# start for longer than this (a stop signal interrupts it at once: Launcher.forward).
NVIDIA_SMI_TIMEOUT_S = 30.0
# A tritonserver told to stop while still loading (building engines) has nothing to drain; one
# that has not exited after this long is killed, well inside the pod's termination grace period.
BUILD_STOP_GRACE_S = 10.0
# --prebuild-only: a certified build whose entry pods would refuse to seed (engine_cache
# SEED_MAX_FRACTION of --local-size), or no engine for the model after warm-up.
EXIT_PREBUILD_FAILED = 1
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
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        name = "unknown-gpu"
    trt = os.environ.get("TRT_VERSION", "unknown")
    return re.sub(r"[^A-Za-z0-9.]+", "-", f"{name}-trt{trt}").strip("-")


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
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    if (args.prebuild_only or args.prune) and args.shared is None:
        parser.error("--prebuild-only and --prune need --shared (the cache they fill)")
    if args.local is None and args.shared is not None:
        parser.error("--local none (no engine cache) cannot seed or publish --shared")
    certifier = self_certify.SelfCertifier(args, args.ready_url.split("/v2/")[0])
    command = argv[split + 1 :]
    launcher = Launcher(args, command, certifier)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, launcher.forward)
    certifier.prepare()
    replaced: list[float] = []
    while True:
        code = launcher.serve_once()
        if code != EXIT_STUB_DIED or launcher.stopping or args.prebuild_only:
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


def build_parser() -> argparse.ArgumentParser:
    """serve.py's options (the part before `--`); the chart's tests parse its args with it."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--local",
        type=local_dir,
        default=Path("/trt-cache"),
        help="the per-pod engine cache; 'none' for a repository without the TensorRT EP (the int8 CPU "
        "profile, docs/CPU.md): nothing to build, seed, mark or publish",
    )
    parser.add_argument("--shared", type=Path, default=None)
    add_engine_cache_arguments(parser)
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
    return parser


def local_dir(value: str) -> Path | None:
    return None if value == "none" else Path(value)


def add_engine_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine-cache options (issue 27): which model's entry to seed, the per-pod bound, and
    the prebuild Job's mode."""
    parser.add_argument(
        "--model-hash",
        type=engine_cache.check_model_hash,
        default=None,
        help="the model's engine_cache_prefix (default: from --repository's manifest.json); only its "
        "entry of the shared cache is seeded",
    )
    parser.add_argument(
        "--local-size",
        type=engine_cache.parse_quantity,
        default=None,
        help="size limit of the --local volume (a Kubernetes quantity: trtCache.size); an entry over "
        f"{engine_cache.SEED_MAX_FRACTION:.0%} of it is not seeded",
    )
    parser.add_argument(
        "--prebuild-only",
        action="store_true",
        help="build, certify and publish the engines to --shared, then stop tritonserver and exit "
        f"(0: the entry is in the cache; {EXIT_PREBUILD_FAILED}: it is not, or pods could not seed it)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="with --prebuild-only, after a successful build: remove other models' entries for this GPU",
    )


def exit_status(returncode: int) -> int:
    """A child killed by signal N reports -N; a shell (and the kubelet) reads 128 + N. Returned
    as it is, -15 would reach the exit status as 241."""
    return 128 - returncode if returncode < 0 else returncode


class Stopped(Exception):
    """A stop signal arrived while serve.py itself was busy (nvidia-smi, seeding, publishing)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Launcher:
    """One tritonserver at a time; signals go to the current one. While serve.py works on its
    own (nvidia-smi, copying engines), a stop signal interrupts that work at once: temporary
    files are removed on the way out, and nothing half-copied is left under a final name."""

    def __init__(self, args: argparse.Namespace, command: list[str], certifier: self_certify.SelfCertifier) -> None:
        self.args, self.command, self.certifier = args, command, certifier
        self.server: subprocess.Popen | None = None
        self.stopping = False
        self.signum = 0  # the stop signal received
        self.interruptible = False

    def forward(self, signum, _frame) -> None:
        self.stopping, self.signum = True, signum
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT if signum == signal.SIGHUP else signum)
        if self.interruptible:
            self.interruptible = False  # a second signal must not interrupt the clean-up
            raise Stopped(signum)

    def _busy(self, work, what: str):
        """Run `work()`; a stop signal during it raises Stopped (logged here)."""
        self.interruptible = True
        try:
            if self.stopping:
                raise Stopped(self.signum)
            return work()
        except Stopped as stop:
            print(f"[serve] {stop} during {what}: stopped, temporary files removed", flush=True)
            raise
        finally:
            self.interruptible = False

    def serve_once(self) -> int:
        """Start tritonserver, certify it once ready, publish its engines; its exit code, or
        EXIT_STUB_DIED when one of its stubs died and it was stopped."""
        args = self.args
        stale = clear_stale_shm(args.shm_dir)
        if stale:
            print(
                f"[serve] removed {len(stale)} shared-memory region(s) left in {args.shm_dir} by a killed server",
                flush=True,
            )
        try:
            gpu_dir = self._busy(lambda: args.shared / gpu_key() if args.shared else None, "nvidia-smi")
            model_hash = args.model_hash or engine_cache.model_hash_from_repository(args.repository)
            self._busy(lambda: self.seed(gpu_dir, model_hash), "seeding the engine cache")
        except Stopped as stop:
            return 128 + stop.signum
        if self.stopping:  # signalled between two servers
            return 0
        try:
            lock = self._take_build_lock(gpu_dir, model_hash)
        except Stopped as stop:
            return 128 + stop.signum
        note = "ended before its engines were certified: nothing published"
        try:
            # Each missing TensorRT EP engine built once, one instance at a time (build_once.py);
            # the shared lock, if any, is already held (above): no second lock here.
            if args.local is not None:
                build_once.ensure_engines(
                    args.local,
                    None,
                    self.command,
                    args.ready_url,
                    stopping=lambda: self.stopping,
                    model_hash=model_hash,
                )
            if self.stopping:
                note = "stopped by a signal during the build pass: nothing published"
                print("[serve] stop signal during the build pass: stopped", flush=True)
                return 128 + self.signum
            self.server = server = subprocess.Popen(self.command)
            while server.poll() is None and not ready(args.ready_url) and not self.stopping:
                time.sleep(1)
            if self.stopping and server.poll() is None and not ready(args.ready_url):
                note = "stopped by a signal while tritonserver was loading: nothing published"
                return self.stop_during_build(server)
            # Engines that fail the self-certification, or have no certificate to pass, are neither
            # marked complete nor published (the shared cache holds certified engines only).
            verdict = self.certifier.run() if server.poll() is None and self.certifier.enabled else None
            certified = server.poll() is None and (verdict is None or verdict["passed"])
            prebuilt = None
            if certified and args.local is not None:
                engine_cache.mark_local_complete(args.local)
                if gpu_dir is not None:
                    try:
                        prebuilt = self._busy(lambda: self.publish(gpu_dir, model_hash), "publishing engines")
                    except Stopped:
                        prebuilt = False
                    except OSError as err:  # read-only or full shared volume: serving goes on
                        print(f"[serve] not published to {gpu_dir}: {err}", flush=True)
                        prebuilt = False
            note = build_outcome(server, verdict, certified, prebuilt)
        finally:
            # Released on every way out (a crash of serve.py itself releases it with its
            # descriptors): a waiting pod re-seeds now and finds the entry, or builds.
            if lock is not None:
                at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                lock.release(f"{socket.gethostname()} (pid {os.getpid()}, {at}) built {model_hash}: {note}")
        if args.prebuild_only:
            return self.finish_prebuild(server, certified and bool(prebuilt))
        return exit_status(watch_until_exit(server, lambda: self.stopping, base_url=args.ready_url.split("/v2/")[0]))

    def _take_build_lock(self, gpu_dir: Path | None, model_hash: str | None) -> build_once.BuildLock | None:
        """The shared build lock when this pod has engines to build (None when it needs none: all
        seeded, no shared cache, or no model hash to find a published entry by). Held from the
        re-seed below until the engines are published (serve_once), so a pod that waited here
        seeds what the holder built instead of building it again. Waiting is interruptible: a
        stop signal raises Stopped, and nothing is held."""
        if (
            gpu_dir is None
            or model_hash is None
            or not build_once.engines_to_build(self.command, self.args.local, model_hash)
        ):
            return None
        lock = build_once.BuildLock(gpu_dir)
        print(
            f"[serve] engines to build: waiting for the build lock {lock.path} (held until they are published)",
            flush=True,
        )
        try:
            last = self._busy(lock.acquire, "waiting for the build lock")
        except OSError as err:
            # A shared volume this pod cannot write (a read-only mount, an EFS access point with
            # another uid): serving goes on without the lock, as publishing does (serve_once).
            print(
                f"[serve] cannot take the build lock {lock.path} ({err}): building here without it; "
                "check that the shared cache is writable by this pod's user",
                flush=True,
            )
            return None
        try:
            # Another pod may have published this model's entry while this one waited.
            self._busy(lambda: self.seed(gpu_dir, model_hash), "seeding the engine cache")
        except BaseException:
            lock.release()
            raise
        if not build_once.engines_to_build(self.command, self.args.local, model_hash):
            print("[serve] build lock taken: every engine seeded from the shared cache, nothing to build", flush=True)
            lock.release()  # the last builder's note stays
            return None
        print(
            "[serve] build lock taken: building here; the last build under it: "
            + (last or "none recorded (the first build for this GPU key)"),
            flush=True,
        )
        return lock

    def seed(self, gpu_dir: Path | None, model_hash: str | None) -> None:
        if self.args.local is None:
            return  # --local none: no engine cache to clean or fill
        removed = engine_cache.prepare_local(self.args.local)
        if removed:
            print(
                f"[serve] engine cache {self.args.local}: removed {len(removed)} file(s) not recorded complete "
                f"(a build killed midway): {', '.join(removed[:5])}",
                flush=True,
            )
        try:
            result = engine_cache.seed(self.args.local, gpu_dir, model_hash, self.args.local_size)
        except OSError as err:
            # A shared volume that fails mid-copy (an NFS hiccup, an entry pruned while being
            # read): what was copied is whole (copy_file), the rest is built here.
            result = engine_cache.SeedResult(reason=f"seeding failed ({err}): the missing engines are built here")
        if result.copied:
            print(
                f"[serve] engine cache {self.args.local}: seeded {len(result.copied)} file(s), {result.bytes} bytes, "
                f"from {gpu_dir / str(model_hash) if gpu_dir else None}",
                flush=True,
            )
        else:
            print(f"[serve] engine cache {self.args.local}: nothing seeded: {result.reason}", flush=True)

    def publish(self, gpu_dir: Path, model_hash: str | None) -> bool:
        """Publish this model's engines as one entry; True when the entry is in the cache and
        pods may seed it."""
        try:
            configs = self_certify.loaded_configs(self.args.ready_url.split("/v2/")[0])
            served = engine_cache.model_hash_from_configs(configs)
        except (OSError, ValueError) as err:
            print(f"[serve] could not read the loaded configs ({err}); model hash {model_hash}", flush=True)
            served = None
        if served and model_hash and served != model_hash:
            print(f"[serve] --model-hash {model_hash} is not the served model's: publishing {served}", flush=True)
            if self.args.prebuild_only:
                # Pods seed the entry of --model-hash (trtCache.modelHash): a Job that published
                # another would succeed while every pod of the rollout builds its own engines.
                engine_cache.publish(self.args.local, gpu_dir, served)
                print(
                    f"[serve] prebuild FAILED: pods look for {model_hash}, the served model is {served}: "
                    f"set trtCache.modelHash={served}",
                    flush=True,
                )
                return False
        model_hash = served or model_hash
        if model_hash is None:
            print("[serve] no model uses the TensorRT engine cache: nothing to publish", flush=True)
            return self.args.prebuild_only  # nothing to prebuild is no failure
        outcome, size = engine_cache.publish(self.args.local, gpu_dir, model_hash)
        entry = gpu_dir / model_hash
        if outcome == "nothing":
            print(f"[serve] no {model_hash}_* engine in {self.args.local} after warm-up: nothing published", flush=True)
            return engine_cache.read_entry(entry) is not None
        print(f"[serve] entry {entry}: {outcome}" + (f", {size} bytes" if size else ""), flush=True)
        total = engine_cache.entry_bytes(gpu_dir, model_hash) or 0
        limit = self.args.local_size
        if limit is not None and total > limit * engine_cache.SEED_MAX_FRACTION:
            print(
                f"[serve] entry {entry} holds {total} bytes, over {engine_cache.SEED_MAX_FRACTION:.0%} of the per-pod "
                f"cache ({limit} bytes, trtCache.size): pods will not seed it; raise trtCache.size",
                flush=True,
            )
            return False
        if self.args.prune:
            try:
                removed = engine_cache.prune(gpu_dir, keep=model_hash)
                names = ", ".join(removed[:10])
                print(f"[serve] pruned {len(removed)} other item(s) from {gpu_dir}: {names}", flush=True)
            except OSError as err:  # the entry is published: a failed clean-up does not undo that
                print(f"[serve] warning: pruning {gpu_dir} failed ({err}); the entry {entry} is published", flush=True)
        return True

    def stop_during_build(self, server: subprocess.Popen) -> int:
        """Stopped before tritonserver was ready (loading, building engines): no marker, nothing
        published; the engines it was writing are removed at the next start."""
        print(
            "[serve] stop signal while tritonserver was loading (engines being built): nothing marked complete "
            "or published; what it wrote is removed at the next start",
            flush=True,
        )
        return exit_status(stop_within(server, None, BUILD_STOP_GRACE_S))

    def finish_prebuild(self, server: subprocess.Popen, prebuilt: bool) -> int:
        """--prebuild-only: stop tritonserver, say what was done."""
        if server.poll() is None:
            stop_within(server, signal.SIGTERM, BUILD_STOP_GRACE_S)
        elif not self.stopping:
            code = exit_status(server.returncode)
            print(f"[serve] prebuild: tritonserver exited {code} before its engines were certified", flush=True)
            return code or EXIT_PREBUILD_FAILED
        if self.stopping:
            print("[serve] prebuild: stopped by a signal before it finished", flush=True)
            return 128 + self.signum
        if not prebuilt:
            print("[serve] prebuild FAILED: the engine cache holds no usable entry for this model", flush=True)
            return EXIT_PREBUILD_FAILED
        print("[serve] prebuild done: the engine cache holds this model's entry", flush=True)
        return 0


def build_outcome(server: subprocess.Popen, verdict: dict | None, certified: bool, prebuilt: bool | None) -> str:
    """What became of a build, in the note the build lock keeps for the next pod's log."""
    if server.poll() is not None:
        return (
            f"tritonserver exited {exit_status(server.returncode)} before its engines were certified: nothing published"
        )
    if not certified and verdict is not None and verdict["certificate"].get("missing"):
        # The engine check passed or failed on its own; without a certificate nothing is certified.
        return "no certificate (--certificate=none): uncertified, nothing published"
    if not certified:
        return "self-certification failed: nothing published"
    if prebuilt:
        return "certified and published"
    return "certified, but not published (see that pod's log)"


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


def stop_within(server: subprocess.Popen, signum: int | None, grace_s: float) -> int:
    """Send `signum` (None: it was sent already), wait up to `grace_s`, then SIGKILL; the exit code."""
    if signum is not None:
        server.send_signal(signum)
    try:
        return server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        print(f"[serve] tritonserver still running after {grace_s:.0f} s: killed", flush=True)
        server.kill()
        return server.wait()


def stop_fast(server: subprocess.Popen) -> None:
    """SIGINT (Triton drains what healthy instances hold), then SIGKILL after STUB_DEATH_DRAIN_S:
    with a dead stub Triton would otherwise wait out its whole --exit-timeout-secs."""
    stop_within(server, signal.SIGINT, STUB_DEATH_DRAIN_S)


if __name__ == "__main__":
    sys.exit(main())
