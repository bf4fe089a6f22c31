"""configs/kuberay/rayservice.yaml: what KubeRay requires, and the same application as
serve_config.yaml (checked with Ray's own ServeDeploySchema and built like Ray builds it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.unit.test_build_app import UNUSED_DATABASE, build_from_config

REPO = Path(__file__).resolve().parents[2]
MANIFEST, POLICY = yaml.safe_load_all((REPO / "configs" / "kuberay" / "rayservice.yaml").read_text())
SERVE_CONFIG = yaml.safe_load((REPO / "serve_config.yaml").read_text())
CLUSTER_ONLY_ARGS = {"profile", "device", "auth"}  # what a GPU cluster deploy sets differently


def serve_config_v2() -> dict:
    return yaml.safe_load(MANIFEST["spec"]["serveConfigV2"])


def test_the_manifest_has_what_kuberay_requires():
    assert MANIFEST["apiVersion"] == "ray.io/v1" and MANIFEST["kind"] == "RayService"
    assert 0 < len(MANIFEST["metadata"]["name"]) <= 53
    cluster = MANIFEST["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    groups = cluster["workerGroupSpecs"]
    assert groups and all(g["groupName"] and "rayStartParams" in g for g in groups)
    for spec in [head, *groups]:
        [container] = spec["template"]["spec"]["containers"]
        assert container["image"] and container["envFrom"][0]["secretRef"]["name"] == "speechtotext-secrets"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 8080 and spec["rayStartParams"]["metrics-export-port"] == "8080"
    head_ports = {p["name"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {"gcs-server", "dashboard", "client", "serve", "metrics"} <= head_ports
    gpu = next(g for g in groups if g["groupName"] == "gpu")
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "transcriber" in gpu["rayStartParams"]["resources"] and "cpu_work" in head["rayStartParams"]["resources"]


def test_the_control_plane_is_closed():
    """Ray token auth, the dashboard on the pod's address (never every interface), and a
    NetworkPolicy that lets clients reach only the Serve port."""
    cluster = MANIFEST["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "$(MY_POD_IP)"
    [container] = head["template"]["spec"]["containers"]
    pod_ip = next(e for e in container["env"] if e["name"] == "MY_POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    every = [head, *cluster["workerGroupSpecs"]]
    for spec in every:
        for c in spec["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("RAY_AUTH_MODE", "token") == "token"  # never turned off
    assert POLICY["kind"] == "NetworkPolicy" and POLICY["spec"]["policyTypes"] == ["Ingress"]
    labels = POLICY["spec"]["podSelector"]["matchLabels"]
    assert all(spec["template"]["metadata"]["labels"].items() >= labels.items() for spec in every)
    open_to_all = [rule for rule in POLICY["spec"]["ingress"] if "from" not in rule]
    assert [p["port"] for rule in open_to_all for p in rule["ports"]] == [8000]
    dashboard = [
        rule for rule in POLICY["spec"]["ingress"] if {"port": 8265, "protocol": "TCP"} in rule.get("ports", [])
    ]
    assert dashboard and all("from" in rule for rule in dashboard)
    assert "0.0.0.0" not in (REPO / "configs" / "kuberay" / "rayservice.yaml").read_text().split("serveConfigV2")[0]


def test_serve_config_v2_is_the_same_application_as_serve_config_yaml():
    schema = ServeDeploySchema.parse_obj(serve_config_v2())
    [app] = schema.applications
    [local] = SERVE_CONFIG["applications"]
    assert (app.import_path, app.route_prefix, app.name) == (local["import_path"], local["route_prefix"], local["name"])
    assert app.runtime_env == local["runtime_env"]
    shared = set(local["args"]) - CLUSTER_ONLY_ARGS
    assert {k: app.args[k] for k in shared} == {k: local["args"][k] for k in shared}
    assert set(app.args) - set(local["args"]) <= CLUSTER_ONLY_ARGS
    assert app.args["profile"] == "cluster" and app.args["device"] == "cuda"
    assert schema.proxy_location == "EveryNode"


@pytest.fixture
def cluster_config(monkeypatch):
    monkeypatch.setenv("STT_DATABASE_URL", UNUSED_DATABASE)  # from the secret on the cluster
    return serve_config_v2()


def test_it_builds_with_the_cluster_profile_and_its_overrides_name_real_deployments(cluster_config):
    deployments = build_from_config(cluster_config)
    [app] = cluster_config["applications"]
    assert {d["name"] for d in app["deployments"]} <= set(deployments)
    transcriber = deployments["Transcriber-base"]
    assert transcriber.ray_actor_options["resources"] == {"transcriber": 1}
    assert deployments["Preprocessor"].ray_actor_options["resources"] == {"cpu_work": 0.01}
    assert deployments["JobWorker"].ray_actor_options["resources"] == {"cpu_work": 0.01}
    assert deployments["Ingress"]._deployment_config.autoscaling_config.min_replicas == 2
