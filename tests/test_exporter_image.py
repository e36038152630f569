"""The exporter image runs what the tests ran: requirements/export.txt names packages, and the
image installs them with requirements/dev.txt (the test environment's pins) as constraints.
Checked here on the files the Dockerfile uses and on this environment's installed versions."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _requirements(path: Path) -> dict[str, str]:
    """name -> pinned version ('' when unpinned), names normalised as pip does."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        out[re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()] = version
    return out


def test_every_exporter_package_is_pinned_by_the_test_environment():
    exporter = _requirements(ROOT / "requirements" / "export.txt")
    tested = _requirements(ROOT / "requirements" / "dev.txt")
    unpinned = {name for name, version in exporter.items() if not version}
    assert unpinned and unpinned <= set(tested), unpinned - set(tested)
    # Only TensorRT's bindings are pinned outside the test environment (no GPU here); onnxruntime-gpu
    # has an environment of its own (test_the_gpu_gate_environment_has_onnxruntime_gpu_and_not_the_cpu_wheel).
    assert {n: v for n, v in exporter.items() if v} == {"tensorrt-cu12-bindings": "10.5.0"}
    # ...and the tests really ran those versions.
    for name in unpinned:
        assert metadata.version(name).split("+")[0] == tested[name], name  # 2.13.0+cpu is torch 2.13.0


def test_exporter_stage_installs_with_the_test_pins_on_the_test_python():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index("AS exporter") :]
    assert "-c requirements/dev.txt -r requirements/export.txt" in stage
    python = re.search(r"uv venv --python (\S+)", stage).group(1)
    assert python == ".".join(map(str, sys.version_info[:3])) or python == ".".join(map(str, sys.version_info[:2]))
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!requirements/export.txt" in ignored and "!requirements/dev.txt" in ignored


def _first_party_imports(package: str) -> set[str]:
    """The repository's top-level packages that `package` imports, followed through each of them."""
    found, todo = {package}, [package]
    while todo:
        for path in (ROOT / todo.pop()).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in found and (ROOT / top / "__init__.py").is_file():
                        found.add(top)
                        todo.append(top)
    return found


def test_exporter_stage_copies_every_package_the_export_imports():
    stage = (ROOT / "docker" / "Dockerfile").read_text().split("AS exporter")[1].split("\nFROM ")[0]
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    packages = _first_party_imports("export")
    assert "common" in packages  # the texts and the pair tokenizer
    for package in packages:
        assert f"COPY {package} {package}" in stage, package
        assert f"!{package}/" in ignored, package


def test_exporter_refuses_an_unwritable_output_before_exporting(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--model", str(tmp_path), "--repo", "/proc/not-writable/repo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "cannot write the repository under /proc" in proc.stderr and "--user $(id -u):$(id -g)" in proc.stderr


def _closure_requires(names: set[str]) -> dict[str, set[str]]:
    """package -> the names it requires unconditionally (extras it is asked for included), followed
    through this environment's installed metadata: the test environment holds every exporter
    package but the GPU ones, at the versions the image installs (the test above)."""
    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = {
        norm(re.sub(r"\[.*\]", "", n)): set(re.findall(r"\[(.*)\]", n)[0].split(",")) if "[" in n else set()
        for n in names
    }
    found: dict[str, set[str]] = {}
    todo = list(wanted.items())
    while todo:
        name, extras = todo.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found[name] = set()
            continue
        deps = set()
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            deps.add(norm(req.name))
            todo.append((norm(req.name), set(req.extras)))
        found[name] = deps
    return found


def _names(path: Path) -> set[str]:
    return {line.split("==")[0] for line in _lines(path)}


def _lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def test_the_gpu_gate_environment_has_onnxruntime_gpu_and_not_the_cpu_wheel():
    """The exporter image's GPU-gate environment (requirements/gpu-gate.txt, /opt/venv-gpu-gate) has
    onnxruntime-gpu pinned to the ONNX Runtime Triton 24.10 serves and no CPU `onnxruntime`, neither
    named nor pulled in by a dependency (both wheels install the one `onnxruntime` module: whichever
    installs last wins, and the CPU one has no GPU EPs, so the gate would skip on a GPU host). The
    export's own environment keeps the tested CPU onnxruntime and never gets onnxruntime-gpu."""
    from export import gpu_gate

    gate = _requirements(ROOT / "requirements" / "gpu-gate.txt")
    assert gate.pop("onnxruntime-gpu") == gpu_gate.SERVED_ONNXRUNTIME_VERSION
    assert "onnxruntime" not in gate and not any(gate.values())  # the rest: the tested pins
    tested = _requirements(ROOT / "requirements" / "dev.txt")
    assert set(gate) <= set(tested)
    closure = _closure_requires(
        _names(ROOT / "requirements" / "gpu-gate.txt") - {"onnxruntime-gpu"} | {"reranker-client"}
    )
    pulling = sorted(name for name, deps in closure.items() if "onnxruntime" in deps)
    assert pulling == [] and "onnxruntime" not in closure, f"{pulling} would install the CPU onnxruntime"
    exporter = _requirements(ROOT / "requirements" / "export.txt")
    assert "onnxruntime" in exporter and "onnxruntime-gpu" not in exporter
    assert "onnxruntime-gpu" not in _closure_requires(_names(ROOT / "requirements" / "export.txt"))


def test_the_exporter_image_runs_the_gate_in_its_own_environment():
    """The Dockerfile builds the second venv from requirements/gpu-gate.txt with the test pins as
    constraints, adds the client without dependencies, and names its python in the variable the
    export reads; the gate's imports need nothing the export's heavy stack brings (torch etc.)."""
    from export import gpu_gate

    stage = (ROOT / "docker" / "Dockerfile").read_text().split("AS exporter")[1].split("\nFROM ")[0]
    venv = "/opt/venv-gpu-gate/bin/python"
    assert f"--python {venv} -c requirements/dev.txt -r requirements/gpu-gate.txt" in stage
    assert f"--no-deps --python {venv} ./client" in stage
    assert f"ENV {gpu_gate.GPU_GATE_PYTHON_ENV}={venv}" in stage
    assert "!requirements/gpu-gate.txt" in (ROOT / ".dockerignore").read_text()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, export.gpu_gate; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'optimum', 'tensorrt'}))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_nothing_in_the_exporter_requirements_comes_from_outside_pypi():
    """`tensorrt-cu12` (any version) is an sdist whose setup.py pip-installs its real wheels from
    https://pypi.nvidia.com into the build's isolation env, leaving a `tensorrt` that cannot
    import; the bindings wheel `tensorrt-cu12-bindings` is on pypi.org (export/trt_import.py)."""
    for name in ("export.txt", "gpu-gate.txt"):
        text = (ROOT / "requirements" / name).read_text()
        names = _requirements(ROOT / "requirements" / name)
        assert "tensorrt-cu12" not in names and "tensorrt" not in names, name
        code = [line.split("#", 1)[0] for line in text.splitlines()]
        assert not [line for line in code if "://" in line or line.strip().startswith("-")], name


def test_the_exporter_image_build_fails_when_tensorrt_does_not_import():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index("AS exporter") : dockerfile.index("AS rest")]
    check = stage.index("RUN python -m export.trt_import")
    assert stage.index("COPY export export") < check and stage.index("requirements/export.txt &&") < check
    assert "pypi.nvidia.com" not in dockerfile and "extra-index-url" not in dockerfile


def test_every_tensorrt_import_of_the_export_goes_through_the_shim():
    """Only export/trt_import.py imports TensorRT by name, and plan_certification.py (which also
    runs standalone in NVIDIA's TensorRT container, where `tensorrt` is native)."""
    offenders = []
    for path in (ROOT / "export").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorrt" for a in node.names):
                offenders.append(path.name)
    assert sorted(set(offenders)) == ["plan_certification.py", "trt_import.py"]
