"""The export as a list of named stages, each timed and reported:

    resolve -> load -> onnx_fp32 -> parity_fp32 -> [fp16 -> parity_fp16] -> [tensorrt] -> repository
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from export import certificate, model_loading, parity
from export.fp16_conversion import FP32_ESCALATION, convert_to_fp16_in_subprocess, tensorrt_fp32_layers
from export.onnx_export import export_onnx
from export.repository import SOURCE_REPOSITORY, copy_onnx, write_repository
from export.settings import (DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_LENGTH, DEFAULT_MODEL_ID, MAX_WINDOWS_PER_PASSAGE,
                             MAX_WINDOWS_PER_REQUEST, ServingLimits)
from export.tensorrt_build import (PlanBuild, build_and_certify_plan, tensorrt_available, timing_cache_path,
                                   write_build_files)
from export.tensorrt_profiles import check_consistency, profiles_for
from export.triton_config import RepositorySpec


class ParityFailed(RuntimeError):
    pass


@dataclass
class ExportArgs:
    model: str = DEFAULT_MODEL_ID
    repo: Path = Path("runs/model_repository")
    backend: str = "onnxruntime"
    precision: str = "fp16"
    max_length: int = DEFAULT_MAX_LENGTH
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    revision: str | None = None
    work_dir: Path | None = None  # keep intermediate ONNX files here
    tokenizer_instances: int = 2
    cpu_threads: int = 0


@dataclass
class StageLog:
    stages: list[dict] = field(default_factory=list)

    def run(self, name: str, func, *args, **kwargs):
        print(f"[export] {name} ...", flush=True)
        start = time.perf_counter()
        result = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.stages.append({"stage": name, "seconds": round(seconds, 2), "peak_rss_mib": peak_rss_mib()})
        print(f"[export] {name} done in {seconds:.1f}s (peak memory {peak_rss_mib():.0f} MiB)", flush=True)
        return result


def peak_rss_mib() -> float:
    """Peak resident memory of the largest process so far: the exporter or a finished fp16
    conversion child (Linux reports KiB)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def release_memory() -> None:
    """Collect, then hand glibc's free heap back to the OS: without malloc_trim a process that once
    held the 2.27 GB graph keeps that memory resident for the rest of the export."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def pair_tokenization_module():
    """The serving tokenizer code itself (model_repository/tokenizer/1/pair_tokenization.py),
    imported once under the name the server uses."""
    if "pair_tokenization" not in sys.modules:
        path = SOURCE_REPOSITORY / "tokenizer" / "1" / "pair_tokenization.py"
        spec = importlib.util.spec_from_file_location("pair_tokenization", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["pair_tokenization"] = module
        spec.loader.exec_module(module)
    return sys.modules["pair_tokenization"]


def load_pair_tokenizer(tokenizer_dir: Path, limits: ServingLimits):
    return pair_tokenization_module().PairTokenizer(str(tokenizer_dir / "tokenizer.json"), limits.max_length,
                                                    limits.query_max_length, limits.buckets,
                                                    limits.max_text_bytes, MAX_WINDOWS_PER_PASSAGE,
                                                    MAX_WINDOWS_PER_REQUEST)


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def file_mib(path: Path) -> float:
    size = path.stat().st_size
    data = path.with_name(path.name + ".data")
    return (size + (data.stat().st_size if data.exists() else 0)) / 2**20


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__}


def run_export(args: ExportArgs) -> dict:
    limits = ServingLimits(max_length=args.max_length, max_batch_size=args.max_batch_size)
    spec = RepositorySpec(backend=args.backend, precision=args.precision, limits=limits,
                          tokenizer_instances=args.tokenizer_instances, cpu_threads=args.cpu_threads)
    problems = check_consistency(limits, profiles_for(limits))
    if problems:
        raise ValueError("inconsistent limits: " + "; ".join(problems))
    log = StageLog()
    owned_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="export-")) if owned_work else Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, spec, log, work)
    finally:
        if owned_work:
            shutil.rmtree(work, ignore_errors=True)


def served_artifact(backend: str, precision: str) -> dict:
    """What Triton serves for this backend and precision, and what certifies it: the manifest and
    parity.json say it, so no gate is read as covering an artifact it never ran."""
    if backend == "python":
        graph = "fused fp16 ONNX graph" if precision == "fp16" else "fp32 ONNX graph"
        return {"file": "cross_encoder/1/model.onnx", "runtime": f"ONNX Runtime CPU ({graph})",
                "certified_by": f"export gate {precision} (this exact graph and runtime); make verify on the server"}
    if backend == "onnxruntime":
        return {"file": "cross_encoder/1/model.onnx",
                "runtime": f"ONNX Runtime TensorRT EP, {precision} engine built from the fp32 graph at first load",
                "certified_by": "make verify against the live server on the target GPU (the export gate ran the "
                                "fp32 graph on ONNX Runtime CPU: a proxy for the engine, not the engine)"}
    return {"file": "cross_encoder/1/model.plan",
            "runtime": f"TensorRT plan ({precision}), built on the target GPU",
            "certified_by": "the plan build (certificate checked before the plan is placed) and make verify "
                            "(the export gate ran the fp32 graph on ONNX Runtime CPU: a proxy)"}


def _run(args: ExportArgs, spec: RepositorySpec, log: StageLog, work: Path) -> dict:
    limits = spec.limits
    source = log.run("resolve", model_loading.resolve, args.model, args.revision)
    model = log.run("load", model_loading.load_torch_model, source)
    tokenizer_dir = work / "tokenizer"
    model_loading.load_tokenizer(source).save_pretrained(tokenizer_dir)
    pair_tokenizer = load_pair_tokenizer(tokenizer_dir, limits)
    config = model.config
    # The served configs carry the model's own vocabulary size: the Python backend refuses ids
    # outside it (the exported graph clamps them to the same bound).
    limits = replace(limits, vocab_size=config.vocab_size)
    spec = replace(spec, limits=limits)
    parameters = sum(p.numel() for p in model.parameters())
    served = {"backend": args.backend, "precision": args.precision,
              **served_artifact(args.backend, args.precision)}
    model_info = {"id": source.model_id, "revision": source.revision, "files_sha256": source.file_sha256}

    fp32_path = log.run("onnx_fp32", export_onnx, model, work / "fp32" / "model.onnx", limits.max_length)
    fixture = log.run("certificate", certificate.build, pair_tokenizer, parity.torch_runner(model),
                      model=model_info, served=served)
    # The certificate holds PyTorch's logits: free the model (2.3 GB for the real one) for the rest.
    del model
    release_memory()
    reports = {"fp32": log.run("parity_fp32", parity.run_gate, "fp32", fixture,
                               parity.onnx_runner(ort_session(fp32_path)),
                               "fp32 ONNX graph on ONNX Runtime CPU",
                               "served" if args.backend == "python" and args.precision == "fp32"
                               else "proxy: the graph TensorRT or the fp16 conversion starts from")}
    _print_gate(reports["fp32"])
    _require(reports["fp32"])
    served_onnx = fp32_path
    fp16_report, fp16_attempts, trt_fp32_layers = None, [], []
    calibration = parity.calibration_feeds(pair_tokenizer)
    if args.precision == "fp16" and args.backend == "python":
        # Only the python backend serves ONNX Runtime's fused fp16 graph; TensorRT lowers the fp32
        # graph itself, so the conversion (14-18 GB of RAM for the real model) runs only here.
        fp16_path = work / "fp16" / "model.onnx"
        fp16_path.parent.mkdir(parents=True, exist_ok=True)
        for level, extra_ops in enumerate(FP32_ESCALATION):
            suffix = f"_level{level}" if level else ""
            fp16_report = log.run("fp16" + suffix, convert_to_fp16_in_subprocess, fp32_path, fp16_path,
                                  config.num_attention_heads, config.hidden_size, calibration, extra_ops)
            reports["fp16"] = log.run("parity_fp16" + suffix, parity.run_gate, "fp16", fixture,
                                      parity.onnx_runner(ort_session(fp16_path)),
                                      "fused fp16 ONNX graph on ONNX Runtime CPU", "served")
            release_memory()
            fp16_attempts.append({"kept_fp32_ops": fp16_report.kept_fp32_ops,
                                  "max_abs_logit": reports["fp16"].max_abs_logit,
                                  "max_abs_score": reports["fp16"].max_abs_score,
                                  "passed": reports["fp16"].passed})
            _print_gate(reports["fp16"])
            if reports["fp16"].passed or level + 1 == len(FP32_ESCALATION):
                break
            print(f"[export] fp16 gate failed; converting again with "
                  f"{', '.join(FP32_ESCALATION[level + 1])} kept in fp32", flush=True)
        _require(reports["fp16"], fp16_attempts)
        served_onnx = fp16_path
    elif args.precision == "fp16" and args.backend == "tensorrt":
        # The plan builders pin these layers to fp32 (normalisations, softmax, and whatever leaves the
        # fp16 range on the calibration texts, measured on this very graph).
        trt_fp32_layers = log.run("tensorrt_fp32_layers", tensorrt_fp32_layers, fp32_path, calibration, work)

    served_sha256 = {served["file"] if args.backend != "tensorrt" else "cross_encoder/tensorrt/model.onnx":
                     certificate.sha256(served_onnx)}
    fixture["model"]["served_sha256"] = served_sha256

    def place_model(cross_encoder_dir: Path) -> None:
        if args.backend in ("onnxruntime", "python"):
            copy_onnx(served_onnx, cross_encoder_dir / "1" / "model.onnx")
            return
        copy_onnx(fp32_path, cross_encoder_dir / "tensorrt" / "model.onnx")
        build = PlanBuild(limits=limits, precision=args.precision, fp32_layers=tuple(trt_fp32_layers),
                          workspace_bytes=spec.workspace_bytes)
        write_build_files(cross_encoder_dir / "tensorrt", build)
        if tensorrt_available():
            log.run("tensorrt", build_and_certify_plan, fp32_path, cross_encoder_dir / "1" / "model.plan",
                    build, fixture, timing_cache_path())
        else:
            print("[export] tensorrt: the `tensorrt` package is not importable here; build the plan on "
                  "the GPU host with cross_encoder/tensorrt/build_plan.sh (it certifies the plan before "
                  "placing it)", flush=True)

    manifest = {
        "model": {**model_info, "served_sha256": served_sha256, "parameters": parameters,
                  "layers": config.num_hidden_layers, "hidden_size": config.hidden_size},
        "served": served,
        "export_args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        "limits": asdict(limits), "served_graph": served_onnx.parent.name,
        "certificate": {"file": certificate.FILENAME, "pairs": len(fixture["pairs"]),
                        "ranking_passages": len(fixture["ranking"]["passages"]),
                        "languages": fixture["languages"], "noise_floor": fixture["noise_floor"]},
        "tensorrt_fp32_layers": trt_fp32_layers,
        "versions": versions(), "stages": log.stages,
        "fp16": {**asdict(fp16_report), "attempts": fp16_attempts} if fp16_report else None,
    }
    parity_doc = {"source": manifest["model"], "served": served, "export_args": manifest["export_args"],
                  "versions": manifest["versions"], "noise_floor": fixture["noise_floor"],
                  "gates": {k: v.to_dict() for k, v in reports.items()},
                  "fp16_attempts": fp16_attempts}
    repo = log.run("repository", write_repository, args.repo, spec, tokenizer_dir, place_model,
                   manifest, parity_doc, fixture)
    summary = {"repository": str(repo), "stages": log.stages,
               "files_mib": {p.name: round(file_mib(p), 1) for p in (fp32_path, served_onnx)},
               "peak_rss_mib": round(peak_rss_mib(), 0),
               "parity": {k: {"max_abs_logit": v.max_abs_logit, "max_abs_score": v.max_abs_score,
                              "passed": v.passed} for k, v in reports.items()}}
    return summary


def _print_gate(result: parity.ParityResult) -> None:
    status = "PASS" if result.passed else "FAIL"
    print(f"[export] parity {result.precision}: {status} max|d logit|={result.max_abs_logit:.2e} "
          f"(bound {result.thresholds['max_abs_logit']:.2e}) max|d score|={result.max_abs_score:.2e} "
          f"padding={result.padding_max_abs_logit:.2e} top10 set={result.top10_same_set} "
          f"tau={result.kendall_tau:.4f} ({result.pairs} held-out pairs, {result.truncated_pairs} truncated)",
          flush=True)


def _require(result: parity.ParityResult, attempts: list[dict] | None = None) -> None:
    if result.passed:
        return
    message = f"parity gate ({result.precision}) failed: " + "; ".join(result.failures)
    if attempts:
        message += "; tried " + "; ".join(
            f"[{', '.join(a['kept_fp32_ops'])}] in fp32: max|d logit| {a['max_abs_logit']:.3g}, "
            f"max|d score| {a['max_abs_score']:.3g}" for a in attempts) + ". --precision fp32 exports without fp16"
    raise ParityFailed(message)
