#!/usr/bin/env python3
"""Every pod proves its own engine before it takes traffic (issue 25).

After Triton is ready (models loaded, engines built, warm-up done) and before the pod may be
ready, the launcher (serve.py in the image, local_triton/server.py for `make serve`) runs two
checks on this pod's own device and writes one verdict file:

1. engines: TensorRT really took each class model. ONNX Runtime's TensorRT EP does not fail a
   load when TensorRT rejects the graph: the nodes run on the CUDA EP in fp32 (slow, silent;
   "TensorRT accelerator is set" is logged either way). With explicit profiles the EP builds
   its engine at session creation and writes `<trt_engine_cache_path>/<trt_engine_cache_prefix>_
   <graph hash>_sm<compute capability>.engine` (onnxruntime tensorrt_execution_provider.cc,
   CreateNodeComputeInfoFromGraph: `cache_path = GetCachePath(cache_path_, cache_prefix_) +
   cache_suffix`, `cache_hw_compat = "_sm" + compute_capability_`), so after warm-up a class
   model configured for TensorRT without its engine file did not reach TensorRT. A plan model
   (platform tensorrt_plan) has no fallback: it is checked ready with its own profile listed.
2. certificate: the repository's certificate.json (or a stated subset: `--certify-pairs N` keeps
   N pairs, one per language first, plus the 100-passage ranking list) goes through the local
   `rerank` ensemble and is compared by the client package's own comparison
   (reranker_client.verify, the code `helm test` runs), with the thresholds of the precision
   the repository was exported for. `--certificate FILE` names it where the pod has no
   repository to read (a uri repository: the chart mounts helmTest.certificateConfigMap);
   `--certificate=none`: no certificate at all, so check 1 alone gates readiness, the start and
   the verdict line say NO CERTIFICATE, reranker_selfcert_certificate_missing is 1 and the
   verdict is not `passed` (serve.py publishes nothing to the shared cache).

The verdict (JSON, written atomically) is what readiness reads: `probe.py --verdict FILE` is
unhealthy until the file exists and says ready. Mode `fail` (default): a failed check keeps the
pod unready (Triton keeps running, so the log and the metrics can be read); `warn`: logged and
exported, the pod may become ready. One log line says the verdict. A Prometheus text endpoint
(`--certify-metrics-port`) exports it: reranker_selfcert_pass, _max_abs_logit, _max_abs_score,
_info{device, certificate_sha256}, reranker_tensorrt_engine_taken{model}.

Imports only the standard library at module level; the certificate step imports reranker_client
(numpy + tritonclient[grpc]), which the serving image installs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = ("off", "fail", "warn")
DEFAULT_VERDICT = Path("/tmp/reranker-selfcert.json")  # /tmp: a per-pod emptyDir in the chart
LOG_PREFIX = "[self-certify]"


def add_arguments(parser: argparse.ArgumentParser, repository_option: bool = True) -> None:
    """The launcher options (serve.py and local_triton/server.py take the same)."""
    parser.add_argument(
        "--self-certify",
        choices=MODES,
        default="off",
        help="after warm-up, check TensorRT took every class model and run the certificate through "
        "`rerank`; fail: stay unready on a failed check; warn: log and export only",
    )
    if repository_option:
        parser.add_argument("--repository", type=Path, default=None, help="the model repository (certificate.json)")
    parser.add_argument(
        "--certificate",
        default=None,
        help="the certificate.json to send (default: --repository's); `none`: no certificate is available "
        "(a uri repository without one mounted): the engine check still runs and gates readiness, the "
        "missing certificate is logged at start and exported (reranker_selfcert_certificate_missing), and "
        "nothing is published to the shared engine cache",
    )
    parser.add_argument("--grpc-url", default="127.0.0.1:8001", help="this pod's Triton gRPC address")
    parser.add_argument("--certify-pairs", type=int, default=0, help="certificate pairs to send (0: all)")
    parser.add_argument("--certify-timeout", type=float, default=300.0)
    parser.add_argument("--verdict", type=Path, default=DEFAULT_VERDICT, help="where readiness reads the verdict")
    parser.add_argument("--certify-metrics-port", type=int, default=0, help="Prometheus text endpoint (0: none)")
    parser.add_argument("--certify-metrics-address", default="0.0.0.0")


def device_name() -> str:
    """The GPU this pod runs on, as nvidia-smi names it; `cpu` where there is none."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()
        return out[0].replace(", ", " sm") if out and out[0].strip() else "cpu"
    except (OSError, subprocess.SubprocessError):
        return "cpu"


# --- 1. engines -------------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 10.0, data: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def loaded_configs(http_url: str) -> dict[str, dict]:
    """name -> the config Triton loaded (its JSON form), for every READY model."""
    index = _get_json(f"{http_url.rstrip('/')}/v2/repository/index", data=b"{}")
    return {
        entry["name"]: _get_json(f"{http_url.rstrip('/')}/v2/models/{entry['name']}/config")
        for entry in index
        if entry.get("state") == "READY"
    }


def _tensorrt_accelerator(config: dict) -> dict | None:
    accelerators = config.get("optimization", {}).get("execution_accelerators", {})
    for accelerator in accelerators.get("gpu_execution_accelerator", []):
        if accelerator.get("name") == "tensorrt":
            return accelerator.get("parameters", {})
    return None


def engine_checks(configs: dict[str, dict], cache_root: Path | None = None) -> dict[str, dict]:
    """model -> {"taken": bool, "detail": str} for every model that should run on TensorRT.

    `cache_root` replaces the configured trt_engine_cache_path (a test's folder); the prefixes of
    all models are known, so one class's files are never credited to another (class 0's prefix
    is a prefix of class 1's)."""
    ort_models = {name: params for name, c in configs.items() if (params := _tensorrt_accelerator(c)) is not None}
    prefixes = {name: params.get("trt_engine_cache_prefix", "") for name, params in ort_models.items()}
    checks: dict[str, dict] = {}
    for name, params in sorted(ort_models.items()):
        folder = cache_root or Path(params.get("trt_engine_cache_path", "."))
        mine = prefixes[name]
        longer = [p for p in prefixes.values() if p != mine and p.startswith(mine)]
        files = sorted(
            f.name
            for f in (folder.glob(f"{mine}_*.engine") if mine else folder.glob("*.engine"))
            if not any(f.name.startswith(p + "_") for p in longer)
        )
        checks[name] = {
            "taken": bool(files),
            "detail": f"{files[0]} in {folder}"
            if files
            else f"no {mine + '_' if mine else ''}*.engine in {folder} after warm-up: TensorRT did not take "
            f"{name} (its nodes run on the CUDA EP in fp32); look in the log for 'TensorRT EP' errors, "
            f"'failed to parse' or a 2 GiB protobuf message",
        }
    for name, config in sorted(configs.items()):
        if config.get("platform") == "tensorrt_plan":
            profiles = [p for group in config.get("instance_group", []) for p in group.get("profile", [])]
            checks[name] = {
                "taken": bool(profiles),
                "detail": f"plan loaded with profile {','.join(profiles)}"
                if profiles
                else f"plan {name} loaded without an instance_group profile: Triton would run profile 0 "
                "for every shape",
            }
    return checks


# --- 2. certificate ---------------------------------------------------------------------------


def certificate_subset(fixture: dict, pairs: int) -> dict:
    """`pairs` pairs (one per language first, then in order) and the whole ranking list."""
    if pairs <= 0 or pairs >= len(fixture["pairs"]):
        return fixture
    first_of: dict[str, int] = {}
    for i, pair in enumerate(fixture["pairs"]):
        first_of.setdefault(pair["language"], i)
    first = sorted(first_of.values())
    rest = [i for i in range(len(fixture["pairs"])) if i not in set(first)]
    keep = sorted((first + rest)[:pairs])
    return {**fixture, "pairs": [fixture["pairs"][i] for i in keep]}


NO_CERTIFICATE = "none"


def missing_certificate() -> dict:
    """The certificate part of a verdict where none was available: not passed (so nothing is
    published as certified), but no failure either (the engine check alone gates readiness)."""
    return {"passed": False, "missing": True, "failures": [], "certificate_sha256": ""}


def int8_cpu_check(fixture: dict, cpuinfo: Path = Path("/proc/cpuinfo")) -> dict | None:
    """An int8 certificate records the CPU its export gate ran on (served.int8_gate_cpu): dynamic
    int8's error depends on the int8 GEMM kernel ONNX Runtime picks for the CPU (export/cpu_isa.py),
    so a node with another kernel serves numbers the export never measured. This node's own
    certificate run is what decides; this says why, where it fails (review of issue 31: a graph
    exported on a VNNI host served on AVX2 failed with nothing naming the CPU). None: no record."""
    recorded = (fixture.get("served") or {}).get("int8_gate_cpu")
    if not recorded:
        return None
    try:
        from export import cpu_isa  # the repository checkout (local launcher)
    except ImportError:  # the serving image copies it beside this file
        import cpu_isa  # type: ignore[no-redef]
    if "int8_weights" in recorded:
        weights_uint8 = recorded["int8_weights"] == "uint8"
        exported = recorded["mlas_kernel_run"]
    else:  # written before the weight type was recorded: the recipe the export's rule shipped there
        weights_uint8 = cpu_isa.ships_uint8_weights(recorded.get("mlas_u8s8_kernel", ""))
        exported = cpu_isa.mlas_kernel_for(recorded.get("int8_flags", []), weights_uint8)
    here = cpu_isa.describe(cpuinfo, weights_uint8)
    here_kernel = here["mlas_kernel_run"]
    return {
        "export_kernel": exported,
        "export_cpu": recorded.get("cpu", ""),
        "here_kernel": here_kernel,
        "here_cpu": here["cpu"],
        "same_kernel": cpu_isa.same_kernel(exported, here_kernel),
    }


def cpu_mismatch_failure(cpu: dict | None) -> str | None:
    if cpu is None or cpu["same_kernel"]:
        return None
    return (
        f"this node's int8 kernel ({cpu['here_kernel']}, {cpu['here_cpu'] or 'unknown CPU'}) is not the one the "
        f"export was gated on ({cpu['export_kernel']}, {cpu['export_cpu'] or 'unknown CPU'}): export on a CPU "
        "like the serving nodes' or pin the pods to such nodes (docs/CPU.md)"
    )


def run_certificate(grpc_url: str, repository: Path, pairs: int, timeout: float) -> dict:
    from reranker_client.certificate import FixtureError, fixture_path, load_fixture
    from reranker_client.errors import RerankError
    from reranker_client.verify import verify

    path = fixture_path(repository)
    try:
        fixture = load_fixture(repository)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        doc = verify(grpc_url, certificate_subset(fixture, pairs), protocol="grpc", timeout=timeout)
    except (FixtureError, RerankError, OSError) as err:
        return {"passed": False, "failures": [f"no verdict: {type(err).__name__}: {err}"], "certificate_sha256": ""}
    cpu = int8_cpu_check(fixture)
    mismatch = cpu_mismatch_failure(cpu)
    failures = list(doc["failures"])
    if failures and mismatch:
        failures.insert(0, mismatch)  # the likely reason first
    return {
        "passed": bool(doc["passed"]),
        "pairs": doc["pairs"],
        "precision": doc["precision"],
        "max_abs_logit": doc["max_abs_logit"],
        "max_abs_score": doc["max_abs_score"],
        "failures": failures,
        "cpu": cpu,
        "seconds": doc["seconds"],
        "certificate_sha256": sha,
    }


# --- verdict, log line, metrics ---------------------------------------------------------------


def write_verdict(path: Path, verdict: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(verdict, indent=2) + "\n")
    os.replace(tmp, path)


def read_verdict(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def verdict_line(verdict: dict) -> str:
    cert = verdict["certificate"]
    engines = verdict["engines"]
    numbers = (
        f"max|d logit| {cert['max_abs_logit']:.3g} max|d score| {cert['max_abs_score']:.3g} over {cert['pairs']} rows"
        if "max_abs_logit" in cert
        else ""
    )
    taken = sum(e["taken"] for e in engines.values())
    if cert.get("missing"):
        numbers = "NO CERTIFICATE (engines checked only; not published)"
    cpu = cert.get("cpu")
    if cpu:  # an int8 certificate: which kernel ran it here, and which the export was gated on
        numbers += f"; int8 kernel here {cpu['here_kernel']} (export: {cpu['export_kernel']})"
    problems = [f"{m}: {e['detail']}" for m, e in engines.items() if not e["taken"]] + cert["failures"]
    return (
        f"{LOG_PREFIX} {'PASS' if verdict['passed'] else 'FAIL'} ({verdict['mode']}; "
        f"{'ready' if verdict['ready'] else 'NOT READY'}) device {verdict['device']}; certificate "
        f"{cert.get('certificate_sha256', '')[:12]} {numbers}; TensorRT took {taken}/{len(engines)} model(s)"
        + ("; " + "; ".join(problems) if problems else "")
    )


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def metrics_text(verdict: dict | None) -> str:
    """Prometheus text exposition (version 0.0.4) of the verdict."""
    lines = [
        "# HELP reranker_selfcert_pending 1 until this pod's self-certification has a verdict",
        "# TYPE reranker_selfcert_pending gauge",
        f"reranker_selfcert_pending {0 if verdict else 1}",
    ]
    if not verdict:
        return "\n".join(lines) + "\n"
    cert = verdict["certificate"]
    labels = f'device="{_label(verdict["device"])}",certificate_sha256="{cert.get("certificate_sha256", "")}"'
    gauges = [
        ("pass", "1 when every check passed (engines taken, certificate within thresholds)", int(verdict["passed"])),
        ("ready", "1 when the verdict lets this pod become ready (pass, or mode warn)", int(verdict["ready"])),
        ("certificate_pass", "1 when the certificate rows were within the thresholds", int(bool(cert.get("passed")))),
        (
            "max_abs_logit",
            "largest |logit - fp32 PyTorch logit| over the certificate rows sent",
            cert.get("max_abs_logit"),
        ),
        ("max_abs_score", "largest |sigmoid difference| over the certificate rows sent", cert.get("max_abs_score")),
        ("rows", "certificate rows sent through the rerank ensemble", cert.get("pairs")),
        (
            "certificate_missing",
            "1 when no certificate was available: engines checked only, nothing published as certified",
            int(bool(cert.get("missing"))),
        ),
    ]
    for name, help_text, value in gauges:
        if value is None:
            continue
        lines += [
            f"# HELP reranker_selfcert_{name} {help_text}",
            f"# TYPE reranker_selfcert_{name} gauge",
            f"reranker_selfcert_{name}{{{labels}}} {float(value):.6g}",
        ]
    lines += [
        "# HELP reranker_selfcert_info the device and certificate of this pod's verdict",
        "# TYPE reranker_selfcert_info gauge",
        f'reranker_selfcert_info{{{labels},mode="{verdict["mode"]}"}} 1',
        "# HELP reranker_tensorrt_engine_taken 1 when TensorRT took the model (engine file after warm-up; plan loaded)",
        "# TYPE reranker_tensorrt_engine_taken gauge",
    ]
    lines += [
        f'reranker_tensorrt_engine_taken{{model="{_label(m)}"}} {int(e["taken"])}'
        for m, e in verdict["engines"].items()
    ]
    return "\n".join(lines) + "\n"


def serve_metrics(verdict_path: Path, port: int, address: str = "0.0.0.0") -> ThreadingHTTPServer:
    """GET /metrics: the verdict file as Prometheus text, read at every scrape. A daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics_text(read_verdict(verdict_path)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes are not news
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="selfcert-metrics", daemon=True).start()
    return server


class SelfCertifier:
    """What a launcher calls: `prepare()` before tritonserver starts, `run()` once it is ready."""

    def __init__(self, args: argparse.Namespace, http_url: str) -> None:
        self.mode: str = args.self_certify
        self.repository: Path | None = args.repository
        # Where the certificate comes from: --certificate, else the repository's; None: none at all.
        certificate = getattr(args, "certificate", None)
        self.certificate: Path | None = (
            None if certificate == NO_CERTIFICATE else Path(certificate) if certificate else args.repository
        )
        self.no_certificate: bool = certificate == NO_CERTIFICATE
        self.grpc_url: str = args.grpc_url
        self.pairs: int = args.certify_pairs
        self.timeout: float = args.certify_timeout
        self.verdict_path: Path = args.verdict
        self.metrics_port: int = args.certify_metrics_port
        self.metrics_address: str = args.certify_metrics_address
        self.http_url = http_url
        self.metrics_server: ThreadingHTTPServer | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def prepare(self) -> None:
        """A verdict left by an earlier container (the chart's /tmp outlives a restart) must not
        make this one ready."""
        if not self.enabled:
            return
        if self.certificate is None and not self.no_certificate:
            raise SystemExit(
                "--self-certify needs --repository (the model repository: its certificate.json), "
                "--certificate FILE, or --certificate=none (engine check only)"
            )
        if self.no_certificate:
            print(
                f"{LOG_PREFIX} WARNING: NO CERTIFICATE for this pod (--certificate=none): only the TensorRT "
                "engine check gates readiness; numerics on this device are unverified and no engine is "
                "published to the shared cache. Mount certificate.json (chart: helmTest.certificateConfigMap).",
                flush=True,
            )
        self.verdict_path.unlink(missing_ok=True)
        if self.metrics_port:
            self.metrics_server = serve_metrics(self.verdict_path, self.metrics_port, self.metrics_address)

    def run(self, cache_root: Path | None = None, configs: dict[str, dict] | None = None) -> dict:
        """`configs` replaces what Triton reports loaded (a dry run on generated configs)."""
        start = time.monotonic()
        try:
            engines = engine_checks(loaded_configs(self.http_url) if configs is None else configs, cache_root)
        except (OSError, ValueError, KeyError) as err:
            engines = {"(repository)": {"taken": False, "detail": f"could not read the loaded configs: {err}"}}
        # The engine check never depends on the certificate: it runs, and gates readiness, either way.
        engines_taken = all(e["taken"] for e in engines.values())
        certificate = (
            missing_certificate()
            if self.certificate is None
            else run_certificate(self.grpc_url, self.certificate, self.pairs, self.timeout)
        )
        # passed = certified: what lets serve.py publish. Without a certificate the pod may serve
        # (engines taken) but is never certified.
        passed = certificate["passed"] and engines_taken
        verdict = {
            "passed": passed,
            "ready": passed or (engines_taken and bool(certificate.get("missing"))) or self.mode == "warn",
            "mode": self.mode,
            "device": device_name(),
            "engines": engines,
            "certificate": certificate,
            "seconds": round(time.monotonic() - start, 2),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_verdict(self.verdict_path, verdict)
        print(verdict_line(verdict), flush=True)
        return verdict

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
