"""The engine prebuild Jobs (issue 27 item 6), asserted on the rendered chart for every values
file (rendered and strictly validated by deploy/validate.py, `rendered` in conftest): one Job per
GPU type on that type's nodes, running the Deployment's own command in prebuild mode with the
Deployment's volumes, before the pods roll; its pods are nobody's endpoints and reach only what
reading the repository needs (tests/test_deploy_network.py evaluates that)."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest
import yaml

from tests.test_deploy import DEPLOY_PYTHON, ROOT, VARIANTS, _bytes, _one
from tests.test_deploy_cluster import ALL_VARIANTS
from tests.test_deploy_network import NETWORK_VARIANTS

_spec = importlib.util.spec_from_file_location("serve_for_chart", ROOT / "docker" / "serve.py")
assert _spec is not None and _spec.loader is not None
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)
import engine_cache  # noqa: E402 - docker/, on the path since serve.py was loaded

EVERY_VARIANT = sorted(set(ALL_VARIANTS) | set(NETWORK_VARIANTS) | set(VARIANTS) | {"prebuild"})
# The values files that turn the Jobs on: every per-cloud file and the two-GPU example.
WITH_PREBUILD = {"eks", "gke", "gke-autopilot", "aks", "prebuild"}
ADDRESS_FLAGS = ("--http-address=", "--grpc-address=", "--metrics-address=")


def _values(variant: str) -> dict:
    return {} if variant == "default" else yaml.safe_load((ROOT / f"deploy/helm/values/{variant}.yaml").read_text())


def _jobs(objects) -> list[dict]:
    return [o for o in objects if o["kind"] == "Job"]


def _triton_pod(objects) -> dict:
    return _one(objects, "Deployment", "rr-bge-reranker")["spec"]["template"]


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    i = args.index("--")
    return args[:i], args[i + 1 :]


def test_the_jobs_are_rendered_where_the_values_ask(rendered):
    for variant in EVERY_VARIANT:
        jobs = _jobs(rendered[variant])
        types = _values(variant).get("prebuild", {}).get("gpuTypes", [])
        assert bool(jobs) == (variant in WITH_PREBUILD), variant
        assert len(jobs) == len(types), variant
        assert len({j["metadata"]["name"] for j in jobs}) == len(jobs)


@pytest.mark.parametrize("variant", sorted(WITH_PREBUILD))
def test_one_job_per_gpu_type_on_that_type_before_the_pods_roll(rendered, variant):
    objects = rendered[variant]
    types = _values(variant)["prebuild"]["gpuTypes"]
    jobs = {j["spec"]["template"]["metadata"]["labels"]["engine-prebuild/gpu-type"]: j for j in _jobs(objects)}
    assert sorted(jobs) == sorted(t["name"] for t in types)
    deployment = _triton_pod(objects)["spec"]
    for gpu_type in types:
        job = jobs[gpu_type["name"]]
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == gpu_type["nodeSelector"]  # engines run only on the GPU they were built on
        assert pod["restartPolicy"] == "Never"
        assert pod["tolerations"] == deployment["tolerations"]
        # Before the Deployment changes (pre-upgrade), and a rollback's model too; a re-run
        # replaces the last Job. Not pre-install: the chart's cache claim does not exist yet.
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert "pre-upgrade" in hooks and "pre-rollback" in hooks and "pre-install" not in hooks
        assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
        # As long as a cold start may take: the startup probe's budget fits inside.
        startup = _triton_pod(objects)["spec"]["containers"][0]["startupProbe"]
        assert job["spec"]["activeDeadlineSeconds"] >= startup["periodSeconds"] * startup["failureThreshold"]


@pytest.mark.parametrize("variant", sorted(WITH_PREBUILD))
def test_the_job_runs_the_deployments_command_and_volumes_in_prebuild_mode(rendered, variant):
    """Same serve.py flags (cache paths, bound, model hash, certificate) and the same
    tritonserver flags, so the Job builds exactly the engines the pods look for; Triton on
    loopback only; the same image, resources, identity and volumes."""
    objects = rendered[variant]
    triton_pod = _triton_pod(objects)["spec"]
    [triton] = [c for c in triton_pod["containers"] if c["name"] == "triton"]
    own, server = _split(triton["args"])
    for job in _jobs(objects):
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        job_own, job_server = _split(container["args"])
        assert [a for a in job_own if a not in ("--prebuild-only", "--prune")] == [
            a for a in own if not a.startswith("--certify-metrics-port=")
        ]
        assert "--prebuild-only" in job_own and "--prune" in job_own
        assert [a for a in job_server if not a.startswith(ADDRESS_FLAGS)] == [
            a for a in server if not a.startswith(ADDRESS_FLAGS)
        ]
        assert {a for a in job_server if a.startswith(ADDRESS_FLAGS)} == {f"{f}127.0.0.1" for f in ADDRESS_FLAGS}
        # serve.py accepts the flags the chart passes (an unknown one would fail the Job at once).
        parsed = serve.build_parser().parse_args(job_own[2:])
        assert parsed.prebuild_only and parsed.prune and str(parsed.shared) == "/trt-cache-shared"
        for key in ("image", "imagePullPolicy", "resources", "securityContext", "env", "volumeMounts"):
            assert container.get(key) == triton.get(key), key
        proxy_volumes = {"proxy-config", "proxy-tmp"}
        assert pod["volumes"] == [v for v in triton_pod["volumes"] if v["name"] not in proxy_volumes]
        for key in ("serviceAccountName", "securityContext", "runtimeClassName", "initContainers"):
            assert pod.get(key) == triton_pod.get(key), key
        assert "ports" not in container


@pytest.mark.parametrize("variant", EVERY_VARIANT)
def test_the_seeding_bound_is_the_volume_limit(rendered, variant):
    """One definition: serve.py's --local-size is the per-pod cache volume's sizeLimit
    (trtCache.size), in the Deployment and in every Job; serve.py reads it as Kubernetes does."""
    objects = rendered[variant]
    pods = [_triton_pod(objects)] + [j["spec"]["template"] for j in _jobs(objects)]
    for pod in pods:
        [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "trt-cache"]
        container = pod["spec"]["containers"][0]
        [flag] = [a for a in _split(container["args"])[0] if a.startswith("--local-size=")]
        size = flag.split("=", 1)[1]
        assert size == volume["emptyDir"]["sizeLimit"]
        assert engine_cache.parse_quantity(size) == _bytes(size)


@pytest.mark.parametrize("variant", ["eks", "gke", "gke-autopilot", "aks", "shared-cache", "object-storage"])
def test_a_remote_repository_names_its_model_hash_or_seeds_nothing(rendered, variant):
    """A `uri` repository cannot be read before Triton starts: the per-cloud files give the
    model hash, so pods seed the current model's entry; without it serve.py seeds nothing (and
    says so) instead of guessing."""
    [container] = [c for c in _triton_pod(rendered[variant])["spec"]["containers"] if c["name"] == "triton"]
    own = _split(container["args"])[0]
    model_hash = _values(variant).get("trtCache", {}).get("modelHash")
    assert ([f"--model-hash={model_hash}"] if model_hash else []) == [a for a in own if a.startswith("--model-hash")]
    assert bool(model_hash) == (variant in WITH_PREBUILD)


@pytest.mark.parametrize("variant", sorted(WITH_PREBUILD))
def test_prebuild_pods_are_nobodys_endpoints(rendered, variant):
    """The Job's pods carry labels of their own: no Service, PDB or Deployment selects them, and
    no policy but their own."""
    from tests.netpol import selector_matches

    objects = rendered[variant]
    for job in _jobs(objects):
        labels = job["spec"]["template"]["metadata"]["labels"]
        for service in (o for o in objects if o["kind"] == "Service"):
            assert not selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
        for other in (o for o in objects if o["kind"] in ("PodDisruptionBudget", "Deployment")):
            assert not selector_matches(other["spec"]["selector"], labels)
        policies = [
            p["metadata"]["name"]
            for p in objects
            if p["kind"] == "NetworkPolicy" and selector_matches(p["spec"]["podSelector"], labels)
        ]
        assert policies == ["rr-bge-reranker-prebuild"]


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"prebuild": {"enabled": True, "gpuTypes": [{"name": "l4", "nodeSelector": {"a": "b"}}]}},
            "trtCache.type=shared",
        ),
        ({"trtCache": {"type": "shared", "existingClaim": "c"}, "prebuild": {"enabled": True}}, "prebuild.gpuTypes"),
        (
            {
                "trtCache": {"type": "shared", "existingClaim": "c"},
                "prebuild": {"enabled": True, "gpuTypes": [{"name": "l4"}]},
            },
            "nodeSelector is required",
        ),
        (
            {
                "trtCache": {"type": "shared", "existingClaim": "c"},
                "prebuild": {"enabled": True, "gpuTypes": [{"name": "L4 GPU", "nodeSelector": {"a": "b"}}]},
            },
            "prebuild.gpuTypes[].name",
        ),
        ({"trtCache": {"modelHash": "../other"}}, "trtCache.modelHash"),
    ],
)
def test_prebuild_values_that_cannot_work_do_not_render(values, message):
    script = f"import sys; sys.path.insert(0, 'deploy'); import validate\nvalidate.render({values!r})"
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("variant", sorted(WITH_PREBUILD))
def test_what_the_jobs_need_exists_before_them(rendered, variant):
    """Helm applies the release's ordinary resources after the pre-upgrade hooks: on the upgrade
    that first enables prebuild an ordinary NetworkPolicy would not exist while the Jobs run
    (under default-deny: no DNS, no repository). Every object created only with prebuild is a
    hook of the Jobs' phases with a lower weight, recreated each run."""
    objects = rendered[variant]
    jobs = _jobs(objects)
    only_with_prebuild = [o for o in objects if o["kind"] != "Job" and o["metadata"]["name"].endswith("-prebuild")] + [
        o for o in objects if o["kind"] == "ServiceAccount" and "prebuild" in o["metadata"]["name"]
    ]
    assert [o["kind"] for o in only_with_prebuild] == ["NetworkPolicy"]
    for job in jobs:
        job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
        for needed in only_with_prebuild:
            annotations = needed["metadata"].get("annotations", {})
            assert annotations.get("helm.sh/hook") == job["metadata"]["annotations"]["helm.sh/hook"], needed
            assert annotations.get("helm.sh/hook-delete-policy") == "before-hook-creation"
            assert int(annotations["helm.sh/hook-weight"]) < job_weight


def _terms(selector: dict) -> list[dict]:
    return sorted(({"key": k, "operator": "In", "values": [str(v)]} for k, v in selector.items()), key=str)


@pytest.mark.parametrize("variant", sorted(WITH_PREBUILD))
def test_pods_land_only_on_gpu_models_a_job_builds_for(rendered, variant):
    """A pod on a GPU model no Job builds for finds nothing in the shared cache and builds its own
    engines: with prebuild the Deployment requires a node matching one Job's nodeSelector (the
    terms ORed, each term the Job's selector exactly)."""
    objects = rendered[variant]
    affinity = _triton_pod(objects)["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    pod_terms = sorted((sorted(t["matchExpressions"], key=str) for t in terms), key=str)
    job_terms = sorted((_terms(j["spec"]["template"]["spec"]["nodeSelector"]) for j in _jobs(objects)), key=str)
    assert pod_terms == job_terms and len(job_terms) == len(_values(variant)["prebuild"]["gpuTypes"])


@pytest.mark.parametrize(
    ("variant", "label"),
    [
        ("eks", "nvidia.com/gpu.product"),
        ("gke", "cloud.google.com/gke-accelerator"),
        ("prebuild", "nvidia.com/gpu.product"),
    ],
)
def test_gpu_types_are_selected_by_gpu_model_not_instance_size(variant, label):
    """Every size of an instance family has the same GPU (and engines run on any of them): a Job
    selected by instance type builds for one size only."""
    for gpu_type in _values(variant)["prebuild"]["gpuTypes"]:
        assert label in gpu_type["nodeSelector"]
        assert "node.kubernetes.io/instance-type" not in gpu_type["nodeSelector"]


def test_prebuild_and_another_gpu_pin_do_not_render():
    values = {
        "trtCache": {"type": "shared", "existingClaim": "c"},
        "prebuild": {"enabled": True, "gpuTypes": [{"name": "l4", "nodeSelector": {"a": "b"}}]},
        "gpuProducts": ["NVIDIA-L4"],
    }
    script = f"import sys; sys.path.insert(0, 'deploy'); import validate\nvalidate.render({values!r})"
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "leave gpuProducts and affinity.nodeAffinity empty" in proc.stderr


def test_the_runbook_states_the_hook_costs():
    """Hook Jobs run one after another on every upgrade and rollback, each on a free GPU of its
    type, and a rollback may rebuild: the operator needs the long timeout there too."""
    text = " ".join((ROOT / "docs/DEPLOYMENT.md").read_text().split())
    assert "helm rollback <release> <revision> --timeout 45m" in text
    assert "One after another, every time" in text and "free GPU" in text
