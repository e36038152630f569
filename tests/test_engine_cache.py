"""docker/serve.py, the image's command (issue 17): a per-pod engine cache that a killed build
cannot poison, seeded from and published to a shared cache by atomic renames. Real files, and
once around the real local tritonserver (SIGTERM passed through)."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest

from local_triton.server import TritonServer, free_port
from tests.server_helpers import start_launcher, wait_while_running

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("serve_wrapper", ROOT / "docker" / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)


def test_killed_build_is_discarded_and_a_finished_one_kept(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "bge_1_sm86.engine").write_bytes(b"half an eng")  # writer killed: no marker
    serve.prepare_local(local, None)
    assert list(local.iterdir()) == []
    (local / "bge_1_sm86.engine").write_bytes(b"whole engine")
    (local / serve.MARKER).write_text("done")  # server reached ready after writing it
    serve.prepare_local(local, None)
    assert (local / "bge_1_sm86.engine").read_bytes() == b"whole engine"


def test_publish_never_overwrites_and_leaves_no_partial_file(tmp_path):
    local, shared = tmp_path / "local", tmp_path / "shared" / "NVIDIA-L4-trt10.5"
    local.mkdir()
    (local / "bge_a.engine").write_bytes(b"A" * 4096)
    (local / "bge_a.profile").write_bytes(b"P")
    (local / serve.MARKER).write_text("done")
    shared.mkdir(parents=True)
    (shared / "bge_a.profile").write_bytes(b"published by another pod")
    assert serve.publish(local, shared) == ["bge_a.engine"]
    assert (shared / "bge_a.profile").read_bytes() == b"published by another pod"
    assert sorted(p.name for p in shared.iterdir()) == ["bge_a.engine", "bge_a.profile"]  # no temp, no marker
    fresh = tmp_path / "fresh"
    assert serve.prepare_local(fresh, shared) == ["bge_a.engine", "bge_a.profile"]
    assert (fresh / "bge_a.engine").read_bytes() == b"A" * 4096


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
    key_dir.mkdir(parents=True)
    (key_dir / "bge_prebuilt.engine").write_bytes(b"engine from an earlier pod")
    server = TritonServer(python_repo, free_port(), free_port(), free_port())
    proc = start_launcher(
        server,
        "--local",
        str(local),
        "--shared",
        str(shared),
        "--ready-url",
        f"http://127.0.0.1:{server.http_port}/v2/health/ready",
        "--shm-dir",
        str(tmp_path / "shm"),
    )
    try:
        wait_while_running(proc, (local / serve.MARKER).exists)
        assert not (local / "killed.engine").exists()
        assert (local / "bge_prebuilt.engine").read_bytes() == b"engine from an earlier pod"
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
