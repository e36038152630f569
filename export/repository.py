"""Writes a Triton model repository atomically: built in a temporary sibling folder, then
moved into place, so a failed export never leaves a half-written repository behind.

Layout (the committed model_repository/ is the same, minus weights and tokenizer files):
    rerank/config.pbtxt, rerank/1/placeholder.txt       ensemble: tokenizer -> length_router (1 class: cross_encoder)
    rerank_windows/config.pbtxt, rerank_windows/1/...   ensemble: tokenizer -> length_router -> window_reduce
    tokenizer/config.pbtxt, tokenizer/1/{model.py, pair_tokenization.py, pair_windows.py, text_cuts.py,
                                         padding_metrics.py, deferred_counters.py, tokenizer.json,
                                         contract.py}
    length_router/, window_reduce/                      Python models (code only)
    cross_encoder/config.pbtxt, cross_encoder/1/{model.onnx | model.plan | model.py+model.onnx}
    cross_encoder_<bound>/...                           the other length classes (max_length > 512):
                                                        the same files, hard-linked where possible
    cross_encoder/parity.json                           the export gates' numbers, per artifact
    certificate.json                                    held-out pairs + fp32 PyTorch logits: `make verify`
    manifest.json                                       what was exported, from what, how, what is served
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from common.serving_code import SOURCE_REPOSITORY
from export.tensorrt_profiles import length_classes
from export.triton_config import (
    BUILD_ONCE_CONFIG,
    WARMUP_FOLDER,
    RepositorySpec,
    all_configs,
    build_once_config,
    engine_cache_prefix_for,
    to_pbtxt,
    warmup_files,
)
from reranker_client import contract
from reranker_client.certificate import FILENAME
from reranker_client.contract import CROSS_ENCODER, ENSEMBLE, LENGTH_ROUTER, TOKENIZER, WINDOW_ENSEMBLE, WINDOW_REDUCE

# The code each Python model's version folder carries, copied from the committed repository.
MODEL_CODE = {
    TOKENIZER: (
        "model.py",
        "pair_tokenization.py",
        "pair_windows.py",
        "text_cuts.py",
        "padding_metrics.py",
        "deferred_counters.py",
    ),
    LENGTH_ROUTER: ("model.py", "routing.py"),
    WINDOW_REDUCE: ("model.py", "reduction.py"),
}
CROSS_ENCODER_CODE = ("model.py", "shape_limits.py")  # the Python backend's cross-encoder
# ... and the length router's split rule, which it applies inside its own runs, and the tokenizer's
# off-request-path counters (one source each, copied).
CROSS_ENCODER_SHARED = ((LENGTH_ROUTER, "routing.py"), (TOKENIZER, "deferred_counters.py"))
# Every code file a Python-backend class model's version folder holds, besides the contract.
CROSS_ENCODER_FILES = (*CROSS_ENCODER_CODE, *(filename for _, filename in CROSS_ENCODER_SHARED))
# Every Python model reads tensor names from the wire contract; it is copied from the client
# package into each one's version folder (Triton puts no shared module on their path).
CONTRACT_SOURCE = Path(contract.__file__)
CONTRACT_FILE = "contract.py"
TOKENIZER_CODE = MODEL_CODE[TOKENIZER]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# The ensemble's version folder holds no file, and `aws s3 sync`, `gsutil rsync` and most
# object stores drop empty folders: without rerank/1/ Triton refuses to load the ensemble.
# Triton ignores a plain file there (checked on 2.51: tests serve exported repositories).
ENSEMBLE_PLACEHOLDER = "placeholder.txt"
PLACEHOLDER_TEXT = (
    "Keeps this version folder in object storage (empty folders are dropped by "
    "`aws s3 sync` / `gsutil rsync`); Triton ignores it.\n"
)


def code_differences(repo: Path) -> list[str]:
    """The serving code files of an exported repository that differ from (or lack) the checkout's:
    a benchmark that reuses an export would otherwise measure the code it was exported with."""
    expected: dict[Path, Path] = {}
    for name, files in MODEL_CODE.items():
        for filename in files:
            expected[Path(name, "1", filename)] = SOURCE_REPOSITORY / name / "1" / filename
        expected[Path(name, "1", CONTRACT_FILE)] = CONTRACT_SOURCE
    for folder in sorted(repo.glob(f"{CROSS_ENCODER}*/1/model.py")):  # Python-backend class models only
        version = folder.parent.relative_to(repo)
        for filename in CROSS_ENCODER_CODE:
            expected[version / filename] = SOURCE_REPOSITORY / CROSS_ENCODER / "1" / filename
        for model, filename in CROSS_ENCODER_SHARED:
            expected[version / filename] = SOURCE_REPOSITORY / model / "1" / filename
        expected[version / CONTRACT_FILE] = CONTRACT_SOURCE
    return [
        str(relative)
        for relative, source in sorted(expected.items())
        if not (repo / relative).is_file() or (repo / relative).read_bytes() != source.read_bytes()
    ]


def copy_onnx(src: Path, dest: Path) -> None:
    """Copy a graph and its external data file, if any, keeping the data file's name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    data = src.with_name(src.name + ".data")
    if data.exists():
        if dest.name != src.name:
            raise ValueError("external data is referenced by file name; keep the graph's name")
        shutil.copy2(data, dest.with_name(data.name))


def write_repository(
    out_dir: Path, spec: RepositorySpec, tokenizer_dir: Path, place_model, manifest: dict, parity: dict, fixture: dict
) -> Path:
    """`place_model(cross_encoder_dir)` puts the model files; everything else is written here."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        classes = length_classes(spec.limits)
        for name in (TOKENIZER, LENGTH_ROUTER, WINDOW_REDUCE, ENSEMBLE, WINDOW_ENSEMBLE, *(c.model for c in classes)):
            (staging / name / "1").mkdir(parents=True)
        for name in (ENSEMBLE, WINDOW_ENSEMBLE):
            (staging / name / "1" / ENSEMBLE_PLACEHOLDER).write_text(PLACEHOLDER_TEXT)
        for name, files in MODEL_CODE.items():
            for filename in files:
                shutil.copy2(SOURCE_REPOSITORY / name / "1" / filename, staging / name / "1" / filename)
            shutil.copy2(CONTRACT_SOURCE, staging / name / "1" / CONTRACT_FILE)
        for filename in TOKENIZER_FILES:
            if (tokenizer_dir / filename).exists():
                shutil.copy2(tokenizer_dir / filename, staging / TOKENIZER / "1" / filename)
        for length_class in classes:
            if spec.backend == "python":
                for filename in CROSS_ENCODER_CODE:
                    shutil.copy2(
                        SOURCE_REPOSITORY / CROSS_ENCODER / "1" / filename,
                        staging / length_class.model / "1" / filename,
                    )
                for model, filename in CROSS_ENCODER_SHARED:
                    shutil.copy2(
                        SOURCE_REPOSITORY / model / "1" / filename, staging / length_class.model / "1" / filename
                    )
                shutil.copy2(CONTRACT_SOURCE, staging / length_class.model / "1" / CONTRACT_FILE)
            warmup = staging / length_class.model / WARMUP_FOLDER
            warmup.mkdir()
            for filename, content in warmup_files(spec.limits, length_class).items():
                (warmup / filename).write_bytes(content)
        place_model(staging / CROSS_ENCODER)
        if spec.backend == "tensorrt":
            # No plan built here (no TensorRT on this host): no empty version folder either. The
            # class models stay unloadable until build_plan.sh installs every class's certified
            # plan at once (issue 25 item 8); an empty `1/` would look like a served version.
            for length_class in classes:
                version = staging / length_class.model / "1"
                if not any(version.iterdir()):
                    version.rmdir()
        # Every class model serves the same graph; a TensorRT class model its own plan (one profile
        # each: export/plan_memory.py), placed by place_model.
        for length_class in classes[1:] if spec.backend != "tensorrt" else []:
            link_model_files(staging / CROSS_ENCODER / "1", staging / length_class.model / "1")
        # Configs last: the engine cache key is a hash of the graph just placed.
        graph = staging / CROSS_ENCODER / "1" / "model.onnx"
        if spec.backend == "onnxruntime" and not spec.on_cpu and graph.exists() and not spec.engine_cache_prefix:
            spec = replace(spec, engine_cache_prefix=engine_cache_prefix_for(graph))
        if spec.engine_cache_prefix:
            manifest = {**manifest, "engine_cache_prefix": spec.engine_cache_prefix}
        for name, config in all_configs(spec).items():
            (staging / name / "config.pbtxt").write_text(to_pbtxt(config))
            if spec.backend == "onnxruntime" and name in {c.model for c in classes}:
                (staging / name / "configs").mkdir()
                (staging / name / "configs" / f"{BUILD_ONCE_CONFIG}.pbtxt").write_text(
                    to_pbtxt(build_once_config(config))
                )
        (staging / CROSS_ENCODER / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        # Compact: the certificate carries token ids and must stay small (well under 1 MB).
        (staging / FILENAME).write_text(
            json.dumps(fixture, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
        )
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def link_model_files(source: Path, target: Path) -> None:
    """Hard-link (copy where links are not possible) the model files of one version folder into
    another: a 2 GB graph is stored once on disk."""
    for path in source.iterdir():
        if path.is_file() and path.suffix in (".onnx", ".data", ".plan"):
            dest = target / path.name
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    previous = None
    if out_dir.exists():
        previous = out_dir.with_name(f".{out_dir.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        out_dir.rename(previous)
    staging.rename(out_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


__all__ = ["write_repository", "copy_onnx", "ENSEMBLE", "ENSEMBLE_PLACEHOLDER"]
