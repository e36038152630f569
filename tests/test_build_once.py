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


FAKE_REMOTE_SERVER = textwrap.dedent(
    """
    import http.server, json, os, signal, sys, threading
    port, record, engines, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    json.dump(sys.argv[5:], open(record, "w"))
    engines = json.loads(engines)  # model -> prefix: the repository only this server reads
    one = "--model-config-name=build_once" in sys.argv
    for prefix in engines.values():  # what TensorRT would write for each class model it loads
        open(os.path.join(cache, prefix + "_42_sm89.engine"), "wb").write(b"engine")
    def config(model):
        if model not in engines:
            return {"name": model, "backend": "python", "instance_group": [{"count": 2}]}
        params = {"trt_engine_cache_prefix": engines[model], "trt_engine_cache_path": "/trt-cache"}
        accel = {"gpu_execution_accelerator": [{"name": "tensorrt", "parameters": params}]}
        return {"name": model, "backend": "onnxruntime", "instance_group": [{"count": 1 if one else 2}],
                "optimization": {"execution_accelerators": accel}}
    class H(http.server.BaseHTTPRequestHandler):
        def reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
            self.wfile.write(data)
        def do_GET(self):
            model = self.path.split("/")[3] if self.path.startswith("/v2/models/") else None
            self.reply(config(model) if model else {})
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.reply([{"name": m, "state": "READY"} for m in engines] + [{"name": "tokenizer", "state": "READY"}])
        def log_message(self, *a): pass
    server = http.server.HTTPServer(("127.0.0.1", port), H)
    signal.signal(signal.SIGINT, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    """
)


def _remote_command(tmp_path: Path, engines: dict[str, str], cache: Path) -> tuple[list[str], Path, int]:
    port, record = free_port(), tmp_path / "argv.json"
    script = tmp_path / "fake_remote_tritonserver.py"
    script.write_text(FAKE_REMOTE_SERVER)
    command = [sys.executable, str(script), str(port), str(record), json.dumps(engines), str(cache)]
    return command + ["--model-repository=s3://bucket/models", "--model-control-mode=none"], record, port


def test_an_object_store_repository_gets_the_build_pass_through_tritonserver(tmp_path, capsys):
    """s3:// is not a folder here (Path would fold it into 's3:/...'), but tritonserver reads it: the
    build pass loads every model (`--load-model=*`) under its build_once config, one at a time; the
    loaded configs then say which models run the TensorRT EP, with how many instances, and whether
    each engine is in the cache."""
    cache = tmp_path / "cache"
    cache.mkdir()
    engines = {"cross_encoder": "bge_0123abcd", "cross_encoder_2048": "bge_0123abcd_c1"}
    command, record, port = _remote_command(tmp_path, engines, cache)
    assert build_once.repository_of(command) is None and build_once.engines_to_build(command, cache)
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    assert build_once.ensure_engines(cache, None, command, url, timeout_s=60, model_hash="bge_0123abcd") == []
    flags = json.loads(record.read_text())
    assert "--model-config-name=build_once" in flags and "--model-load-thread-count=1" in flags
    assert "--model-control-mode=explicit" in flags and "--model-control-mode=none" not in flags
    assert [a for a in flags if a.startswith("--load-model=")] == ["--load-model=*"]
    out = capsys.readouterr().out
    assert "building the engines of every model of the repository one instance at a time" in out
    assert "cross_encoder: loaded with 1 instance(s), engine built" in out
    assert "cross_encoder_2048: loaded with 1 instance(s), engine built" in out
    # Its engines are in the cache now (seeded or built): the next start runs no pass.
    assert not build_once.engines_to_build(command, cache, "bge_0123abcd")
    record.unlink()
    assert build_once.ensure_engines(cache, None, command, url, timeout_s=5, model_hash="bge_0123abcd") == []
    assert not record.exists() and "no build pass" in capsys.readouterr().out


def test_an_object_store_export_without_build_once_configs_is_named(tmp_path, capsys):
    """A repository exported before build-once has no configs/build_once.pbtxt: Triton loads its
    config.pbtxt (two instances, built at once); the pass says so instead of claiming one build."""
    loaded = {
        "cross_encoder": {
            "instance_group": [{"count": 2}],
            "optimization": {
                "execution_accelerators": {
                    "gpu_execution_accelerator": [{"name": "tensorrt", "parameters": {"trt_engine_cache_prefix": "b"}}]
                }
            },
        },
        "tokenizer": {"backend": "python", "instance_group": [{"count": 2}]},
    }
    assert build_once.report_remote_pass(loaded, tmp_path) == ["cross_encoder"]
    out = capsys.readouterr().out
    assert "cross_encoder: loaded with 2 instance(s), NO engine" in out
    assert "no configs/build_once.pbtxt: its 2 instances built at once" in out and "tokenizer" not in out


def test_object_store_build_pass_on_the_real_tritonserver(python_repo, tmp_path, monkeypatch, capsys):
    """The object-store pass (build_once.remote_build_pass: `--load-model=*`, explicit mode,
    `--model-config-name=build_once`, one load at a time) on the real tritonserver 2.51, with a local
    repository given to it as the object store's would be (Triton reads both through one filesystem
    layer). The class model's configs/build_once.pbtxt is taken (one instance where config.pbtxt
    says two); a model without one keeps its config.pbtxt; every model loads; the server is stopped."""
    import shutil

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from local_triton.server import TritonServer, server_environment

    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    config = text_format.Parse((repo / "cross_encoder" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert [g.count for g in config.instance_group] == [2]
    (repo / "cross_encoder" / "configs").mkdir()
    (repo / "cross_encoder" / "configs" / f"{BUILD_ONCE_CONFIG}.pbtxt").write_text(to_pbtxt(build_once_config(config)))
    for key, value in server_environment().items():
        monkeypatch.setenv(key, value)
    server = TritonServer(repo, free_port(), free_port(), free_port())
    seen: dict[str, dict] = {}
    real_report = build_once.report_remote_pass

    def report(loaded, local):
        seen.update(loaded)
        return real_report(loaded, local)

    monkeypatch.setattr(build_once, "report_remote_pass", report)
    ready = f"http://127.0.0.1:{server.http_port}/v2/health/ready"
    assert build_once.remote_build_pass(tmp_path / "cache", None, server.command(), ready, timeout_s=240) == []
    assert set(seen) == {p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file()}
    counts = {name: [g["count"] for g in c.get("instance_group", [])] for name, c in seen.items()}
    assert counts["cross_encoder"] == [1]  # configs/build_once.pbtxt
    assert counts["tokenizer"] == [2]  # no build_once config: its config.pbtxt
    assert not server.is_ready()  # stopped after the pass
    assert "every model of the repository one instance at a time" in capsys.readouterr().out


def test_an_object_store_pass_whose_configs_cannot_be_read_does_not_stop_the_launcher(tmp_path, capsys):
    """The stand-in answers readiness but not the repository index (HTTP 501): the pass ran, its
    per-model report is missing, and serve.py goes on to the serving start instead of crashing."""
    cache = tmp_path / "cache"
    cache.mkdir()
    port, record = free_port(), tmp_path / "argv.json"
    script = tmp_path / "fake_tritonserver.py"
    script.write_text(FAKE_SERVER)
    command = [sys.executable, str(script), str(port), str(record), json.dumps({"*": "bge_0123abcd"}), str(cache)]
    command += ["--model-repository=gs://bucket/models"]
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    assert build_once.ensure_engines(cache, None, command, url, timeout_s=60) == []
    assert "--load-model=*" in json.loads(record.read_text())
    assert "could not read the loaded configs" in capsys.readouterr().out
