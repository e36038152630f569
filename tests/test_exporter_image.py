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
    # Only TensorRT's bindings are pinned outside the test environment (no GPU here).
    assert {n for n, v in exporter.items() if v} == {"tensorrt-cu12"}
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
