"""Offline validation of everything we ship for deployment; no Docker engine or cluster needed.

Runs in .venv-deploy (requirements/deploy.txt):
  hadolint        docker/Dockerfile
  compose-spec    docker/compose.yaml, docker/compose.cpu.yaml (check-jsonschema --builtin-schema vendor.compose-spec)
  helm            render + strict lint of the chart for every values file in deploy/helm/values
  kubernetes      every rendered object, strict, against Kubernetes 1.29-1.33 schemas;
                  a missing schema fails except for the CRD kinds in CRD_KINDS
  checkov         rendered manifests (+ Dockerfile), skips justified in deploy/checkov-skips.yaml
  yamllint        chart values, compose, rendered manifests, KServe manifest
  promql          every PromQL expression we ship (adapter rule, alert rules, dashboard), parsed
                  by promql-parser (Prometheus's grammar)

    python deploy/validate.py OUT_DIR       # writes OUT_DIR/<variant>.yaml, exits 1 on any failure
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import promql_parser
import yaml
from helm_python import chart as helm_chart

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "bge-reranker"
VALUES_DIR = ROOT / "deploy" / "helm" / "values"
KUBERNETES_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
CRD_KINDS = {
    "ServiceMonitor",
    "PodMonitoring",
    "PrometheusRule",
    "HTTPRoute",
    "GRPCRoute",
    "InferenceService",
}  # no schema in kubernetes-validate: CRDs
BIN = Path(sys.executable).parent


def variants() -> dict[str, dict]:
    out = {"default": {}}
    for path in sorted(VALUES_DIR.glob("*.yaml")):
        out[path.stem] = yaml.safe_load(path.read_text()) or {}
    return out


def render(values: dict) -> list[dict]:
    chart = helm_chart.Chart.load(str(CHART))
    manifests = chart.render(values, name="rr", namespace="search", is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def check_kubernetes(objects: list[dict], label: str) -> list[str]:
    problems = []
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                if obj["kind"] not in CRD_KINDS:
                    problems.append(f"{label}: no schema for {obj['apiVersion']}/{obj['kind']} in {version}")
            except kubernetes_validate.ValidationError as err:
                problems.append(
                    f"{label}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: {err.message}"
                )
    return problems


def strictness_canary() -> list[str]:
    """A misspelt field must fail strict validation, and an unknown kind must have no schema;
    otherwise the checks above prove nothing."""
    typo = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "selectr": {"a": "b"}},
    }
    problems = check_kubernetes([typo], "canary")
    unknown = check_kubernetes(
        [{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}], "canary"
    )
    if not problems or not unknown:
        return ["kubernetes-validate did not reject a misspelt field or an unknown kind: strict mode is off"]
    return []


# Template placeholders in shipped queries, replaced by something of the same kind to parse.
PROMQL_PLACEHOLDERS = {
    "<<.LabelMatchers>>": 'namespace="search",pod="p"',
    "<<.GroupBy>>": "pod",
    "$__rate_interval": "5m",
}


def promql_expressions(objects_by_variant: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """(where, expression) for every PromQL query in the repository's deploy files."""
    out = []
    rules = yaml.safe_load((ROOT / "deploy/prometheus-adapter-rules.yaml").read_text())
    out += [(f"adapter rule {r['name']['as']}", r["metricsQuery"]) for r in rules["rules"]["custom"]]
    dashboard = json.loads((ROOT / "deploy/grafana/reranker-dashboard.json").read_text())
    out += [(f"dashboard panel {p['title']!r}", t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for variant, objects in objects_by_variant.items():
        for obj in objects:
            if obj["kind"] == "PrometheusRule":
                for group in obj["spec"]["groups"]:
                    out += [(f"{variant}: alert {r['alert']}", r["expr"]) for r in group["rules"]]
    return out


def check_promql(expressions: list[tuple[str, str]]) -> list[str]:
    problems = []
    for where, expr in expressions:
        for placeholder, value in PROMQL_PLACEHOLDERS.items():
            expr = expr.replace(placeholder, value)
        try:
            promql_parser.parse(expr)
        except ValueError as err:
            problems.append(f"promql ({where}): {err}: {expr}")
    # Canary: a broken expression must be refused, or the check proves nothing.
    if not check_promql_canary():
        problems.append("promql-parser accepted an unbalanced expression: the check is off")
    return problems


def check_promql_canary() -> bool:
    try:
        promql_parser.parse("sum(rate(x[5m])")
    except ValueError:
        return True
    return False


def run(cmd: list[str], label: str) -> list[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return [f"{label} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"]
    return []


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = strictness_canary()
    problems += run([str(BIN / "hadolint"), "docker/Dockerfile"], "hadolint")
    problems += run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            "docker/compose.yaml",
            "docker/compose.cpu.yaml",
        ],
        "compose-spec",
    )
    summary = {}
    rendered = {}
    for name, values in variants().items():
        report = helm_chart.lint(str(CHART), values, strict=True, kube_version="v1.33.0")
        errors = report.get("errors") or []
        errors += [m["error"] for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += [f"helm lint ({name}): {e}" for e in errors]
        objects = render(values)
        rendered[name] = objects
        problems += check_kubernetes(objects, f"kubernetes ({name})")
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        summary[name] = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    problems += check_promql(promql_expressions(rendered))
    kserve = [d for d in yaml.safe_load_all((ROOT / "deploy/kserve/inferenceservice.yaml").read_text()) if d]
    problems += check_kubernetes(kserve, "kserve")
    problems += run(
        [
            str(BIN / "checkov"),
            "--skip-download",
            "--quiet",
            "--compact",
            "-d",
            str(out),
            "--framework",
            "kubernetes",
            "--config-file",
            "deploy/checkov-skips.yaml",
        ],
        "checkov (manifests)",
    )
    problems += run(
        [
            str(BIN / "checkov"),
            "--skip-download",
            "--quiet",
            "--compact",
            "-f",
            "docker/Dockerfile",
            "--framework",
            "dockerfile",
            "--config-file",
            "deploy/checkov-skips.yaml",
        ],
        "checkov (Dockerfile)",
    )
    problems += run(
        [
            str(BIN / "yamllint"),
            "-c",
            "deploy/yamllint.yaml",
            "deploy/helm/bge-reranker/values.yaml",
            str(VALUES_DIR),
            "docker/compose.yaml",
            "docker/compose.cpu.yaml",
            "deploy/kserve",
            "deploy/prometheus-adapter-rules.yaml",
            str(out),
        ],
        "yamllint",
    )
    print(
        json.dumps(
            {"variants": summary, "kubernetes_versions": KUBERNETES_VERSIONS, "problems": len(problems)}, indent=1
        )
    )
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/rendered"))
