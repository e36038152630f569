"""The TensorRT plan builders, checked without TensorRT: the generated trtexec command line and
script, and the Python-API builder driven through a stand-in `tensorrt` module that records
every call and can make any of them fail. The certificate check of a built plan runs with a
stand-in runner: ONNX Runtime on the exported graph (what a correct plan answers) and the
same with a shifted output (what a broken plan answers)."""

from __future__ import annotations

import json
import subprocess
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from export import plan_certification
from export.parity import onnx_runner
from export.pipeline import ort_session
from export.settings import TENSORRT_WORKSPACE_BYTES, ServingLimits
from export.tensorrt_build import PlanBuild, build_and_certify_plan, trtexec_command, write_build_files
from export.tensorrt_profiles import profiles_for


def _flag_values(cmd: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in cmd if a.startswith(flag + "=")]


def test_trtexec_one_profile_block_per_profile_and_no_inference_on_random_ids():
    build = PlanBuild(ServingLimits(max_length=4096), "fp16", ("/a/LayerNormalization", "/b/Softmax"))
    cmd = trtexec_command("m.onnx", "m.plan", build, "/cache/timing.cache")
    assert "--skipInference" in cmd and "--timingCacheFile=/cache/timing.cache" in cmd
    assert f"--memPoolSize=workspace:{TENSORRT_WORKSPACE_BYTES >> 20}M" in cmd
    # trtexec 10.5: --profile=N, then that profile's min/opt/max, for each profile in order.
    starts = [i for i, a in enumerate(cmd) if a.startswith("--profile=")]
    # max_length 4,096: three length classes (<=512, <=2048, <=4096), one profile each.
    assert [cmd[i] for i in starts] == ["--profile=0", "--profile=1", "--profile=2"]
    for index, start in enumerate(starts):
        block = cmd[start + 1 : start + 4]
        assert [a.split("=")[0] for a in block] == ["--minShapes", "--optShapes", "--maxShapes"]
        assert block[2].endswith(profiles_for(build.limits)[index].shapes("max"))
    assert cmd.count("--minShapes=input_ids:1x16,attention_mask:1x16") == 1
    assert "--maxShapes=input_ids:8x4096,attention_mask:8x4096" in cmd  # 32,768 tokens
    assert "--fp16" in cmd and "--precisionConstraints=prefer" in cmd
    assert _flag_values(cmd, "--layerPrecisions") == ["/a/LayerNormalization:fp32,/b/Softmax:fp32"]
    assert _flag_values(cmd, "--layerOutputTypes") == ["/a/LayerNormalization:fp32,/b/Softmax:fp32"]


def test_fp32_plan_builds_no_fp16_anything():
    cmd = trtexec_command("m.onnx", "m.plan", PlanBuild(ServingLimits(), "fp32", ("/a/LayerNormalization",)), "t")
    assert not [a for a in cmd if "fp16" in a or "precision" in a.lower() or "layerOutputTypes" in a]


def test_layer_names_trtexec_cannot_carry_are_refused():
    with pytest.raises(ValueError, match="cannot be passed to trtexec"):
        PlanBuild(ServingLimits(), "fp16", ("a,b",))


def test_build_script_builds_to_staging_certifies_then_installs(tmp_path):
    build = PlanBuild(ServingLimits(max_length=2048), "fp16", ("/x/LayerNormalization",))
    script = write_build_files(tmp_path / "cross_encoder" / "tensorrt", build)
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "--saveEngine=/repo/cross_encoder/tensorrt/model.plan.staging" in text
    assert "certify_plan.py --plan /repo/cross_encoder/tensorrt/model.plan.staging" in text
    assert "--install /repo/cross_encoder/1/model.plan" in text and "--precision fp16" in text
    assert "--timingCacheFile=/tmp/timing-cache/timing.cache" in text and '--user "$(id -u):$(id -g)"' in text
    assert text.index('ln -sfn "/cache/$key" /tmp/timing-cache') < text.index("trtexec")
    assert text.index("trtexec") < text.index("certify_plan.py")  # certified before it is placed
    assert "16:64" in text and "2048:16" in text  # per-bucket batch the length classes allow
    # The second class model serves the same plan (its own profile), linked once it is installed.
    assert text.index("--install") < text.index('"$repo/cross_encoder_2048/1/model.plan"')
    shipped = {p.name for p in script.parent.iterdir()}
    assert {"certify_plan.py", "certificate_compare.py", "build_plan.sh"} <= shipped


def test_shipped_certify_script_runs_without_the_project(tmp_path):
    """In the TensorRT container neither the client nor export/ is installed: the copied script must
    import its comparison module from beside itself."""
    folder = tmp_path / "tensorrt"
    write_build_files(folder, PlanBuild(ServingLimits(), "fp32"))
    proc = subprocess.run(
        [
            "python3",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import numpy, certify_plan; print(certify_plan.certify.__module__)",
            str(folder),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(np.__file__).parent.parent)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "certificate_compare"


# --- a stand-in `tensorrt` module: records calls, can fail any of them ---


class _Recorder:
    def __init__(self, fail: str = ""):
        self.calls: list[tuple] = []
        self.fail = fail


def fake_tensorrt(recorder: _Recorder, layer_names: list[str]):
    trt = types.SimpleNamespace()
    trt.float32 = "float32"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", PREFER_PRECISION_CONSTRAINTS="PREFER")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    def record(name, result=True):
        recorder.calls.append((name,))
        return None if recorder.fail == name else result

    class Layer:
        def __init__(self, name):
            self.name, self.num_outputs, self._precision = name, 1, None

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, value):
            recorder.calls.append(("precision", self.name, value))

        def set_output_type(self, index, dtype):
            recorder.calls.append(("output_type", self.name, index, dtype))

    class Network:
        num_inputs = 2
        num_layers = len(layer_names)

        def get_input(self, i):
            return types.SimpleNamespace(name=["input_ids", "attention_mask"][i])

        def get_layer(self, i):
            return Layer(layer_names[i])

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            recorder.calls.append(("set_shape", name, lo, opt, hi))

    class Cache:
        def serialize(self):
            return b"timing"

    class Config:
        def set_flag(self, flag):
            recorder.calls.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool, size):
            recorder.calls.append(("pool", pool, size))

        def create_timing_cache(self, data):
            return record("create_timing_cache", Cache())

        def set_timing_cache(self, cache, ignore_mismatch):
            return record("set_timing_cache", True) if recorder.fail != "set_timing_cache" else False

        def add_optimization_profile(self, profile):
            recorder.calls.append(("add_optimization_profile",))
            return -1 if recorder.fail == "add_optimization_profile" else 0

        def get_timing_cache(self):
            return Cache()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return record("create_network", Network())

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return record("build_serialized_network", b"PLAN")

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture(scope="module")
def exported(python_repo):
    return python_repo, json.loads((python_repo / "certificate.json").read_text())


@contextmanager
def ort_plan_runner(graph: Path, shift: float = 0.0):
    """What the plan would answer: the exported graph on ONNX Runtime, optionally shifted."""
    run = onnx_runner(ort_session(graph))

    @contextmanager
    def factory(serialized: bytes):
        assert serialized == b"PLAN"
        yield lambda ids, mask: run(ids, mask) + shift

    yield factory


LAYERS = [
    "/m/embeddings/LayerNormalization",
    "/m/layer.0/Softmax",
    "/m/layer.0/MatMul",
    "/m/layer.0/LayerNormalization",
    "/m/layer.0/LayerNormalization_1",
]


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_python_builder_calls_checked_and_precision_honoured(exported, tmp_path, precision):
    repo, fixture = exported
    recorder = _Recorder()
    build = PlanBuild(
        ServingLimits(max_length=2048), precision, ("/m/embeddings/LayerNormalization", "/m/layer.0/LayerNormalization")
    )
    target = tmp_path / "1" / "model.plan"
    with ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx") as factory:
        build_and_certify_plan(
            Path("m.onnx"),
            target,
            build,
            fixture,
            tmp_path / "cache" / "timing.cache",
            trt=fake_tensorrt(recorder, LAYERS),
            runner_factory=factory,
        )
    assert target.read_bytes() == b"PLAN" and (tmp_path / "cache" / "timing.cache").read_bytes() == b"timing"
    flags = [c[1] for c in recorder.calls if c[0] == "set_flag"]
    pinned = sorted({c[1] for c in recorder.calls if c[0] == "precision"})
    if precision == "fp16":
        assert flags == ["FP16", "PREFER"]
        # The node's first layer and its numbered follow-ups; never an unrelated layer.
        assert pinned == [
            "/m/embeddings/LayerNormalization",
            "/m/layer.0/LayerNormalization",
            "/m/layer.0/LayerNormalization_1",
        ]
    else:
        assert flags == [] and pinned == []
    assert len([c for c in recorder.calls if c[0] == "add_optimization_profile"]) == 2
    shapes = [c for c in recorder.calls if c[0] == "set_shape"]
    assert ("set_shape", "input_ids", (1, 513), (16, 2048), (16, 2048)) in shapes  # the second length class


@pytest.mark.parametrize(
    "failing",
    [
        "create_network",
        "create_timing_cache",
        "set_timing_cache",
        "add_optimization_profile",
        "build_serialized_network",
    ],
)
def test_python_builder_stops_on_any_failed_call(exported, tmp_path, failing):
    repo, fixture = exported
    target = tmp_path / "model.plan"
    with (
        ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx") as factory,
        pytest.raises(RuntimeError, match=failing),
    ):
        build_and_certify_plan(
            Path("m.onnx"),
            target,
            PlanBuild(ServingLimits(max_length=2048)),
            fixture,
            tmp_path / "timing.cache",
            trt=fake_tensorrt(_Recorder(failing), LAYERS),
            runner_factory=factory,
        )
    assert not target.exists()


def test_plan_that_misses_the_certificate_is_never_installed(exported, tmp_path):
    repo, fixture = exported
    target = tmp_path / "1" / "model.plan"
    target.parent.mkdir()
    target.write_bytes(b"previous plan")
    with (
        ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx", shift=0.2) as factory,
        pytest.raises(plan_certification.PlanRejected, match="max \\|d logit\\|"),
    ):
        build_and_certify_plan(
            Path("m.onnx"),
            target,
            PlanBuild(ServingLimits(), "fp16"),
            fixture,
            tmp_path / "timing.cache",
            trt=fake_tensorrt(_Recorder(), LAYERS),
            runner_factory=factory,
        )
    assert target.read_bytes() == b"previous plan"
    assert not list(target.parent.glob("*.staging"))


def test_certify_script_installs_only_a_passing_plan(exported, tmp_path):
    """The container-side install step: atomic replace on a pass, staging removed on a fail."""
    repo, fixture = exported
    run = onnx_runner(ort_session(repo / "cross_encoder" / "1" / "model.onnx"))
    limits = ServingLimits()
    for shift, installed in ((0.0, True), (0.5, False)):
        staging, target = tmp_path / "plan.staging", tmp_path / "1" / "model.plan"
        staging.write_bytes(b"NEW")
        report = plan_certification.certify_plan(
            fixture, lambda i, m, shift=shift: run(i, m) + shift, "fp32", lambda length: limits.max_batch_size
        )
        if installed:
            plan_certification.install(staging, target, report)
            assert target.read_bytes() == b"NEW" and not staging.exists()
        else:
            with pytest.raises(plan_certification.PlanRejected):
                plan_certification.install(staging, target, report)
            assert not staging.exists() and target.read_bytes() == b"NEW"


def test_timing_cache_is_keyed_by_device_and_tensorrt_version_in_both_builders(tmp_path, monkeypatch):
    """Issue 25 item 6: build_plan.sh (trtexec, which silently reuses a mismatched cache) and the
    in-process builder (which fails on one) read a timing cache of their own GPU model, compute
    capability and TensorRT version only: the same key from both. Dry run: nvidia-smi and the
    container's python3 are stand-ins printing what the real ones print."""
    from export.tensorrt_build import TIMING_KEY_SH, device_key, local_device_key, timing_cache_path

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA A10G, 8.6'\necho 'NVIDIA L4, 8.9'\n")
    (bin_dir / "python3").write_text("#!/bin/sh\necho 10.5.0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    shell = subprocess.run(
        ["bash", "-c", TIMING_KEY_SH + '; printf %s "$key"'], env=env, capture_output=True, text=True
    )
    assert shell.stdout == "NVIDIA-A10G-sm8.6-trt10.5.0", shell.stderr
    monkeypatch.setenv("PATH", env["PATH"])
    assert local_device_key("10.5.0") == device_key("NVIDIA A10G", "8.6", "10.5.0") == shell.stdout
    monkeypatch.setenv("TRT_CACHE_DIR", str(tmp_path / "cache"))
    a10g, l4 = timing_cache_path(shell.stdout), timing_cache_path(device_key("NVIDIA L4", "8.9", "10.5.0"))
    assert a10g.parent != l4.parent and a10g.name == l4.name == "timing.cache"
    assert timing_cache_path(device_key("NVIDIA L4", "8.9", "10.6.0")) != l4
