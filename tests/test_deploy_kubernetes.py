"""The Kubernetes manifests (deploy/kubernetes) against the Kubernetes schemas, offline.

Every built-in object is validated strictly (unknown fields are errors, as
``kubectl apply --dry-run=client`` would refuse them) with the schemas that the
``kubernetes-validate`` package ships, for the oldest and the newest Kubernetes it
knows. ServiceMonitor is a CRD of the Prometheus Operator, not in those schemas:
its metadata and selector are validated against the Kubernetes definitions they
use, and the rest against the fields of the operator's CRD that we use. Then the
manifests are checked against each other: selectors, port names, the Secret and
ConfigMap keys the Deployment mounts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import importlib_resources
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
VERSIONS = (kv_utils.all_versions()[0], kv_utils.latest_version())
LABELS = {"app.kubernetes.io/name": "finetune-watcher", "app.kubernetes.io/component": "daemon"}

# What the Prometheus Operator's ServiceMonitor CRD allows for the fields we use
# (monitoring.coreos.com/v1; durations as its CRD's pattern).
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "endpoints"],
    "properties": {
        "selector": {},  # a LabelSelector: validated against Kubernetes' own definition
        "namespaceSelector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "any": {"type": "boolean"},
                "matchNames": {"type": "array", "items": {"type": "string"}},
            },
        },
        "jobLabel": {"type": "string"},
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["port"],
                "properties": {
                    "port": {"type": "string", "minLength": 1},
                    "path": {"type": "string", "pattern": "^/"},
                    "scheme": {"enum": ["http", "https"]},
                    "interval": {"type": "string", "pattern": _DURATION},
                    "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                    "honorLabels": {"type": "boolean"},
                },
            },
        },
    },
}


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for number, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is not None:
                yield f"{path.name}#{number}", document


ALL = dict(documents())


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in ALL.values() if doc["kind"] == kind]
    return found


def validate_definition(data: Any, schema_name: str, version: str) -> None:
    """``data`` against one of kubernetes-validate's schemas (e.g. ``objectmeta-meta-v1``)."""
    folder = importlib_resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict"
    )
    schema = json.loads(folder.joinpath(f"{schema_name}.json").read_text())
    definitions = json.loads(folder.joinpath("_definitions.json").read_text())
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    jsonschema.Draft202012Validator(schema, registry=registry).validate(data)


class TestSchemas:
    def test_the_manifests_are_there(self) -> None:
        """Deployment, Service, Secret, ConfigMap, PodDisruptionBudget, ServiceMonitor."""
        assert sorted(doc["kind"] for doc in ALL.values()) == [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceMonitor",
        ]

    @pytest.mark.parametrize("version", VERSIONS)
    @pytest.mark.parametrize("name", [n for n, d in ALL.items() if d["kind"] != "ServiceMonitor"])
    def test_builtin_objects_are_valid(self, name: str, version: str) -> None:
        """Strict validation: a typo'd or misplaced field fails, as kubectl would refuse it."""
        kubernetes_validate.validate(ALL[name], version, strict=True)

    @pytest.mark.parametrize("version", VERSIONS)
    def test_the_service_monitor_is_valid_as_far_as_we_can_tell(self, version: str) -> None:
        """No Kubernetes schema for a CRD: its parts against the definitions they use."""
        monitor = by_kind("ServiceMonitor")
        with pytest.raises(kv_utils.SchemaNotFoundError):
            kubernetes_validate.validate(monitor, version, strict=True)
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
        validate_definition(monitor["metadata"], "objectmeta-meta-v1", version)
        validate_definition(monitor["spec"]["selector"], "labelselector-meta-v1", version)
        jsonschema.Draft202012Validator(SERVICE_MONITOR_SPEC).validate(monitor["spec"])

    def test_a_wrong_field_would_be_caught(self) -> None:
        """The validation has teeth: an unknown field and a wrong type are both refused."""
        deployment = json.loads(json.dumps(by_kind("Deployment")))
        deployment["spec"]["replica"] = 2
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
        deployment = json.loads(json.dumps(by_kind("Deployment")))
        deployment["spec"]["replicas"] = "2"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
        monitor = json.loads(json.dumps(by_kind("ServiceMonitor")))
        monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(SERVICE_MONITOR_SPEC).validate(monitor["spec"])


class TestTogether:
    def test_two_replicas_that_never_wait_for_each_other(self) -> None:
        """2 replicas, a rolling update that keeps both, one per node if it can, a PDB of 1."""
        spec = by_kind("Deployment")["spec"]
        assert spec["replicas"] == 2
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        assert by_kind("PodDisruptionBudget")["spec"]["minAvailable"] == 1

    def test_selectors_select_the_pods(self) -> None:
        """Deployment, Service, PDB and ServiceMonitor all select the pods' labels."""
        deployment = by_kind("Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels == LABELS
        assert deployment["spec"]["selector"]["matchLabels"] == LABELS
        assert by_kind("Service")["spec"]["selector"] == LABELS
        assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == LABELS
        service_labels = by_kind("Service")["metadata"]["labels"]
        monitor = by_kind("ServiceMonitor")["spec"]["selector"]["matchLabels"]
        assert monitor.items() <= service_labels.items()

    def test_probes_and_ports_line_up(self) -> None:
        """/healthz and /readyz probe the named port the Service and ServiceMonitor use."""
        (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
        (port,) = container["ports"]
        assert (port["name"], port["containerPort"]) == ("http-metrics", 9464)
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
        (service_port,) = by_kind("Service")["spec"]["ports"]
        assert service_port["targetPort"] == service_port["name"] == "http-metrics"
        (endpoint,) = by_kind("ServiceMonitor")["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("http-metrics", "/metrics")
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["WATCHER_HEALTH__LISTEN"] == "0.0.0.0:9464"

    def test_secrets_are_files_the_configuration_points_at(self) -> None:
        """Every Secret key the pod mounts exists; the configuration reads them as files."""
        pod = by_kind("Deployment")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        secret = by_kind("Secret")
        secret_volume = volumes["secrets"]["secret"]
        assert secret_volume["secretName"] == secret["metadata"]["name"]
        assert {item["key"] for item in secret_volume["items"]} == set(secret["stringData"])
        assert not any("valueFrom" in item for item in container["env"])  # no secret in env

        config = by_kind("ConfigMap")
        assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
        settings = yaml.safe_load(config["data"]["watcher.yaml"])
        secrets_dir = mounts["secrets"]
        assert settings["state"]["password_file"] == f"{secrets_dir}/postgres-password"
        assert settings["cohere"]["api_key_file"] == f"{secrets_dir}/cohere-api-key"
        assert re.match(r"^postgres(ql)?://[^:@/]+@", settings["state"]["url"])  # no password
        assert settings["health"]["listen"] == "0.0.0.0:9464"
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["WATCHER_CONFIG"] == f"{mounts['config']}/watcher.yaml"

    def test_the_pod_runs_locked_down(self) -> None:
        """Non-root (the image's uid), read-only root, no capabilities, no API token."""
        pod = by_kind("Deployment")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
