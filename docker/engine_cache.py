"""The TensorRT engine cache on disk: a per-pod folder Triton writes, and a shared folder of
finished entries that pods seed from and the prebuild Job fills (issue 27 items 6 and 7).

Layout of the shared cache (a ReadWriteMany volume):

    <shared>/<GPU name>-trt<TensorRT version>/<model hash>/   one entry: the engines of one model
        .complete                                             written last: {name: size} of every file
        bge_0123456789abcdef_<graph hash>_sm89.engine ...
    <shared>/<GPU key>/.tmp-<model hash>-<pid>-<random>/      an entry being written

The model hash is the repository's `engine_cache_prefix` (manifest.json; the export derives it
from the served graph's bytes), which also begins every engine file name ONNX Runtime writes for
that model (`trt_engine_cache_prefix`).

- Writer: copies the model's files into a temporary folder, writes `.complete` (names and sizes),
  then renames the folder into place. rename(2) is atomic on one filesystem, NFS included, and
  fails when the target exists, so the first writer wins and a reader never sees half an entry.
- Reader: takes only an entry whose `.complete` lists every file at its size; anything else (a
  writer killed mid-copy, a truncated file) is not an entry. It copies only the current model's
  entry, and refuses one larger than what the per-pod volume may take (SEED_MAX_FRACTION).
- Pruning (only the prebuild Job does it): other models' entries, files of the flat layout used
  before entries existed, and temporary folders older than STALE_TEMP_S.

The per-pod cache (an emptyDir Triton writes in place) has a marker of its own: `.complete`
records each file's size and modification time when the server last became ready. At start,
any file that is not recorded as it is now (written or rewritten since: a rebuild killed midway)
is removed; without a marker everything is. So a marker from an earlier good run never vouches
for a file a later, killed build left behind.

Standard library only: it ships in the serving image next to serve.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".complete"
TEMP_PREFIX = ".tmp-"
# A seeded entry may fill at most this share of the per-pod volume (trtCache.size): Triton also
# writes its timing cache there, and the kubelet evicts a pod whose emptyDir exceeds its
# sizeLimit. An entry past it is not copied (the pod builds, and says why).
SEED_MAX_FRACTION = 0.8
# A temporary entry folder this old belongs to a writer that died (copying one model's engines,
# a few GB, takes minutes even on a slow NFS share); the prebuild Job removes it.
STALE_TEMP_S = 3600.0
COPY_CHUNK_BYTES = 8 * 2**20
# The model hash as the export writes it (export/triton_config.py ENGINE_CACHE_PREFIX): it
# becomes a folder name here.
MODEL_HASH = re.compile(r"[A-Za-z0-9_]{1,64}")
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity ("5Gi", "500M", "1073741824"): the chart passes
    trtCache.size as it is, so the volume's limit is written once."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kMGT]i?|)\s*", text)
    if not match:
        raise ValueError(f"not a byte quantity: {text!r} (e.g. 5Gi, 500Mi, 1073741824)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def check_model_hash(model_hash: str) -> str:
    if not MODEL_HASH.fullmatch(model_hash):
        raise ValueError(f"model hash must match {MODEL_HASH.pattern}, got {model_hash!r}")
    return model_hash


def model_hash_from_repository(repository: Path | None) -> str | None:
    """The repository's engine_cache_prefix (manifest.json), or None (no manifest, or a backend
    without an engine cache)."""
    if repository is None:
        return None
    try:
        manifest = json.loads((repository / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    prefix = manifest.get("engine_cache_prefix") if isinstance(manifest, dict) else None
    return check_model_hash(prefix) if prefix else None


def model_hash_from_configs(configs: dict[str, dict]) -> str | None:
    """The model hash the loaded configs carry: the shortest trt_engine_cache_prefix (class 0's;
    the other classes append `_c<i>`). None when no model uses the TensorRT EP's cache."""
    prefixes = []
    for config in configs.values():
        accelerators = config.get("optimization", {}).get("execution_accelerators", {})
        for accelerator in accelerators.get("gpu_execution_accelerator", []):
            prefix = accelerator.get("parameters", {}).get("trt_engine_cache_prefix")
            if accelerator.get("name") == "tensorrt" and prefix:
                prefixes.append(prefix)
    return check_model_hash(min(prefixes, key=len)) if prefixes else None


def model_files(folder: Path, model_hash: str) -> list[Path]:
    """The files of one model in a flat folder: ONNX Runtime names them `<prefix>_...`."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(f"{model_hash}_"))


# --- copying --------------------------------------------------------------------------------


def copy_file(src: Path, dest: Path, size: int | None = None) -> int:
    """dest appears whole or not at all (temporary name, then rename); with `size`, a source of
    another length is refused. Returns the bytes copied."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    copied = 0
    try:
        with open(src, "rb") as reader, open(tmp, "wb") as writer:
            while chunk := reader.read(COPY_CHUNK_BYTES):
                writer.write(chunk)
                copied += len(chunk)
                if size is not None and copied > size:
                    break
        if size is not None and copied != size:
            raise OSError(f"{src}: {copied} bytes where the entry's marker says {size}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return copied


# --- the per-pod cache --------------------------------------------------------------------------


def _state(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def mark_local_complete(local: Path) -> None:
    """Record every file as it is now (the server is ready: every engine it needed is built)."""
    record = {p.name: _state(p) for p in sorted(local.iterdir()) if p.is_file() and p.name != MARKER}
    tmp = local / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, local / MARKER)


def prepare_local(local: Path) -> list[str]:
    """Remove what a killed build may have left: every file not recorded by the marker as it is
    now (everything, without a marker). Returns the names removed."""
    local.mkdir(parents=True, exist_ok=True)
    try:
        record = json.loads((local / MARKER).read_text())
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    removed = []
    for entry in sorted(local.iterdir()):
        if entry.name == MARKER:
            continue
        if entry.is_file() and not entry.is_symlink() and record.get(entry.name) == _state(entry):
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        removed.append(entry.name)
    if not record:
        (local / MARKER).unlink(missing_ok=True)
    return removed


# --- the shared cache ---------------------------------------------------------------------------


def read_entry(entry: Path) -> dict[str, int] | None:
    """{name: size} of a finished entry; None when the folder is not one (no marker, a listed
    file missing or of another size)."""
    try:
        listed = json.loads((entry / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(listed, dict) or not listed:
        return None
    for name, size in listed.items():
        path = entry / name
        if "/" in name or name.startswith(".") or not path.is_file() or path.stat().st_size != size:
            return None
    return {str(k): int(v) for k, v in listed.items()}


@dataclass
class SeedResult:
    copied: list[str] = field(default_factory=list)
    bytes: int = 0
    reason: str = ""  # why nothing was copied


def seed(local: Path, gpu_dir: Path | None, model_hash: str | None, limit_bytes: int | None) -> SeedResult:
    """Copy the current model's finished entry into the per-pod cache, files it lacks only;
    nothing when the entry would take more than SEED_MAX_FRACTION of `limit_bytes`."""
    if gpu_dir is None:
        return SeedResult(reason="no shared cache")
    if model_hash is None:
        return SeedResult(
            reason="the model hash is unknown (no manifest.json with engine_cache_prefix in --repository, "
            "no --model-hash): nothing seeded, engines are built here"
        )
    entry = gpu_dir / model_hash
    listed = read_entry(entry)
    if listed is None:
        return SeedResult(reason=f"no finished entry {entry}")
    wanted = {name: size for name, size in listed.items() if not (local / name).exists()}
    if limit_bytes is not None:
        present = sum(p.stat().st_size for p in local.iterdir() if p.is_file())
        budget = int(limit_bytes * SEED_MAX_FRACTION)
        total = present + sum(wanted.values())
        if total > budget:
            return SeedResult(
                reason=f"entry {entry} needs {total} bytes with what is here, over {SEED_MAX_FRACTION:.0%} of the "
                f"per-pod cache's {limit_bytes} (trtCache.size): not seeded, engines are built here; "
                f"raise trtCache.size"
            )
    result = SeedResult()
    for name, size in sorted(wanted.items()):
        result.bytes += copy_file(entry / name, local / name, size)
        result.copied.append(name)
    return result


def publish(local: Path, gpu_dir: Path, model_hash: str) -> tuple[str, int]:
    """Publish the model's files from the per-pod cache as one entry: ("published", bytes),
    ("exists", 0) when a finished entry is already there, or ("nothing", 0)."""
    files = model_files(local, model_hash)
    if not files:
        return "nothing", 0
    target = gpu_dir / model_hash
    if read_entry(target) is not None:
        return "exists", 0
    gpu_dir.mkdir(parents=True, exist_ok=True)
    tmp = gpu_dir / f"{TEMP_PREFIX}{model_hash}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        listed = {f.name: copy_file(f, tmp / f.name) for f in files}
        (tmp / MARKER).write_text(json.dumps(listed, indent=1) + "\n")
        if target.exists() and read_entry(target) is None:
            # Not an entry (e.g. a folder from an older layout): nothing can read it.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another writer renamed first
            if read_entry(target) is not None:
                return "exists", 0
            raise
        return "published", sum(listed.values())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def entry_bytes(gpu_dir: Path, model_hash: str) -> int | None:
    listed = read_entry(gpu_dir / model_hash)
    return None if listed is None else sum(listed.values())


# Finished entries of other models the prebuild Job's prune keeps, newest first: the previous
# release's, so that `helm rollback` (its pre-rollback Job, then its pods) seeds instead of
# rebuilding for tens of minutes.
PRUNE_KEEP_PREVIOUS = 1

# The cross-pod build lock in each GPU folder (build_once.py holds it during its build pass).
BUILD_LOCK_NAME = ".build.lock"


def prune(gpu_dir: Path, keep: str, now: float | None = None, previous: int = PRUNE_KEEP_PREVIOUS) -> list[str]:
    """Remove every other model's entry but the `previous` newest finished ones (a `helm rollback`
    runs the previous release's prebuild Job and rolls its pods back: their entry must still be
    there), flat files of the layout before entries, and temporary folders older than
    STALE_TEMP_S (younger ones may be a pod publishing now). An item that vanishes meanwhile (a
    writer renaming its temporary folder, another prune) is skipped. Returns the names removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    if not gpu_dir.is_dir():
        return removed
    finished = []
    for item in gpu_dir.iterdir():
        if item.name not in (keep, BUILD_LOCK_NAME) and not item.is_symlink() and read_entry(item) is not None:
            try:
                finished.append(((item / MARKER).stat().st_mtime, item.name))
            except FileNotFoundError:
                continue
    kept = {name for _, name in sorted(finished, reverse=True)[:previous]}
    for item in sorted(gpu_dir.iterdir()):
        if item.name in (keep, BUILD_LOCK_NAME) or item.name in kept:
            continue  # the lock may be held by a pod's build pass: removing it would split the lock
        try:
            if item.name.startswith(TEMP_PREFIX) and now - item.lstat().st_mtime < STALE_TEMP_S:
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
        except FileNotFoundError:
            continue
        removed.append(item.name)
    return removed
    for item in sorted(gpu_dir.iterdir()):
        if item.name in (keep, BUILD_LOCK_NAME):
            continue  # the lock may be held by a pod's build pass: removing it would split the lock
        if item.name.startswith(TEMP_PREFIX) and now - item.stat().st_mtime < STALE_TEMP_S:
            continue
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() and not item.is_symlink() else item.unlink()
        removed.append(item.name)
    return removed
