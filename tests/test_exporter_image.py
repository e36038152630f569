"""The exporter image runs what the tests ran: requirements/export.txt names packages, and the
image installs them with requirements/dev.txt (the test environment's pins) as constraints.
Checked here on the files the Dockerfile uses and on this environment's installed versions."""

from __future__ import annotations

import ast
import importlib.util
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
    # Only the GPU packages are pinned outside the test environment (no GPU here): TensorRT's
    # bindings and onnxruntime-gpu (test_exporter_runs_onnxruntime_gpu_and_never_the_cpu_wheel).
    assert {n for n, v in exporter.items() if v} == {"tensorrt-cu12", "onnxruntime-gpu"}
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


def test_exporter_runs_onnxruntime_gpu_and_never_the_cpu_wheel():
    """The exporter image's requirement set has onnxruntime-gpu (pinned: the GPU gate, issue 25 item
    10) and no CPU `onnxruntime`, neither named nor pulled in by a dependency: both wheels install the
    one `onnxruntime` module, and whichever installs last wins (the CPU one has no GPU EPs, so the gate
    would skip on a GPU host). The pin is the ONNX Runtime Triton 24.10 serves."""
    from export import gpu_gate

    exporter = _requirements(ROOT / "requirements" / "export.txt")
    assert exporter.get("onnxruntime-gpu") == gpu_gate.SERVED_ONNXRUNTIME_VERSION
    assert "onnxruntime" not in exporter
    raw = [
        line.split("#", 1)[0].strip()
        for line in (ROOT / "requirements" / "export.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    closure = _closure_requires({line.split("==")[0] for line in raw if not line.startswith("onnxruntime-gpu")})
    pulling = sorted(name for name, deps in closure.items() if "onnxruntime" in deps)
    assert pulling == [], f"{pulling} would install the CPU onnxruntime beside onnxruntime-gpu"
    assert "onnxruntime" not in closure
    # The image installs the file as it is, with the test pins as constraints (which only restrict).
    stage = (ROOT / "docker" / "Dockerfile").read_text().split("AS exporter")[1].split("\nFROM ")[0]
    runs = [line for line in stage.splitlines() if not line.lstrip().startswith("#")]
    assert "-r requirements/export.txt" in stage
    assert not any("onnxruntime" in line.replace("onnxruntime-gpu", "") for line in runs)
    # The module the gate imports is the one onnxruntime-gpu provides (same top-level name).
    assert importlib.util.find_spec("onnxruntime") is not None
