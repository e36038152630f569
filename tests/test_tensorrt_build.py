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
from export.settings import PLAN_WORKSPACE_BYTES, ServingLimits
from export.tensorrt_build import (
    PlanBuild,
    build_and_certify_plan,
    pinned_layers,
    trtexec_command,
    write_build_files,
)
from export.tensorrt_profiles import length_classes, profile_for


def _flag_values(cmd: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in cmd if a.startswith(flag + "=")]


def test_trtexec_builds_one_plan_per_class_with_one_profile_and_no_inference_on_random_ids():
    build = PlanBuild(ServingLimits(max_length=4096), "fp16", ("/a/LayerNormalization", "/b/Softmax"))
    classes = length_classes(build.limits)  # max_length 4,096: three classes (<=512, <=2048, <=4096)
    assert len(classes) == 3
    for length_class in classes:
        cmd = trtexec_command("m.onnx", "m.plan", build, "/cache/timing.cache", length_class)
        assert "--skipInference" in cmd and "--timingCacheFile=/cache/timing.cache" in cmd
        # The plan workspace cap, not the 8 GiB of the ONNX Runtime accelerator (plan_memory.py).
        assert f"--memPoolSize=workspace:{PLAN_WORKSPACE_BYTES >> 20}M" in cmd
        # One profile: its class's own shapes, so a context is sized for this class alone.
        assert [a for a in cmd if a.startswith("--profile=")] == ["--profile=0"]
        start = cmd.index("--profile=0")
        block = cmd[start + 1 : start + 4]
        assert [a.split("=")[0] for a in block] == ["--minShapes", "--optShapes", "--maxShapes"]
        assert block[2].endswith(profile_for(length_class).shapes("max"))
        assert "--fp16" in cmd and "--precisionConstraints=prefer" in cmd
        assert _flag_values(cmd, "--layerPrecisions") == ["/a/LayerNormalization:fp32,/b/Softmax:fp32"]
        assert _flag_values(cmd, "--layerOutputTypes") == ["/a/LayerNormalization:fp32,/b/Softmax:fp32"]
    last = trtexec_command("m.onnx", "m.plan", build, "t", classes[-1])
    assert "--maxShapes=input_ids:8x4096,attention_mask:8x4096" in last  # 32,768 tokens


def test_fp32_plan_builds_no_fp16_anything():
    build = PlanBuild(ServingLimits(), "fp32", ("/a/LayerNormalization",))
    cmd = trtexec_command("m.onnx", "m.plan", build, "t", length_classes(build.limits)[0])
    assert not [a for a in cmd if "fp16" in a or "precision" in a.lower() or "layerOutputTypes" in a]


def test_layer_names_trtexec_cannot_carry_are_refused():
    with pytest.raises(ValueError, match="cannot be passed to trtexec"):
        PlanBuild(ServingLimits(), "fp16", ("a,b",))


def test_build_script_builds_each_class_to_staging_certifies_then_installs_escalating(tmp_path):
    build = PlanBuild(
        ServingLimits(max_length=2048), "fp16", ("/x/LayerNormalization",), escalation=(("/x/Softmax",), ("/x/MatMul",))
    )
    script = write_build_files(tmp_path / "cross_encoder" / "tensorrt", build)
    text = script.read_text()
    tries = (script.parent / "build_tries.sh").read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["bash", "-n", str(script.parent / "build_tries.sh")]).returncode == 0
    for model in ("cross_encoder", "cross_encoder_2048"):
        assert f"--saveEngine=/repo/cross_encoder/tensorrt/{model}.plan.staging" in tries
        assert f"--plan {model}=/repo/cross_encoder/tensorrt/{model}.plan.staging" in tries
    assert "--install-root /repo" in tries and "--precision fp16" in tries and "--manifest /repo/manifest.json" in tries
    assert "--timingCacheFile=/tmp/timing-cache/timing.cache" in tries and '--user "$(id -u):$(id -g)"' in text
    assert text.index('ln -sfn "/cache/$key" /tmp/timing-cache') < text.index("for level in 0 1 2")
    # Escalation: try 0 pins the first level only, try 1 adds Softmax, try 2 adds the MatMuls.
    bodies = tries.split("try_")[1:]
    assert [b.split("(")[0] for b in bodies] == ["0", "1", "2"]
    assert "/x/Softmax" not in bodies[0] and "/x/Softmax:fp32" in bodies[1] and "/x/MatMul:fp32" in bodies[2]
    assert "/x/LayerNormalization:fp32,/x/Softmax:fp32,/x/MatMul:fp32" in bodies[2]
    for body in bodies:
        assert body.index("trtexec") < body.index("certify_plan.py")  # certified before it is placed
    assert "16:64" in tries and "2048:16" in tries  # per-bucket batch the length classes allow
    # Nothing fetched at build time; one build per cache at a time.
    assert "pip install" not in text and "polygraphy is not installed" in text
    assert text.index("flock 9") < text.index(" run --rm --gpus")
    shipped = {p.name for p in script.parent.iterdir()}
    assert {"certify_plan.py", "certificate_compare.py", "build_plan.sh", "build_tries.sh"} <= shipped


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


def fake_tensorrt(recorder: _Recorder, layer_names: list[str], context_bytes: int = 1 << 20):
    """A stand-in at the TensorRT API boundary: builder, parser, network, config, and a runtime whose
    engine reports `context_bytes` of context memory for its profile."""
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

    class Engine:
        def get_device_memory_size_for_profile_v2(self, index):
            recorder.calls.append(("context_memory", index))
            return context_bytes

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return record("deserialize_cuda_engine", Engine())

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture(scope="module")
def exported(python_repo):
    return python_repo, json.loads((python_repo / "certificate.json").read_text())


@contextmanager
def ort_plan_runner(graph: Path, shift: float = 0.0, shift_for=None):
    """What the plans would answer: the exported graph on ONNX Runtime, optionally shifted (by
    `shift_for(try number)` when given: a plan that improves as more is pinned to fp32)."""
    run = onnx_runner(ort_session(graph))
    tries = []

    @contextmanager
    def factory(plans: dict):
        assert set(plans.values()) == {b"PLAN"}
        tries.append(sorted(plans))
        offset = shift if shift_for is None else shift_for(len(tries) - 1)
        yield lambda ids, mask: run(ids, mask) + offset

    factory.tries = tries  # type: ignore[attr-defined]
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
    target = tmp_path / "plans"
    with ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx") as factory:
        result = build_and_certify_plan(
            Path("m.onnx"),
            target,
            build,
            fixture,
            tmp_path / "cache" / "timing.cache",
            trt=fake_tensorrt(recorder, LAYERS),
            runner_factory=factory,
        )
    assert sorted(result.plans) == ["cross_encoder", "cross_encoder_2048"]
    assert all(p.read_bytes() == b"PLAN" and p.parent == target for p in result.plans.values())
    assert (tmp_path / "cache" / "timing.cache").read_bytes() == b"timing"
    # Memory measured per class plan on its only profile and recorded.
    assert [c for c in recorder.calls if c[0] == "context_memory"] == [("context_memory", 0)] * 2
    assert [m["context_bytes"] for m in result.memory] == [1 << 20] * 2 and all(m["measured"] for m in result.memory)
    flags = [c[1] for c in recorder.calls if c[0] == "set_flag"]
    pinned = sorted({c[1] for c in recorder.calls if c[0] == "precision"})
    if precision == "fp16":
        assert flags == ["FP16", "PREFER"] * 2  # one plan per class
        # Exactly the named layers: LayerNormalization_1 is another ONNX node's name.
        assert pinned == ["/m/embeddings/LayerNormalization", "/m/layer.0/LayerNormalization"]
    else:
        assert flags == [] and pinned == []
    assert len([c for c in recorder.calls if c[0] == "add_optimization_profile"]) == 2  # one per plan
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
        "deserialize_cuda_engine",
    ],
)
def test_python_builder_stops_on_any_failed_call(exported, tmp_path, failing):
    repo, fixture = exported
    target = tmp_path / "plans"
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
    target = tmp_path / "plans"
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
    assert not target.exists()


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


# --- issue 25 items 4, 7, 8: one pin definition, escalation, plan memory ---


def _trtexec_pins(cmd: list[str], layer_names: list[str]) -> set[str]:
    """The layers trtexec 10.5 pins for this command line, by its own rule (samples/common/
    sampleUtils.h findPlausible: exact key, else a key with one '*' matching any string), written
    here independently of export/tensorrt_build.py."""
    import re

    keys = [item.rsplit(":", 1)[0] for value in _flag_values(cmd, "--layerPrecisions") for item in value.split(",")]
    out_keys = [
        item.rsplit(":", 1)[0] for value in _flag_values(cmd, "--layerOutputTypes") for item in value.split(",")
    ]
    assert keys == out_keys  # compute precision and output type pin the same layers

    def hit(key: str, name: str) -> bool:
        if key == name:
            return True
        return key.count("*") == 1 and re.fullmatch(".*".join(map(re.escape, key.split("*"))), name) is not None

    return {name for name in layer_names if any(hit(k, name) for k in keys)}


NETWORK = [
    "/m/embeddings/LayerNormalization",
    "/m/embeddings/LayerNormalization_1",  # another ONNX node (torch numbers same-type nodes)
    "/m/layer.0/attention/Softmax",
    "/m/layer.0/attention/Softmax_1",
    "/m/layer.0/Add_3",
    "/m/layer.0/Add_31",
    "/m/layer.0/MatMul",
    "/m/Sigmoid",
    "(Unnamed Layer* 12) [Shuffle]",
]


@pytest.mark.parametrize(
    "names",
    [
        ("/m/embeddings/LayerNormalization", "/m/Sigmoid", "/m/layer.0/Add_3"),
        ("/m/embeddings/LayerNormalization", "/m/layer.0/attention/Softmax"),
        ("/m/layer.0/MatMul",),
    ],
)
def test_both_plan_builders_pin_the_same_layers(tmp_path, names):
    """Issue 25 item 7: trtexec (build_plan.sh) and the in-process builder get their pins from one
    definition and pin exactly the same layers of the same network, lookalike names included."""
    build = PlanBuild(ServingLimits(), "fp16", names)
    cmd = trtexec_command("m.onnx", "m.plan", build, "t", length_classes(build.limits)[0])
    recorder = _Recorder()
    from export.tensorrt_build import build_serialized_plan

    build_serialized_plan(
        Path("m.onnx"),
        build,
        tmp_path / "t.cache",
        length_classes(build.limits)[0],
        trt=fake_tensorrt(recorder, NETWORK),
    )
    in_process = {c[1] for c in recorder.calls if c[0] == "precision"}
    outputs = {c[1] for c in recorder.calls if c[0] == "output_type"}
    assert in_process == outputs == _trtexec_pins(cmd, NETWORK) == set(names)
    assert set(pinned_layers(NETWORK, names)) == in_process


def test_plan_escalates_pins_to_fp32_until_the_certificate_passes(exported, tmp_path):
    """Issue 25 item 8, builder stubbed at the TensorRT API only: try 0 misses the certificate,
    try 1 (Softmax pinned too) passes; both are recorded, and only try 1's plans are kept."""
    repo, fixture = exported
    build = PlanBuild(
        ServingLimits(max_length=2048),
        "fp16",
        ("/m/embeddings/LayerNormalization",),
        escalation=(("/m/layer.0/Softmax",), ("/m/layer.0/MatMul",)),
    )
    recorder = _Recorder()
    with ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx", shift_for=lambda k: 0.3 if k == 0 else 0.0) as f:
        result = build_and_certify_plan(
            Path("m.onnx"),
            tmp_path / "plans",
            build,
            fixture,
            tmp_path / "t.cache",
            trt=fake_tensorrt(recorder, LAYERS),
            runner_factory=f,
        )
        assert len(f.tries) == 2
    assert [a["level"] for a in result.attempts] == [0, 1]
    assert [a["passed"] for a in result.attempts] == [False, True]
    assert result.attempts[0]["fp32_ops"] == ["LayerNormalization", "Sigmoid"]
    assert result.attempts[1]["fp32_ops"] == ["LayerNormalization", "Sigmoid", "Softmax"]
    assert any("max |d logit|" in f for f in result.attempts[0]["failures"])
    # Try 1 pinned its own and try 0's layers, in both class plans.
    pins = [c[1] for c in recorder.calls if c[0] == "precision"]
    assert pins.count("/m/layer.0/Softmax") == 2 and pins.count("/m/embeddings/LayerNormalization") == 4
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["cross_encoder.plan", "cross_encoder_2048.plan"]
    assert result.manifest()["attempts"] == result.attempts and len(result.manifest()["memory"]) == 2


def test_plan_that_fails_every_try_says_so_and_leaves_nothing(exported, tmp_path):
    repo, fixture = exported
    build = PlanBuild(
        ServingLimits(), "fp16", ("/m/embeddings/LayerNormalization",), escalation=(("/m/layer.0/Softmax",),)
    )
    with (
        ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx", shift=0.3) as f,
        pytest.raises(plan_certification.PlanRejected) as err,
    ):
        build_and_certify_plan(
            Path("m.onnx"),
            tmp_path / "plans",
            build,
            fixture,
            tmp_path / "t.cache",
            trt=fake_tensorrt(_Recorder(), LAYERS),
            runner_factory=f,
        )
    message = str(err.value)
    assert "level 0 (fp32: LayerNormalization, Sigmoid)" in message and "level 1" in message
    assert "--precision fp32" in message and not (tmp_path / "plans").exists()


def test_plan_over_the_memory_budget_is_refused_before_certification(exported, tmp_path):
    """The measured context memory (TensorRT's figure for the profile) counts against the budget:
    a plan design that would not fit the card fails that try, named, and is never certified."""
    repo, fixture = exported
    build = PlanBuild(ServingLimits(max_length=2048), "fp16", memory_budget_bytes=4 << 30)
    with (
        ort_plan_runner(repo / "cross_encoder" / "1" / "model.onnx") as f,
        pytest.raises(plan_certification.PlanRejected, match="exceeds the budget of 4.0 GiB"),
    ):
        build_and_certify_plan(
            Path("m.onnx"),
            tmp_path / "plans",
            build,
            fixture,
            tmp_path / "t.cache",
            trt=fake_tensorrt(_Recorder(), LAYERS, context_bytes=3 << 30),
            runner_factory=f,
        )
    assert f.tries == []


def test_certify_script_installs_every_class_plan_or_none(exported, tmp_path):
    """build_plan.sh's install step: all class folders get their plan, or (a failed report) none
    changes and the staging files are gone."""
    repo, fixture = exported
    run = onnx_runner(ort_session(repo / "cross_encoder" / "1" / "model.onnx"))
    for shift, installed in ((0.5, False), (0.0, True)):
        staged = {m: tmp_path / f"{m}.plan.staging" for m in ("cross_encoder", "cross_encoder_2048")}
        for path in staged.values():
            path.write_bytes(b"NEW")
        report = plan_certification.certify_plan(
            fixture, lambda i, m, shift=shift: run(i, m) + shift, "fp32", lambda length: 64
        )
        root = tmp_path / "repo"
        if installed:
            plan_certification.install_all(staged, root, report)
            assert [(root / m / "1" / "model.plan").read_bytes() for m in staged] == [b"NEW", b"NEW"]
        else:
            with pytest.raises(plan_certification.PlanRejected, match="none installed"):
                plan_certification.install_all(staged, root, report)
            assert not root.exists()
        assert not any(p.exists() for p in staged.values())


def test_certify_script_records_memory_and_tries_in_the_manifest(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"model": {"id": "x"}}))
    rows = plan_certification.memory_rows({"cross_encoder": b"x" * 100}, 2, lambda data: 1000)
    assert rows == [
        {
            "model": "cross_encoder",
            "instances": 2,
            "weights_bytes": 100,
            "context_bytes": 1000,
            "measured": True,
            "total_bytes": 2200,
        }
    ]
    plan_certification.record_in_manifest(manifest, {"level": 0, "passed": False, "failures": ["x"], "memory": rows})
    plan_certification.record_in_manifest(manifest, {"level": 1, "passed": True, "failures": [], "memory": rows})
    doc = json.loads(manifest.read_text())
    assert doc["model"] == {"id": "x"} and [a["level"] for a in doc["tensorrt_plan"]["attempts"]] == [0, 1]
    assert doc["tensorrt_plan"]["memory"] == rows
