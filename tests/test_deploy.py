"""The Kubernetes manifests under deploy/: built-in kinds valid against Kubernetes' own schemas (offline, with
kubernetes-validate), KEDA's kinds against the schema kept in deploy/schemas, every setting the app reads wired in
the ConfigMap or the Secret, and the pieces that must fit together (probes, autoscalers, the migration order)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from backend.checks.dispatch import SCORING_QUEUE
from backend.settings import Settings
from backend.storage.migrate import at_head, upgrade_database, wait_for_head
from testbed.stack import isolated_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30"
KEDA_SCHEMA = json.loads((DEPLOY / "schemas" / "keda-v2.json").read_text())


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.relative_to(DEPLOY)}#{index}", doc) for path in sorted(DEPLOY.rglob("*.yaml"))
            if path.name != "kustomization.yaml" for index, doc in enumerate(documents(path))]


def base(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name
             and not _is_patch(doc)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} definitions"
    return found[0]


def _is_patch(doc: dict[str, Any]) -> bool:
    return "labels" not in doc["metadata"] and doc["kind"] in {"ConfigMap", "Secret"}


@pytest.mark.parametrize(("where", "doc"), manifests(), ids=[where for where, _ in manifests()])
def test_every_manifest_is_valid(where: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMA)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_keda_schema_refuses_what_keda_would() -> None:
    good = base("ScaledObject", "fakewatch-worker")
    for broken in ({**good, "spec": {**good["spec"], "minReplicaCount": -1}},
                   {**good, "spec": {**good["spec"], "triggers": []}},
                   {**good, "spec": {**good["spec"], "scaleTargetRef": {}}},
                   {**good, "spec": {**good["spec"], "triggers": [{"type": "redis", "metadata": {"address": "r:6379"}}]}},
                   {**good, "spec": {**good["spec"], "replicas": 3}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, KEDA_SCHEMA)


@pytest.mark.parametrize("kustomization", sorted(DEPLOY.rglob("kustomization.yaml")), ids=str)
def test_kustomizations_name_files_that_exist(kustomization: Path) -> None:
    spec = yaml.safe_load(kustomization.read_text())
    for entry in spec.get("resources", []) + [patch["path"] for patch in spec.get("patches", []) if "path" in patch]:
        assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry} is missing"
    for patch in spec.get("patches", []):
        if "path" in patch:  # a strategic merge patch must name something the base defines
            for doc in documents(kustomization.parent / patch["path"]):
                base(doc["kind"], doc["metadata"]["name"])


def wired_settings() -> dict[str, str]:
    config = base("ConfigMap", "fakewatch-settings")["data"]
    secret = base("Secret", "fakewatch-secrets")["stringData"]
    overlap = set(config) & set(secret)
    assert not overlap, f"set in both the ConfigMap and the Secret: {overlap}"
    return {**config, **secret}


def test_every_setting_the_app_reads_is_wired() -> None:
    wired = {key for key in wired_settings() if key.startswith("FAKEWATCH_")}
    read = {f"FAKEWATCH_{name.upper()}" for name in Settings.model_fields}
    assert read - wired == set(), "settings missing from deploy/base/configmap.yaml or secret.yaml"
    assert wired - read == set(), "manifests set FAKEWATCH_* variables the app does not read (a typo?)"


def test_the_wired_values_are_valid_settings() -> None:
    values = {key.removeprefix("FAKEWATCH_").lower(): value for key, value in wired_settings().items()
              if key.startswith("FAKEWATCH_")}
    settings = isolated_settings(**values)
    assert settings.image_store.startswith("s3://") and settings.broker_is_redis
    assert settings.api_host == "0.0.0.0" and settings.worker_metrics_port > 0


def pod_specs() -> dict[str, dict[str, Any]]:
    specs = {f"Deployment/{name}": base("Deployment", name)["spec"]["template"]["spec"]
             for name in ("fakewatch-api", "fakewatch-worker", "fakewatch-background", "fakewatch-console")}
    specs["Job/fakewatch-migrate"] = base("Job", "fakewatch-migrate")["spec"]["template"]["spec"]
    return specs


def test_every_fakewatch_container_gets_all_settings() -> None:
    for where, spec in pod_specs().items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            sources = {next(iter(source.values()))["name"] for source in container.get("envFrom", [])}
            assert sources == {"fakewatch-settings", "fakewatch-secrets"}, f"{where}/{container['name']}"


def test_api_probes_autoscaler_and_migration_order() -> None:
    api = pod_specs()["Deployment/fakewatch-api"]
    [container] = api["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["initContainers"][0]["command"][:3] == ["fakewatch", "db", "wait"]
    assert pod_specs()["Job/fakewatch-migrate"]["containers"][0]["command"] == ["fakewatch", "db", "upgrade"]
    hpa = base("HorizontalPodAutoscaler", "fakewatch-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fakewatch-api"}


def test_workers_scale_on_the_scoring_queue_down_to_zero() -> None:
    scaled = base("ScaledObject", "fakewatch-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "fakewatch-worker" and scaled["minReplicaCount"] == 0
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == SCORING_QUEUE
    auth = base("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]["secretTargetRef"][0]
    assert auth["key"] in base("Secret", auth["name"])["stringData"]
    worker = pod_specs()["Deployment/fakewatch-worker"]["containers"][0]
    assert "scoring" in worker["command"] and worker["ports"][0]["containerPort"] == 9108


def test_db_wait_sees_the_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert not at_head(url)
    assert not wait_for_head(url, timeout_s=0.2, poll_s=0.05)
    upgrade_database(url)
    assert at_head(url) and wait_for_head(url, timeout_s=1)


def test_alert_rules_watch_metrics_the_app_exports() -> None:
    from backend.checks import metrics  # noqa: PLC0415

    exported = {"fakewatch_queue_depth", "fakewatch_model_version"} | {
        name for value in vars(metrics).values() if hasattr(value, "_name") for name in
        (value._name, f"{value._name}_total", f"{value._name}_bucket")}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert len(rules) >= 6
    for rule in rules:
        used = set(re.findall(r"fakewatch_[a-z_]+", rule["expr"]))
        assert used and used <= exported, f"{rule['alert']}: {used - exported}"
        assert rule["alert"] in (ROOT / "docs" / "operations.md").read_text(), f"{rule['alert']} is not explained"
