"""The Kubernetes manifests validate against a stated Kubernetes version and agree with docker/ and each other."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the version deploy/kubernetes/README.md states


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if "patch" not in p.name)


def resources() -> dict[tuple[str, str], dict]:
    """The base manifests (not the variants in sub-folders), by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d for path in manifests() if path.parent == K8S for d in _docs(path)}


def deployment() -> dict:
    return resources()[("Deployment", "trunkserve")]


def container(spec: dict, name: str) -> dict:
    return next(c for c in spec["template"]["spec"]["containers"] + spec["template"]["spec"].get("initContainers", [])
                if c["name"] == name)


def test_the_stated_version_is_the_readmes():
    assert f"Kubernetes **{KUBERNETES_VERSION.rsplit('.', 1)[0]}**" in (K8S / "README.md").read_text()


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_strictly(path):
    for doc in _docs(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_manifest_with_a_mistake_is_caught():
    broken = copy.deepcopy(deployment())
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"http": 8000}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _merge(base, patch):
    """A strategic merge patch's effect for these files: dicts merge, lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) if k in base else v for k, v in patch.items()}}
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        by_name = {x["name"]: x for x in base}
        merged = [_merge(by_name[x["name"]], x) if x["name"] in by_name else x for x in patch]
        return merged + [x for x in base if x["name"] not in {p["name"] for p in patch}]
    return patch


def test_the_gpu_variant_validates_and_asks_for_a_gpu_per_replica():
    gpu = _merge(deployment(), _docs(K8S / "gpu" / "deployment-patch.yaml")[0])
    kubernetes_validate.validate(gpu, KUBERNETES_VERSION, strict=True)
    triton = container(gpu["spec"], "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1 and triton["resources"]["requests"]["cpu"]
    assert container(gpu["spec"], "seed-repository")["image"] == triton["image"] != container(deployment()["spec"], "triton")["image"]


def _docker_images() -> set[str]:
    tags = set(re.findall(r"-t (\S+) \.", (ROOT / "docker" / "Dockerfile").read_text()))
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    return tags | {s["image"] for s in compose["services"].values() if "image" in s}


def test_images_are_the_ones_docker_builds():
    images = {c["image"] for path in K8S.rglob("*.yaml") for d in _docs(path)
              for c in _containers(d)}
    assert images and images <= _docker_images(), (images, _docker_images())


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    return dict(re.findall(r"(TRUNKSERVE_\w+)=(\S+)", text))


def test_paths_ports_secrets_and_claims_agree():
    d = deployment()
    triton, seed = container(d["spec"], "triton"), container(d["spec"], "seed-repository")
    env = {e["name"]: e for e in triton["env"]}
    mounts = {m["name"]: m["mountPath"] for m in triton["volumeMounts"]}
    assert env["TRUNKSERVE_REPO"]["value"] == mounts["repository"]
    baked = _dockerfile_env()["TRUNKSERVE_REPO"]  # where docker/Dockerfile builds the repository
    assert f"cp -a {baked}/. " in " ".join(seed["args"]) and "flock" in " ".join(seed["args"])
    exposed = set(re.findall(r"EXPOSE ([\d ]+)", (ROOT / "docker" / "Dockerfile").read_text())[0].split())
    assert {str(p["containerPort"]) for p in triton["ports"]} == exposed
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "--model-control-mode=explicit" in triton["args"] and "--load-model=*" in triton["args"]
    secret = resources()[("Secret", "trunkserve-admin")]
    for c in (triton, container(resources()[("Job", "trunkserve-hot-add")]["spec"], "add-head")):
        ref = next(e for e in c["env"] if e["name"] == "TRUNKSERVE_ADMIN_KEY")["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert "TRUNKSERVE_ADMIN_KEY" in (ROOT / "docker" / "entrypoint.sh").read_text()
    claims = {n for (kind, n) in resources() if kind == "PersistentVolumeClaim"}
    used = {v["persistentVolumeClaim"]["claimName"] for doc in resources().values()
            for v in doc.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []) if "persistentVolumeClaim" in v}
    assert used == claims and all(resources()[("PersistentVolumeClaim", c)]["spec"]["accessModes"] == ["ReadWriteMany"] for c in claims)


def test_services_autoscaler_and_budget_select_the_deployment():
    r, labels = resources(), deployment()["spec"]["template"]["metadata"]["labels"]
    for name in ("trunkserve", "trunkserve-replicas"):
        assert r[("Service", name)]["spec"]["selector"].items() <= labels.items()
    assert r[("Service", "trunkserve-replicas")]["spec"]["clusterIP"] == "None"
    assert r[("PodDisruptionBudget", "trunkserve")]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for hpa in (r[("HorizontalPodAutoscaler", "trunkserve")], _docs(K8S / "queue-time" / "hpa.yaml")[0]):
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] <= deployment()["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    job_url = container(r[("Job", "trunkserve-hot-add")]["spec"], "add-head")["args"]
    assert "dns://trunkserve-replicas:8000" in job_url


def test_the_queue_time_autoscaler_reads_the_metric_the_adapter_serves():
    metric = _docs(K8S / "queue-time" / "hpa.yaml")[0]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(_docs(K8S / "queue-time" / "adapter-rules.yaml")[0]["data"]["config.yaml"])["rules"]
    assert [r["name"]["as"] for r in rules] == [metric]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is installed by .ci/run")
@pytest.mark.parametrize("which", ["kubernetes", "local"])
def test_prometheus_configs_pass_promtool(which, tmp_path):
    if which == "kubernetes":
        text = _docs(K8S / "prometheus-config.yaml")[0]["data"]["prometheus.yml"]
        if not _promtool_knows_kubernetes(tmp_path):
            # Debian's Prometheus is built without Kubernetes discovery: check everything else of the file,
            # with the discovery block swapped for a static one.
            config = yaml.safe_load(text)
            for job in config["scrape_configs"]:
                assert job.pop("kubernetes_sd_configs") == [{"role": "endpoints"}]
                job["static_configs"] = [{"targets": ["127.0.0.1:8002"]}]
            text = yaml.safe_dump(config)
    else:
        text = (ROOT / "trunkserve" / "fleet" / "prometheus.yml").read_text()
        (tmp_path / "targets").mkdir()
    (tmp_path / "prometheus.yml").write_text(text)
    p = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def _promtool_knows_kubernetes(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.yml"
    probe.write_text("scrape_configs:\n  - job_name: p\n    kubernetes_sd_configs: [{role: pod}]\n")
    p = subprocess.run(["promtool", "check", "config", str(probe)], capture_output=True, text=True)
    return "kubernetes_sd_configs not found" not in p.stdout + p.stderr
