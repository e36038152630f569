"""Issue 25 item 5, ONNX Runtime EP path: each TensorRT engine is built once per class model per
device, before serving (docker/build_once.py). The configs are the exporter's; the build pass runs
a stand-in `tritonserver` (a real process that answers readiness and records its flags), so the
launch, the wait and the stop are exercised; only what TensorRT would build is a written file."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from export.settings import ServingLimits
from export.tensorrt_profiles import length_classes
from export.triton_config import BUILD_ONCE_CONFIG, RepositorySpec, build_once_config, cross_encoder_config, to_pbtxt
from local_triton.server import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import build_once  # noqa: E402


def _repository(tmp_path: Path, backend: str = "onnxruntime") -> Path:
    """Class model configs as write_repository writes them (config.pbtxt + configs/build_once.pbtxt)."""
    spec = RepositorySpec(backend=backend, limits=ServingLimits(max_length=8192), engine_cache_prefix="bge_0123abcd")
    repo = tmp_path / "models"
    for length_class in length_classes(spec.limits):
        folder = repo / length_class.model
        (folder / "configs").mkdir(parents=True)
        config = cross_encoder_config(spec, length_class)
        (folder / "config.pbtxt").write_text(to_pbtxt(config))
        if backend == "onnxruntime":
            (folder / "configs" / f"{BUILD_ONCE_CONFIG}.pbtxt").write_text(to_pbtxt(build_once_config(config)))
    return repo


def test_build_once_config_is_the_served_config_with_one_instance():
    spec = RepositorySpec(backend="onnxruntime")
    config = cross_encoder_config(spec, length_classes(spec.limits)[0])
    single = build_once_config(config)
    assert [g.count for g in config.instance_group] == [2] and [g.count for g in single.instance_group] == [1]
    single.instance_group[0].count = 2
    assert single == config


def test_missing_engines_are_named_per_class_model(tmp_path):
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    cache.mkdir()
    assert build_once.class_models(repo) == {
        "cross_encoder": "bge_0123abcd",
        "cross_encoder_2048": "bge_0123abcd_c1",
        "cross_encoder_8192": "bge_0123abcd_c2",
    }
    assert build_once.missing_engines(repo, cache) == ["cross_encoder", "cross_encoder_2048", "cross_encoder_8192"]
    # Class 1's engine is not credited to class 0, whose prefix it extends.
    (cache / "bge_0123abcd_c1_1234_sm89.engine").write_bytes(b"e")
    assert build_once.missing_engines(repo, cache) == ["cross_encoder", "cross_encoder_8192"]
    (cache / "bge_0123abcd_5678_sm89.engine").write_bytes(b"e")
    assert build_once.missing_engines(repo, cache) == ["cross_encoder_8192"]


def test_plan_repositories_have_no_build_pass(tmp_path):
    repo = _repository(tmp_path, backend="tensorrt")
    command = ["tritonserver", f"--model-repository={repo}"]
    assert build_once.ensure_engines(tmp_path / "cache", None, command, "http://127.0.0.1:1/") == []


FAKE_SERVER = textwrap.dedent(
    """
    import http.server, json, os, signal, sys, threading
    port, record, engines, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    json.dump(sys.argv[5:], open(record, "w"))
    loads = [a.split("=", 1)[1] for a in sys.argv[5:] if a.startswith("--load-model=")]
    for model in loads:  # what TensorRT would write: one engine per loaded class model
        prefix = json.loads(engines)[model]
        open(os.path.join(cache, prefix + "_42_sm89.engine"), "wb").write(b"engine")
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *a): pass
    server = http.server.HTTPServer(("127.0.0.1", port), H)
    signal.signal(signal.SIGINT, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    """
)


def test_build_pass_loads_only_missing_class_models_one_instance_one_load_at_a_time(tmp_path):
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    cache.mkdir()
    (cache / "bge_0123abcd_7_sm89.engine").write_bytes(b"e")  # class 0 already built
    port, record = free_port(), tmp_path / "argv.json"
    script = tmp_path / "fake_tritonserver.py"
    script.write_text(FAKE_SERVER)
    engines = json.dumps(build_once.class_models(repo))
    command = [sys.executable, str(script), str(port), str(record), engines, str(cache)]
    command += [f"--model-repository={repo}", "--http-port=8000", "--model-control-mode=none"]
    left = build_once.ensure_engines(cache, None, command, f"http://127.0.0.1:{port}/v2/health/ready", timeout_s=60)
    assert left == []
    flags = json.loads(record.read_text())
    assert "--model-config-name=build_once" in flags and "--model-load-thread-count=1" in flags
    assert "--model-control-mode=explicit" in flags and "--model-control-mode=none" not in flags
    assert [a for a in flags if a.startswith("--load-model=")] == [
        "--load-model=cross_encoder_2048",
        "--load-model=cross_encoder_8192",
    ]
    # Nothing left missing: a second start runs no build pass (the record is not rewritten).
    record.unlink()
    assert build_once.ensure_engines(cache, None, command, f"http://127.0.0.1:{port}/", timeout_s=5) == []
    assert not record.exists()


def test_engines_another_pod_published_are_seeded_under_the_lock_instead_of_built(tmp_path):
    """Another pod published this model's entry (engine_cache.publish) while this one waited for
    the lock: the re-seed serve.py passes copies it, and no build pass runs."""
    import engine_cache

    repo, cache = _repository(tmp_path), tmp_path / "cache"
    gpu_dir, other_pod = tmp_path / "shared" / "NVIDIA-L4-trt10.5.0", tmp_path / "other-pod"
    cache.mkdir()
    other_pod.mkdir()
    for prefix in build_once.class_models(repo).values():
        (other_pod / f"{prefix}_9_sm89.engine").write_bytes(b"published")
    assert engine_cache.publish(other_pod, gpu_dir, "bge_0123abcd")[0] == "published"
    command = ["/bin/false", f"--model-repository={repo}"]  # a build pass would fail: none must run
    seeded = []

    def reseed():
        seeded.append(engine_cache.seed(cache, gpu_dir, "bge_0123abcd", None))

    assert build_once.ensure_engines(cache, gpu_dir, command, "http://127.0.0.1:1/", timeout_s=5, reseed=reseed) == []
    assert len(seeded) == 1 and sorted(seeded[0].copied) == sorted(p.name for p in other_pod.iterdir())
    assert build_once.missing_engines(repo, cache) == []
    assert (gpu_dir / engine_cache.BUILD_LOCK_NAME).exists()
    # The prebuild Job's prune keeps the lock a waiting pod may hold.
    assert engine_cache.BUILD_LOCK_NAME not in engine_cache.prune(gpu_dir, keep="another_model")


def test_a_build_pass_that_never_gets_ready_leaves_the_serving_start_to_build(tmp_path, capsys):
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    cache.mkdir()
    command = ["/bin/true", f"--model-repository={repo}"]  # exits at once, never ready
    left = build_once.ensure_engines(cache, None, command, "http://127.0.0.1:1/", timeout_s=5)
    assert left == ["cross_encoder", "cross_encoder_2048", "cross_encoder_8192"]
    assert "the serving start builds instead" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["docker/Dockerfile", ".dockerignore"])
def test_the_image_ships_the_build_pass_beside_serve_py(path):
    text = (ROOT / path).read_text()
    assert "docker/build_once.py" in text


def test_a_shared_cache_the_pod_cannot_write_builds_without_the_lock(tmp_path, capsys):
    """A read-only or foreign-owned shared volume makes the lock's open fail (emulated here by a
    shared path under a plain file: tests run as root, whom permissions do not stop): the pod
    builds without the lock and says why, instead of crash-looping."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_for_lock", ROOT / "docker" / "serve.py")
    assert spec is not None and spec.loader is not None
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    repo, cache = _repository(tmp_path), tmp_path / "cache"
    cache.mkdir()
    not_a_folder = tmp_path / "shared"
    not_a_folder.write_text("a file where the shared cache should be")
    args = serve.build_parser().parse_args(["--local", str(cache)])
    launcher = serve.Launcher(args, ["tritonserver", f"--model-repository={repo}"], None)
    assert launcher._take_build_lock(not_a_folder / "NVIDIA-L4-trt10.5.0", "bge_0123abcd") is None
    assert "cannot take the build lock" in capsys.readouterr().out


def test_an_object_store_repository_is_named_as_the_known_gap(tmp_path, capsys):
    """s3:// is not a folder here (Path would fold it into 's3:/...'): no build pass, and the log
    says so rather than skipping silently."""
    command = ["tritonserver", "--model-repository=s3://bucket/models"]
    assert build_once.repository_of(command) is None
    assert build_once.ensure_engines(tmp_path, None, command, "http://127.0.0.1:1/") == []
    assert "s3://bucket/models is an object-store repository: no build pass" in capsys.readouterr().out
