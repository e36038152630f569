"""Start, wait for and stop the tritonserver binary that ships in `nvidia-pytriton==0.7.0`.

That wheel carries Triton 2.51.0 with the Python backend (no onnxruntime/TensorRT backends):
the binary needs the wheel's bundled libraries on LD_LIBRARY_PATH, the Python-backend stub
for our Python version next to libtriton_python.so, and our venv's site-packages on
PYTHONPATH so the models can import tokenizers and onnxruntime.

    python -m local_triton.server REPO [--http-port 8000 --grpc-port 8001 --metrics-port 8002]

The launcher stops its server on Ctrl-C, SIGTERM and SIGHUP alike (the server runs in its own
session, so a signal to the launcher alone would otherwise leave it running and holding the
ports), and the server gets SIGTERM from the kernel if the launcher dies without cleaning up.
While serving, it runs the deployment's health probe (docker/probe.py: one pair through the
ensemble) every few seconds and says when the answer changes, and restarts tritonserver when
one of its Python-backend stubs dies (Triton never restarts one: docker/stub_watch.py).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from export.settings import PROBE_TIMEOUT_S, python_backend_flags

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".cache" / "triton"
PROBE_SCRIPT = ROOT / "docker" / "probe.py"
STUB_WATCH_SCRIPT = ROOT / "docker" / "stub_watch.py"
PROBE_PERIOD_S = 10.0  # the chart's liveness period


def _image_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def probe_module():
    """docker/probe.py, the exec probe shipped in the image, loaded from its file."""
    return _image_module("reranker_probe", PROBE_SCRIPT)


def stub_watch_module():
    """docker/stub_watch.py, the image launcher's dead-stub watch, loaded from its file."""
    return _image_module("reranker_stub_watch", STUB_WATCH_SCRIPT)


def self_certify_module():
    """docker/self_certify.py, the image launcher's self-certification, loaded from its file."""
    return _image_module("reranker_self_certify", ROOT / "docker" / "self_certify.py")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Stop(Exception):
    """SIGTERM/SIGHUP to the launcher: stop the server as Ctrl-C does."""


def free_port() -> int:
    """A TCP port nothing listens on now, for servers that need not be on the default ports."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def backend_directory() -> Path:
    """A backends/ folder whose python/ holds the backend library and our Python's stub."""
    source = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = STATE_DIR / f"backends-py{version}"
    python_dir = target / "python"
    if not (python_dir / "triton_python_backend_stub").exists():
        python_dir.mkdir(parents=True, exist_ok=True)
        for item in (source / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, python_dir / item.name)
        shutil.copy2(
            source / "python_backend_stubs" / version / "triton_python_backend_stub",
            python_dir / "triton_python_backend_stub",
        )
    return target


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = pytriton_root().parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH", "")]))
    site = sysconfig.get_paths()["purelib"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH", "")]))
    # The embedded interpreter of the stub finds its prefix through `python3` on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


@dataclass
class TritonServer:
    repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    # Loopback unless asked otherwise: tritonserver binds every interface by default, which on a
    # laptop or a shared box exposes every model of the repository to the network.
    host: str = "127.0.0.1"
    # The Python backend's shared-memory regions (/dev/shm, ~100 MB each here) outlive a server
    # that is killed; named with this server's own prefix, `stop` removes what it leaves behind.
    shm_prefix: str = field(default_factory=lambda: f"reranker_local_shm_{uuid.uuid4().hex[:12]}_")

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "127.0.0.1", "localhost") else self.host

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        return [
            str(binary),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={backend_directory()}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
            # Drain in-flight requests for up to 10 s on SIGINT (production keeps 30).
            "--exit-timeout-secs=10",
            # The deployment's Python backend shm sizing (export/settings.py), so the
            # flags the chart passes are exercised by every local run.
            *python_backend_flags(),
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> TritonServer:
        # The server outlives this call: its log file stays open as long as the process runs.
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), env=server_environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready(timeout)
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self._client_host}:{self.http_port}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with code {self.process.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Triton drains in-flight requests on SIGINT
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.release_shm()

    def release_shm(self) -> None:
        """Remove the shared-memory regions this server's Python models left (a killed stub or
        server never unlinks its own); the memory is freed once nothing maps it."""
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a model repository on the local tritonserver.")
    parser.add_argument("repository", type=Path)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 for every interface)"
    )
    parser.add_argument(
        "--probe-period",
        type=float,
        default=PROBE_PERIOD_S,
        help="seconds between health probes (one pair through the ensemble)",
    )
    parser.add_argument("extra", nargs="*", help="more tritonserver flags, after --")
    certify = self_certify_module()
    certify.add_arguments(parser, repository_option=False)
    # `make serve` certifies itself as every pod does (its verdict file beside the server state).
    parser.set_defaults(self_certify="fail", verdict=None)
    args = parser.parse_args(argv)
    if not (args.repository / "rerank" / "config.pbtxt").exists():
        parser.error(f"{args.repository} is not an exported repository (run `make export` first)")
    server = TritonServer(
        args.repository, args.http_port, args.grpc_port, args.metrics_port, args.extra, host=args.host
    )
    print(
        f"starting tritonserver on {args.host}: http :{args.http_port}, grpc :{args.grpc_port}, "
        f"metrics :{args.metrics_port} ...",
        flush=True,
    )
    server.log_path = None

    def on_signal(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    probe = probe_module()
    args.grpc_url = server.grpc_url
    args.verdict = args.verdict or STATE_DIR / f"selfcert-{args.http_port}.json"
    certifier = certify.SelfCertifier(args, f"http://{server.http_url}")
    certifier.prepare()
    try:
        server.process = subprocess.Popen(
            server.command(), env=server_environment(), start_new_session=True, preexec_fn=_die_with_parent
        )
        server.wait_ready(600)
        certify_and_report(certifier, args.verdict)
        stub_watch = stub_watch_module()
        verdict = args.verdict if certifier.enabled else None
        while dead := watch_health(server, probe, args.probe_period, stub_watch, verdict):
            # Triton never restarts a dead stub: only a new server heals the model.
            print(f"{stub_watch.describe(dead)}: restarting tritonserver ...", flush=True)
            died_at = time.monotonic()
            server.stop(timeout=stub_watch.DEATH_DRAIN_S)
            if certifier.enabled:
                args.verdict.unlink(missing_ok=True)  # not ready until the new server is certified
            server.process = subprocess.Popen(
                server.command(), env=server_environment(), start_new_session=True, preexec_fn=_die_with_parent
            )
            server.wait_ready(600)
            print(f"ready again {time.monotonic() - died_at:.1f} s after the stub died", flush=True)
            certify_and_report(certifier, args.verdict)
    except (KeyboardInterrupt, Stop) as reason:
        print(f"\nstopping tritonserver ({reason or 'Ctrl-C'}) ...", flush=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the drain short
        server.stop()
        certifier.close()
    if server.process is None:
        return 1
    return server.process.returncode or 0


def certify_and_report(certifier, verdict_path: Path) -> None:
    verdict = certifier.run() if certifier.enabled else None
    if verdict is not None and not verdict["ready"]:
        print(f"NOT READY: self-certification failed (verdict in {verdict_path}); Ctrl-C stops", flush=True)
    else:
        print("ready: model `rerank` is serving; Ctrl-C stops the server", flush=True)


def watch_health(
    server: TritonServer, probe, period: float = PROBE_PERIOD_S, stub_watch=None, verdict: Path | None = None
) -> list:
    """Until the server exits (returns []) or one of its Python stubs dies (returns the dead
    stubs, checked every stub_watch.POLL_S): the health probe every `period` s (and the
    self-certification verdict, as readiness reads it, when there is one); report each change."""
    url = f"http://{server._client_host}:{server.http_port}"
    assert server.process is not None, "start() the server first"
    watch = None
    if stub_watch and stub_watch.own_pid_is_watchable():
        watch = stub_watch.StubWatch(server.process.pid, stub_watch.expected_stubs(url))
    was_healthy = True
    while True:
        next_probe = time.monotonic() + period
        while (left := next_probe - time.monotonic()) > 0:
            try:
                server.process.wait(min(left, stub_watch.POLL_S if stub_watch else period))
                return []
            except subprocess.TimeoutExpired:
                pass
            if watch is not None and (dead := watch.dead()):
                return dead
        healthy, reason = probe.certified(str(verdict)) if verdict else (True, "")
        if healthy:
            healthy, reason = probe.probe(url, timeout_s=PROBE_TIMEOUT_S)
        if healthy != was_healthy:
            print(f"health probe: {'healthy again' if healthy else 'UNHEALTHY'}: {reason}", flush=True)
            was_healthy = healthy


if __name__ == "__main__":
    sys.exit(main())
