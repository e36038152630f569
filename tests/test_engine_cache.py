"""docker/serve.py, the image's command (issue 17): a per-pod engine cache that a killed build
cannot poison, seeded from and published to a shared cache by atomic renames. Real files, and
once around the real local tritonserver (SIGTERM passed through)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_triton.server import TritonServer, free_port
from tests.server_helpers import start_launcher, wait_while_running

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("serve_wrapper", ROOT / "docker" / "serve.py")
assert _spec is not None and _spec.loader is not None
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)
import engine_cache  # noqa: E402 - docker/, on the path since serve.py was loaded


def test_killed_build_is_discarded_and_a_finished_one_kept(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "bge_1_sm86.engine").write_bytes(b"half an eng")  # writer killed: no marker
    engine_cache.prepare_local(local)
    assert list(local.iterdir()) == []
    (local / "bge_1_sm86.engine").write_bytes(b"whole engine")
    engine_cache.mark_local_complete(local)  # the server reached ready after writing it
    engine_cache.prepare_local(local)
    assert (local / "bge_1_sm86.engine").read_bytes() == b"whole engine"


def test_a_rebuild_killed_after_a_good_run_is_not_vouched_for_by_its_marker(tmp_path):
    """Issue 27: the per-pod marker of an earlier good run survived a later rebuild killed
    midway (same emptyDir, container restarted), so the half-written engine was kept and read by
    every later start. The marker records each file's size and mtime; what differs goes."""
    local = tmp_path / "local"
    local.mkdir()
    (local / "bge_a_111_sm89.engine").write_bytes(b"A" * 100)
    (local / "TensorrtExecutionProvider_cache_sm89.timing").write_bytes(b"T" * 10)
    engine_cache.mark_local_complete(local)
    # A later start rebuilds (a new model under the same PVC) and is killed midway: a new engine
    # half written, the timing cache rewritten in place.
    (local / "bge_b_222_sm89.engine").write_bytes(b"half")
    timing = local / "TensorrtExecutionProvider_cache_sm89.timing"
    timing.write_bytes(b"T" * 4)
    removed = engine_cache.prepare_local(local)
    assert removed == ["TensorrtExecutionProvider_cache_sm89.timing", "bge_b_222_sm89.engine"]
    assert sorted(p.name for p in local.iterdir()) == [serve.MARKER, "bge_a_111_sm89.engine"]


def _entry(gpu_dir: Path, model_hash: str, files: dict[str, bytes]) -> Path:
    """A finished entry as engine_cache.publish writes it."""
    local = gpu_dir.parent / f"build-{model_hash}"
    local.mkdir(parents=True)
    for name, data in files.items():
        (local / name).write_bytes(data)
    assert engine_cache.publish(local, gpu_dir, model_hash)[0] == "published"
    return gpu_dir / model_hash


def test_publish_writes_one_entry_with_its_marker_and_the_first_writer_wins(tmp_path):
    local, gpu_dir = tmp_path / "local", tmp_path / "shared" / "NVIDIA-L4-trt10.5.0"
    local.mkdir()
    (local / "bge_a_111_sm89.engine").write_bytes(b"E" * 4096)
    (local / "bge_a_c1_222_sm89.engine").write_bytes(b"F" * 2048)
    (local / "bge_a_111_sm89.profile").write_bytes(b"P")
    (local / "bge_old_333_sm89.engine").write_bytes(b"another model")
    (local / "TensorrtExecutionProvider_cache_sm89.timing").write_bytes(b"T")
    engine_cache.mark_local_complete(local)
    assert engine_cache.publish(local, gpu_dir, "bge_a") == ("published", 4096 + 2048 + 1)
    entry = gpu_dir / "bge_a"
    # Only this model's files, plus the marker listing them with their sizes; no temporary folder.
    assert sorted(p.name for p in entry.iterdir()) == [
        serve.MARKER,
        "bge_a_111_sm89.engine",
        "bge_a_111_sm89.profile",
        "bge_a_c1_222_sm89.engine",
    ]
    assert engine_cache.read_entry(entry) == {
        "bge_a_111_sm89.engine": 4096,
        "bge_a_111_sm89.profile": 1,
        "bge_a_c1_222_sm89.engine": 2048,
    }
    assert [p.name for p in gpu_dir.iterdir()] == ["bge_a"]
    (local / "bge_a_111_sm89.engine").write_bytes(b"built by a second pod")
    assert engine_cache.publish(local, gpu_dir, "bge_a") == ("exists", 0)
    assert (entry / "bge_a_111_sm89.engine").read_bytes() == b"E" * 4096


@pytest.mark.parametrize("damage", ["writer killed before the marker", "no marker", "truncated file", "file gone"])
def test_a_partial_entry_is_never_seeded(tmp_path, damage):
    """What a writer killed midway (or a flaky share) leaves is not an entry: the reader takes
    only a folder whose marker lists every file at its size."""
    gpu_dir = tmp_path / "shared" / "Tesla-T4-trt10.5.0"
    entry = _entry(gpu_dir, "bge_a", {"bge_a_1_sm75.engine": b"E" * 1000, "bge_a_1_sm75.profile": b"P"})
    if damage == "writer killed before the marker":
        # publish's temporary folder, files copied, killed before the marker and the rename.
        (entry / serve.MARKER).unlink()
        entry.rename(gpu_dir / f"{engine_cache.TEMP_PREFIX}bge_a-4242-0a0b0c0d")
    elif damage == "no marker":
        (entry / serve.MARKER).unlink()
    elif damage == "truncated file":
        (entry / "bge_a_1_sm75.engine").write_bytes(b"E" * 999)
    else:
        (entry / "bge_a_1_sm75.profile").unlink()
    local = tmp_path / "local"
    local.mkdir()
    result = engine_cache.seed(local, gpu_dir, "bge_a", None)
    assert result.copied == [] and "no finished entry" in result.reason
    assert list(local.iterdir()) == []


def test_seeding_copies_only_the_current_model_and_refuses_past_the_bound(tmp_path):
    """Issue 27 finding 7: every engine under <gpu>/ was copied, old models' included, into a
    5 Gi emptyDir. Now only the current model's entry, and only if it fits."""
    gpu_dir = tmp_path / "shared" / "NVIDIA-L4-trt10.5.0"
    _entry(gpu_dir, "bge_old", {"bge_old_1_sm89.engine": b"O" * 3000})
    _entry(gpu_dir, "bge_cur", {"bge_cur_1_sm89.engine": b"C" * 1000, "bge_cur_c1_2_sm89.engine": b"D" * 500})
    (gpu_dir / "bge_legacy_9_sm89.engine").write_bytes(b"flat file of the layout before entries")
    local = tmp_path / "local"
    local.mkdir()
    bound = int(1500 / engine_cache.SEED_MAX_FRACTION)  # exactly what the entry needs
    result = engine_cache.seed(local, gpu_dir, "bge_cur", bound)
    assert result.copied == ["bge_cur_1_sm89.engine", "bge_cur_c1_2_sm89.engine"] and result.bytes == 1500
    assert sorted(p.name for p in local.iterdir()) == ["bge_cur_1_sm89.engine", "bge_cur_c1_2_sm89.engine"]
    assert (local / "bge_cur_1_sm89.engine").read_bytes() == b"C" * 1000
    # One byte less room: refused, with the reason and the value to change.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    refused = engine_cache.seed(fresh, gpu_dir, "bge_cur", bound - 2)
    assert refused.copied == [] and "trtCache.size" in refused.reason and list(fresh.iterdir()) == []
    # Unknown model hash: nothing is guessed.
    assert engine_cache.seed(fresh, gpu_dir, None, None).copied == []


def test_prune_keeps_the_current_entry_and_writers_in_progress(tmp_path):
    gpu_dir = tmp_path / "NVIDIA-L4-trt10.5.0"
    _entry(gpu_dir, "bge_old", {"bge_old_1_sm89.engine": b"O"})
    _entry(gpu_dir, "bge_cur", {"bge_cur_1_sm89.engine": b"C"})
    (gpu_dir / "bge_legacy_9_sm89.engine").write_bytes(b"flat")
    stale, fresh = gpu_dir / ".tmp-bge_x-1-aa", gpu_dir / ".tmp-bge_cur-2-bb"
    stale.mkdir()
    fresh.mkdir()
    now = time.time()
    os.utime(stale, (now - engine_cache.STALE_TEMP_S - 1,) * 2)
    assert engine_cache.prune(gpu_dir, keep="bge_cur", now=now, previous=0) == [
        stale.name,
        "bge_legacy_9_sm89.engine",
        "bge_old",
    ]
    assert sorted(p.name for p in gpu_dir.iterdir()) == [fresh.name, "bge_cur"]


def test_prune_keeps_the_previous_release_for_a_rollback(tmp_path):
    """`helm rollback` runs the previous release's prebuild Job, then rolls its pods back: the
    newest other finished entry stays (PRUNE_KEEP_PREVIOUS), older ones and unfinished ones go."""
    gpu_dir = tmp_path / "NVIDIA-L4-trt10.5.0"
    now = time.time()
    for age, name in [(300, "bge_older"), (200, "bge_prev"), (100, "bge_cur")]:
        entry = _entry(gpu_dir, name, {f"{name}_1_sm89.engine": b"E"})
        os.utime(entry / engine_cache.MARKER, (now - age,) * 2)
    (gpu_dir / "bge_unfinished").mkdir()  # no marker: never kept as "previous"
    assert engine_cache.PRUNE_KEEP_PREVIOUS == 1
    assert engine_cache.prune(gpu_dir, keep="bge_cur", now=now) == ["bge_older", "bge_unfinished"]
    assert sorted(p.name for p in gpu_dir.iterdir()) == ["bge_cur", "bge_prev"]


def test_prune_skips_what_vanishes_under_it(tmp_path, monkeypatch):
    """A temporary folder renamed by its writer (or removed by another prune) between listing and
    removal, and a dangling link, do not make the prune (and so the prebuild Job) fail."""
    gpu_dir = tmp_path / "NVIDIA-L4-trt10.5.0"
    _entry(gpu_dir, "bge_cur", {"bge_cur_1_sm89.engine": b"C"})
    (gpu_dir / ".tmp-bge_gone-1-aa").symlink_to(tmp_path / "nowhere")  # dangling
    vanishing = gpu_dir / ".tmp-bge_x-2-bb"
    vanishing.mkdir()
    listing = Path.iterdir

    def iterdir_then_vanish(self):
        items = list(listing(self))
        if self == gpu_dir and vanishing.exists():
            vanishing.rmdir()  # the writer renamed it into place just after the listing
        return iter(items)

    monkeypatch.setattr(Path, "iterdir", iterdir_then_vanish)
    removed = engine_cache.prune(gpu_dir, keep="bge_cur", now=time.time() + 2 * engine_cache.STALE_TEMP_S)
    assert removed == [".tmp-bge_gone-1-aa"]
    assert sorted(p.name for p in listing(gpu_dir)) == ["bge_cur"]


def test_a_prebuild_for_another_model_hash_than_the_served_one_fails(tmp_path):
    """trtCache.modelHash (--model-hash) names the entry pods seed; a Job whose served model has
    another hash must fail, naming the value to set, not succeed while no pod can seed."""
    import http.server
    import threading

    served = "bge_fedcba9876543210"
    config = {
        "optimization": {
            "execution_accelerators": {
                "gpu_execution_accelerator": [{"name": "tensorrt", "parameters": {"trt_engine_cache_prefix": served}}]
            }
        }
    }

    class Triton(http.server.BaseHTTPRequestHandler):  # Triton's HTTP API, the two routes read
        def _send(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send([{"name": "cross_encoder", "version": "1", "state": "READY"}])

        def do_GET(self):
            self._send(config)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Triton)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        local, gpu_dir = tmp_path / "local", tmp_path / "shared" / "NVIDIA-L4-trt10.5.0"
        local.mkdir()
        (local / f"{served}_1_sm89.engine").write_bytes(b"E")
        args = serve.build_parser().parse_args(
            ["--local", str(local), "--prebuild-only", "--prune", "--model-hash", "bge_0123456789abcdef"]
        )
        args.ready_url = f"http://127.0.0.1:{httpd.server_address[1]}/v2/health/ready"
        launcher = serve.Launcher(args, ["tritonserver"], None)
        assert launcher.publish(gpu_dir, "bge_0123456789abcdef") is False
        args.model_hash = served
        assert launcher.publish(gpu_dir, served) is True
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    "text, expected",
    [("5Gi", 5 * 2**30), ("500Mi", 500 * 2**20), ("1G", 10**9), ("1073741824", 2**30), ("1.5Gi", 3 * 2**29)],
)
def test_local_size_reads_the_chart_quantity(text, expected):
    assert engine_cache.parse_quantity(text) == expected


def test_local_size_rejects_what_is_not_a_quantity():
    with pytest.raises(ValueError, match="not a byte quantity"):
        engine_cache.parse_quantity("5 gigs")


def test_model_hash_from_the_manifest_and_the_served_configs(tmp_path):
    (tmp_path / "manifest.json").write_text('{"engine_cache_prefix": "bge_0123456789abcdef"}')
    assert engine_cache.model_hash_from_repository(tmp_path) == "bge_0123456789abcdef"
    assert engine_cache.model_hash_from_repository(tmp_path / "absent") is None

    def config(prefix):
        params = {"trt_engine_cache_prefix": prefix}
        return {
            "optimization": {
                "execution_accelerators": {"gpu_execution_accelerator": [{"name": "tensorrt", "parameters": params}]}
            }
        }

    configs = {"cross_encoder_2048": config("bge_0123456789abcdef_c1"), "cross_encoder": config("bge_0123456789abcdef")}
    assert engine_cache.model_hash_from_configs(configs) == "bge_0123456789abcdef"
    assert engine_cache.model_hash_from_configs({"tokenizer": {"backend": "python"}}) is None
    (tmp_path / "manifest.json").write_text('{"engine_cache_prefix": "../escape"}')
    with pytest.raises(ValueError, match="model hash"):
        engine_cache.model_hash_from_repository(tmp_path)


def test_stale_shared_memory_is_removed_before_the_server_starts(tmp_path):
    """A restarted container's /dev/shm (the pod's emptyDir) still holds the regions of the
    killed server before it; they go, and nothing else in that folder does."""
    (tmp_path / f"{serve.SHM_REGION_PREFIX}_0aed9cfa").write_bytes(b"x" * 1024)
    (tmp_path / f"{serve.SHM_REGION_PREFIX}_17702c80").write_bytes(b"x")
    (tmp_path / "someone_else").write_bytes(b"kept")
    assert serve.clear_stale_shm(tmp_path) == [
        f"{serve.SHM_REGION_PREFIX}_0aed9cfa",
        f"{serve.SHM_REGION_PREFIX}_17702c80",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["someone_else"]


@pytest.mark.parametrize(
    "gpu_name, trt, key",
    [
        # What `nvidia-smi --query-gpu=name --format=csv,noheader` prints on real nodes.
        ("NVIDIA H100 80GB HBM3", "10.5.0", "NVIDIA-H100-80GB-HBM3-trt10.5.0"),
        ("NVIDIA A100-SXM4-40GB", "10.5.0", "NVIDIA-A100-SXM4-40GB-trt10.5.0"),
        ("Tesla T4", "10.5.0", "Tesla-T4-trt10.5.0"),
        # Names a folder cannot hold as they are: slashes, parentheses, a leading separator.
        ("/NVIDIA A100/MIG 1g.5gb (x)", "10.5/rc 1", "NVIDIA-A100-MIG-1g.5gb-x-trt10.5-rc-1"),
    ],
)
def test_gpu_key_is_a_safe_folder_name(tmp_path, monkeypatch, gpu_name, trt, key):
    """The key comes from nvidia-smi, which only a GPU node has: a stand-in nvidia-smi on PATH
    prints the GPU names real nodes report (and hostile ones), so the sanitising is exercised
    here rather than only the no-GPU fallback."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' '{gpu_name}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("TRT_VERSION", trt)
    assert serve.gpu_key() == key
    assert (tmp_path / key).resolve().parent == tmp_path.resolve()  # one folder, inside the cache


def test_gpu_key_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.delenv("TRT_VERSION", raising=False)
    assert serve.gpu_key() == "unknown-gpu-trtunknown"


def test_wrapper_around_the_real_server(python_repo, tmp_path):
    local, shared = tmp_path / "trt-cache", tmp_path / "shared"
    local.mkdir()
    (local / "killed.engine").write_bytes(b"partial")
    key_dir = shared / serve.gpu_key()
    _entry(key_dir, "bge_prebuilt", {"bge_prebuilt_1_sm89.engine": b"engine from an earlier pod"})
    _entry(key_dir, "bge_older", {"bge_older_1_sm89.engine": b"an older model's engine"})
    server = TritonServer(python_repo, free_port(), free_port(), free_port())
    proc = start_launcher(
        server,
        "--local",
        str(local),
        "--shared",
        str(shared),
        "--model-hash",
        "bge_prebuilt",
        "--local-size",
        "5Gi",
        "--ready-url",
        f"http://127.0.0.1:{server.http_port}/v2/health/ready",
        "--shm-dir",
        str(tmp_path / "shm"),
    )
    try:
        wait_while_running(proc, (local / serve.MARKER).exists)
        assert not (local / "killed.engine").exists()
        assert (local / "bge_prebuilt_1_sm89.engine").read_bytes() == b"engine from an earlier pod"
        assert not (local / "bge_older_1_sm89.engine").exists()  # only the current model's entry
        assert sorted(p.name for p in key_dir.iterdir()) == ["bge_older", "bge_prebuilt"]  # pods never prune
        assert server.is_ready()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # Triton drained and exited cleanly; its code is ours
        assert not server.is_ready()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wrapper_replaces_tritonserver_when_a_stub_dies_then_exits_for_the_kubelet(python_repo, tmp_path):
    """Issue 26 finding 4, the image's side: a dead Python stub makes serve.py stop tritonserver
    (without waiting out Triton's exit timeout, which a dead stub always runs into) and start a
    fresh one in place (the container, and compose's proxy sharing its network namespace, stay);
    past --stub-restarts it exits EXIT_STUB_DIED so the kubelet restarts the container."""
    import tritonclient.grpc as grpcclient

    from common.raw_rerank import rerank_inputs

    server = TritonServer(python_repo, free_port(), free_port(), free_port(), ["--exit-timeout-secs=60"])
    proc = start_launcher(
        server,
        "--local",
        str(tmp_path / "trt-cache"),
        "--ready-url",
        f"http://127.0.0.1:{server.http_port}/v2/health/ready",
        "--shm-dir",
        str(tmp_path / "shm"),
        "--stub-restarts",
        "1",
    )
    import stub_watch  # docker/, on the path since serve.py was loaded

    def kill_a_cross_encoder_stub() -> tuple[int, str]:
        # the server is ready and its watch has taken its snapshot
        wait_while_running(proc, lambda: len(stub_watch.children(proc.pid)) == 1 and server.is_ready())
        time.sleep(2 * serve.STUB_POLL_S)
        [triton] = stub_watch.children(proc.pid)
        victim = next(s for s in stub_watch.stubs(triton) if s.instance.startswith("cross_encoder"))
        os.kill(victim.pid, signal.SIGKILL)
        return triton, victim.instance

    try:
        first, instance = kill_a_cross_encoder_stub()
        killed_at = time.monotonic()
        # Replaced in place: a new tritonserver answers every request again.
        wait_while_running(proc, lambda: server.is_ready() and stub_watch.children(proc.pid) not in ([], [first]))
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for _ in range(10):
            assert client.infer("rerank", rerank_inputs(["q"] * 2, ["a", "b"])).as_numpy("score").shape == (2, 1)
        client.close()
        print(f"\nstub killed -> a fresh tritonserver answering in place after {time.monotonic() - killed_at:.1f} s")
        # A second death within the window: exit for the kubelet, fast.
        kill_a_cross_encoder_stub()
        killed_at = time.monotonic()
        assert proc.wait(timeout=60) == serve.EXIT_STUB_DIED
        took = time.monotonic() - killed_at
        output = proc.stdout.read()
        assert instance in output and "died" in output and "starting a fresh tritonserver in place" in output
        assert "exiting 75 so the kubelet restarts the container" in output, output[-3000:]
        # Triton's exit timeout (60 s here) was not waited out.
        assert took < serve.STUB_POLL_S + serve.STUB_DEATH_DRAIN_S + 10, took
        assert not server.is_ready()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.release_shm()


# --- stop signals while serve.py itself is busy (issue 27: it ignored SIGTERM until after
# nvidia-smi and seeding, and exited 241 when tritonserver died by a signal) ---


def _launch(tmp_path: Path, env: dict[str, str], *args: str, command: list[str] | None = None) -> subprocess.Popen[str]:
    """docker/serve.py as the image runs it, around `command` (a stand-in that must never start
    unless said)."""
    command = command or [sys.executable, "-c", "raise SystemExit('tritonserver must not start')"]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "serve.py"), "--shm-dir", str(tmp_path / "shm"), *args, "--", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], condition, timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.01)


def test_sigterm_during_a_hung_nvidia_smi_stops_at_once(tmp_path):
    """nvidia-smi may hang on a sick node for up to NVIDIA_SMI_TIMEOUT_S; a stop signal in that
    time ends serve.py (and nvidia-smi) at once, with 128 + SIGTERM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "nvidia-smi.pid"
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 600\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = _launch(tmp_path, env, "--local", str(tmp_path / "local"), "--shared", str(tmp_path / "shared"))
    try:
        _wait_for(proc, lambda: started.exists() and started.read_text().strip())
        smi = int(started.read_text())
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=serve.NVIDIA_SMI_TIMEOUT_S)
        took = time.monotonic() - signalled
        output = proc.stdout.read()
        assert code == 128 + signal.SIGTERM, output
        assert "SIGTERM during nvidia-smi: stopped" in output, output
        # Not the nvidia-smi timeout waited out; and nvidia-smi itself is gone.
        assert took < serve.NVIDIA_SMI_TIMEOUT_S / 2, took
        assert not Path(f"/proc/{smi}").exists() or "Z" in Path(f"/proc/{smi}/stat").read_text().split(")")[1][:3]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_a_slow_seeding_copy_leaves_no_partial_file(tmp_path):
    """The real launcher copying a large engine (sparse here: no disk spent on the source) from
    the shared cache is stopped mid-copy: it exits 128 + SIGTERM at once, and neither the
    engine nor its temporary file is left in the per-pod cache."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no nvidia-smi: a fixed GPU key
    env.pop("TRT_VERSION", None)
    entry = tmp_path / "shared" / "unknown-gpu-trtunknown" / "bge_cur"
    entry.mkdir(parents=True)
    size = 3 * 2**30
    with open(entry / "bge_cur_1_sm89.engine", "wb") as f:
        f.truncate(size)  # sparse: copying it writes GiBs, seconds of work
    (entry / serve.MARKER).write_text(json.dumps({"bge_cur_1_sm89.engine": size}))  # as publish writes it
    assert engine_cache.read_entry(entry) == {"bge_cur_1_sm89.engine": size}
    local = tmp_path / "local"
    proc = _launch(
        tmp_path,
        env,
        "--local",
        str(local),
        "--shared",
        str(tmp_path / "shared"),
        "--model-hash",
        "bge_cur",
        "--local-size",
        "64Gi",
    )
    try:
        _wait_for(proc, lambda: local.is_dir() and any(p.name.endswith(".tmp") for p in local.iterdir()))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        output = proc.stdout.read()
        assert code == 128 + signal.SIGTERM, output
        assert "SIGTERM during seeding the engine cache: stopped, temporary files removed" in output, output
        assert "tritonserver must not start" not in output
        assert list(local.iterdir()) == []  # no engine, no temporary file
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


FAKE_BUILD = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # busy loading: no drain before the build ends
engine = Path(sys.argv[1]) / "bge_cur_1_sm89.engine"
engine.write_bytes(b"half an engine")
time.sleep(600)
"""


def test_sigterm_during_the_engine_build_stops_and_the_next_start_drops_the_partial_engine(tmp_path):
    """A stand-in tritonserver that writes half an engine and, like a server still loading,
    does not exit on SIGTERM: serve.py forwards the signal, kills it after BUILD_STOP_GRACE_S,
    writes no marker and publishes nothing; the next start removes the half engine, even though
    an earlier good run had left a marker."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    local, shared = tmp_path / "local", tmp_path / "shared"
    local.mkdir()
    (local / "bge_old_1_sm89.engine").write_bytes(b"engine of the last good run")
    engine_cache.mark_local_complete(local)
    fake = tmp_path / "fake_triton.py"
    fake.write_text(FAKE_BUILD)
    proc = _launch(
        tmp_path,
        env,
        "--local",
        str(local),
        "--shared",
        str(shared),
        "--model-hash",
        "bge_cur",
        "--ready-url",
        f"http://127.0.0.1:{free_port()}/v2/health/ready",
        command=[sys.executable, str(fake), str(local)],
    )
    try:
        _wait_for(proc, (local / "bge_cur_1_sm89.engine").exists)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=serve.BUILD_STOP_GRACE_S + 30)
        output = proc.stdout.read()
        assert code == 128 + signal.SIGKILL, output  # the stand-in ignored SIGTERM: killed
        assert "stop signal while tritonserver was loading" in output and "killed" in output, output
        assert not (shared / "unknown-gpu-trtunknown" / "bge_cur").exists()  # nothing published
        assert engine_cache.prepare_local(local) == ["bge_cur_1_sm89.engine"]
        assert (local / "bge_old_1_sm89.engine").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_exit_status_of_a_signalled_server():
    assert serve.exit_status(-signal.SIGTERM) == 143 and serve.exit_status(0) == 0 and serve.exit_status(75) == 75


def test_prebuild_only_around_the_real_server_publishes_prunes_and_exits(python_repo, tmp_path):
    """The prebuild Job's command (issue 27 item 6) around the real local tritonserver: seed,
    load, certify (off here), hold the current model's entry, prune the other models' entries,
    the flat files of the old layout and dead writers' folders (not a writer in progress), stop
    tritonserver and exit 0. Then the same with no entry for the model: on CPU Triton builds no
    engine, so nothing is in the cache and the Job fails with 1, saying so."""
    shared = tmp_path / "shared"
    key_dir = shared / serve.gpu_key()
    _entry(key_dir, "bge_cur", {"bge_cur_1_sm89.engine": b"C" * 100})
    _entry(key_dir, "bge_old", {"bge_old_1_sm89.engine": b"O" * 100})
    (key_dir / "bge_flat_1_sm89.engine").write_bytes(b"layout before entries")
    dead, writing = key_dir / ".tmp-bge_x-1-aa", key_dir / ".tmp-bge_cur-2-bb"
    dead.mkdir()
    writing.mkdir()
    os.utime(dead, (time.time() - engine_cache.STALE_TEMP_S - 60,) * 2)

    def prebuild(model_hash: str) -> tuple[int, str, TritonServer]:
        server = TritonServer(python_repo, free_port(), free_port(), free_port())
        proc = start_launcher(
            server,
            "--local",
            str(tmp_path / f"local-{model_hash}"),
            "--shared",
            str(shared),
            "--model-hash",
            model_hash,
            "--local-size",
            "5Gi",
            "--prebuild-only",
            "--prune",
            "--ready-url",
            f"http://127.0.0.1:{server.http_port}/v2/health/ready",
            "--shm-dir",
            str(tmp_path / "shm"),
        )
        try:
            code = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            server.release_shm()
        assert proc.stdout is not None
        return code, proc.stdout.read(), server

    code, output, server = prebuild("bge_cur")
    assert code == 0, output[-3000:]
    # bge_old stays: the newest other entry, for a rollback (engine_cache.PRUNE_KEEP_PREVIOUS).
    assert "prebuild done" in output and "pruned 2 other item(s)" in output, output[-3000:]
    assert sorted(p.name for p in key_dir.iterdir()) == [writing.name, "bge_cur", "bge_old"]
    assert (tmp_path / "local-bge_cur" / "bge_cur_1_sm89.engine").read_bytes() == b"C" * 100
    assert not server.is_ready()  # tritonserver was stopped, not left running

    code, output, _ = prebuild("bge_new")
    assert code == serve.EXIT_PREBUILD_FAILED, output[-3000:]
    assert "no bge_new_* engine" in output and "prebuild FAILED" in output, output[-3000:]
    assert sorted(p.name for p in key_dir.iterdir()) == [writing.name, "bge_cur", "bge_old"]  # no prune after a failure


def test_a_shared_volume_failing_mid_seed_does_not_stop_the_start(tmp_path):
    """An entry that passes its marker check but whose file then reads differently (a file of
    /proc reports size 0 and has content: what a file changing under a reader on a flaky share
    looks like) fails the copy; serve.py says so and starts tritonserver, which builds what is
    missing, instead of crashing the container on every start."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    entry = tmp_path / "shared" / "unknown-gpu-trtunknown" / "bge_cur"
    entry.mkdir(parents=True)
    (entry / "bge_cur_1_sm89.engine").symlink_to("/proc/self/status")
    (entry / serve.MARKER).write_text(json.dumps({"bge_cur_1_sm89.engine": 0}))
    assert engine_cache.read_entry(entry) is not None
    local = tmp_path / "local"
    proc = _launch(
        tmp_path,
        env,
        "--local",
        str(local),
        "--shared",
        str(tmp_path / "shared"),
        "--model-hash",
        "bge_cur",
        "--ready-url",
        f"http://127.0.0.1:{free_port()}/v2/health/ready",
        command=[sys.executable, "-c", "print('tritonserver started')"],
    )
    try:
        assert proc.wait(timeout=60) == 0
        assert proc.stdout is not None
        output = proc.stdout.read()
        assert "seeding failed" in output and "tritonserver started" in output, output
        assert "Traceback" not in output
        assert list(local.iterdir()) == []  # nothing half-copied
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
