"""Issue 25 item 5 across pods: pods sharing one engine cache volume build each engine once per
device type (docker/serve.py holds the cache's build lock from the re-seed through the build
pass, the serving start, the self-certification and the publish). Real launchers (serve.py, as
the image runs it) around a stand-in `tritonserver`: a real process that writes what TensorRT
would (one engine per loaded class model, during its build pass only), answers readiness and
stops on SIGINT/SIGTERM. Every build pass it runs is recorded in one log shared by the pods."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from export.settings import ServingLimits
from export.tensorrt_profiles import length_classes
from export.triton_config import BUILD_ONCE_CONFIG, RepositorySpec, build_once_config, cross_encoder_config, to_pbtxt
from local_triton.server import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import build_once  # noqa: E402
import engine_cache  # noqa: E402

MODEL_HASH = "bge_0123abcd"
GPU_KEY = "unknown-gpu-trtunknown"  # serve.gpu_key() without nvidia-smi and TRT_VERSION

STAND_IN = textwrap.dedent(
    """
    import http.server, json, os, signal, sys, threading, time
    port, log, engines, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    loads = [a.split("=", 1)[1] for a in sys.argv[5:] if a.startswith("--load-model=")]
    if loads:  # the build pass (build_once.py): each loaded class model's engine is built
        with open(log, "a") as f:
            f.write(json.dumps({"cache": cache, "models": loads, "start": time.time()}) + "\\n")
        time.sleep(1.0)  # a build takes a while: the other pod is waiting on the lock meanwhile
        for model in loads:
            prefix = json.loads(engines)[model]
            open(os.path.join(cache, prefix + "_42_sm89.engine"), "w").write(cache)  # whose build
    else:
        time.sleep(1.0)  # the serving start deserializes the engines before it is ready
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # /serving: 404 from the build pass, 200 from the serving start
            self.send_response(404 if self.path == "/serving" and loads else 200); self.end_headers()
        def log_message(self, *a): pass
    server = http.server.HTTPServer(("127.0.0.1", port), H)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    """
)


def _repository(tmp_path: Path) -> Path:
    """The onnxruntime class models as write_repository writes them (with configs/build_once.pbtxt);
    no certificate.json: a pod that self-certifies fails its certification."""
    spec = RepositorySpec(backend="onnxruntime", limits=ServingLimits(max_length=8192), engine_cache_prefix=MODEL_HASH)
    repo = tmp_path / "models"
    for length_class in length_classes(spec.limits):
        folder = repo / length_class.model
        (folder / "configs").mkdir(parents=True)
        config = cross_encoder_config(spec, length_class)
        (folder / "config.pbtxt").write_text(to_pbtxt(config))
        (folder / "configs" / f"{BUILD_ONCE_CONFIG}.pbtxt").write_text(to_pbtxt(build_once_config(config)))
    return repo


class Pod:
    """One pod: serve.py around the stand-in, its own per-pod cache and port, the shared cache."""

    def __init__(self, tmp_path: Path, name: str, repo: Path, *options: str) -> None:
        self.local, self.port = tmp_path / f"local-{name}", free_port()
        self.output_path = tmp_path / f"{name}.log"
        script = tmp_path / "stand_in_tritonserver.py"
        script.write_text(STAND_IN)
        engines = json.dumps(build_once.class_models(repo))
        command = [sys.executable, str(script), str(self.port), str(tmp_path / "builds.jsonl"), engines]
        command += [str(self.local), f"--model-repository={repo}", "--model-control-mode=none"]
        env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no nvidia-smi: GPU_KEY
        env.pop("TRT_VERSION", None)
        with open(self.output_path, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "docker" / "serve.py"),
                    "--local",
                    str(self.local),
                    "--shared",
                    str(tmp_path / "shared"),
                    "--model-hash",
                    MODEL_HASH,
                    "--ready-url",
                    f"http://127.0.0.1:{self.port}/v2/health/ready",
                    "--shm-dir",
                    str(tmp_path / f"shm-{name}"),
                    "--verdict",
                    str(tmp_path / f"verdict-{name}.json"),
                    *options,
                    "--",
                    *command,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.output_path.read_text()

    def wait_for(self, condition, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(0.05)

    def serving(self) -> bool:
        """The serving start answers (the build pass, if any, is over)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/serving", timeout=1):
                return True
        except OSError:
            return False

    def blocked_on_a_lock(self) -> bool:
        """The launcher waits in flock(2): /proc/locks lists it as a blocked waiter (`->`)."""
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "->" and fields[5] == str(self.proc.pid):
                return True
        return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _builds(tmp_path: Path) -> list[dict]:
    log = tmp_path / "builds.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _engine_of(pod: Pod) -> str:
    """Whose build pass wrote this pod's class-0 engine (the stand-in writes its cache's path)."""
    [engine] = pod.local.glob(f"{MODEL_HASH}_42_sm89.engine")
    return engine.read_text()


def test_two_pods_sharing_the_cache_run_one_build_pass_and_the_second_seeds_the_entry(tmp_path):
    """Pod B starts while pod A builds: B waits on the lock through A's build pass, serving start
    and publish (the lock used to be released after the build pass alone, so B found nothing
    published and built its own copy), then seeds A's entry and runs no build pass."""
    repo = _repository(tmp_path)
    a = Pod(tmp_path, "a", repo)
    b = None
    try:
        a.wait_for(lambda: len(_builds(tmp_path)) == 1)  # A is building, under the lock
        b = Pod(tmp_path, "b", repo)
        b.wait_for(b.blocked_on_a_lock)
        a.wait_for(a.serving)
        b.wait_for(b.serving)
        builds = _builds(tmp_path)
        assert [build["cache"] for build in builds] == [str(a.local)], b.output()[-3000:]
        assert _engine_of(b) == str(a.local)  # seeded: A's engine, not one B built
        assert engine_cache.read_entry(tmp_path / "shared" / GPU_KEY / MODEL_HASH) is not None
        assert "every engine seeded from the shared cache, nothing to build" in b.output(), b.output()[-3000:]
        # A seeded pod releases the lock and leaves the builder's note.
        note = (tmp_path / "shared" / GPU_KEY / engine_cache.BUILD_LOCK_NAME).read_text()
        assert f"built {MODEL_HASH}: certified and published" in note
    finally:
        codes = [pod.stop() for pod in (a, b) if pod is not None]
    assert codes == [0, 0]


def test_a_failed_certification_releases_the_lock_and_the_next_pod_builds_saying_why(tmp_path):
    """Pod A's self-certification fails (its repository has no certificate): nothing is
    published and the lock is released; pod B, which waited through A's certification, builds
    its own engines and its log carries A's outcome."""
    repo = _repository(tmp_path)
    a = Pod(tmp_path, "a", repo, "--self-certify", "fail", "--repository", str(repo))
    b = None
    try:
        a.wait_for(lambda: len(_builds(tmp_path)) == 1)
        b = Pod(tmp_path, "b", repo)
        b.wait_for(b.blocked_on_a_lock)
        b.wait_for(b.serving)
        verdict = tmp_path / "verdict-a.json"
        assert verdict.exists() and json.loads(verdict.read_text())["passed"] is False
        first, second = _builds(tmp_path)
        assert (first["cache"], second["cache"]) == (str(a.local), str(b.local))
        # B's build started only after A's certification was over (the lock was held through it).
        assert second["start"] > verdict.stat().st_mtime
        assert "self-certification failed: nothing published" in b.output(), b.output()[-3000:]
        assert _engine_of(b) == str(b.local)
        # B certified (off here) and published its own entry.
        b.wait_for(lambda: engine_cache.read_entry(tmp_path / "shared" / GPU_KEY / MODEL_HASH) is not None)
    finally:
        codes = [pod.stop() for pod in (a, b) if pod is not None]
    assert codes == [0, 0]


def test_sigterm_while_waiting_on_the_build_lock_exits_at_once(tmp_path):
    """Another pod holds the lock for its (up to ~30 min) build: a stop signal ends the wait at
    once with 128 + SIGTERM, and no build pass runs."""
    repo = _repository(tmp_path)
    lock_file = tmp_path / "shared" / GPU_KEY / engine_cache.BUILD_LOCK_NAME
    lock_file.parent.mkdir(parents=True)
    with open(lock_file, "a") as holder:  # the other pod, building
        fcntl.flock(holder, fcntl.LOCK_EX)
        pod = Pod(tmp_path, "a", repo)
        try:
            pod.wait_for(pod.blocked_on_a_lock)
            pod.proc.send_signal(signal.SIGTERM)
            code = pod.proc.wait(timeout=10)  # not the holder's build waited out
        finally:
            if pod.proc.poll() is None:
                pod.proc.kill()
                pod.proc.wait()
    assert code == 128 + signal.SIGTERM, pod.output()[-3000:]
    assert "SIGTERM during waiting for the build lock" in pod.output()
    assert _builds(tmp_path) == []
