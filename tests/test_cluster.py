"""Deployment descriptions: the cluster launcher config against the schema Ray ships, and the
KubeRay manifests (their Serve config against Ray's own Serve schema)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert {"head", "cpu_worker", "gpu_worker"} <= set(config["available_node_types"])
    assert any("mediamatch" in c for c in config["setup_commands"])


def test_kuberay_manifests():
    from mediamatch.deployments.app import deployment_names
    from mediamatch.platform.settings import load_settings

    service = yaml.safe_load((ROOT / "deployments" / "kuberay" / "rayservice.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    (application,) = serve_config.applications
    assert {d.name for d in application.deployments} == set(deployment_names(load_settings(**application.args)))
    job = yaml.safe_load((ROOT / "deployments" / "kuberay" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["entrypoint"].startswith("mediamatch ") and " reindex" in job["spec"]["entrypoint"]
    groups = [service["spec"]["rayClusterConfig"]["workerGroupSpecs"], job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    assert all({g["groupName"] for g in specs} == {"cpu", "gpu"} for specs in groups)
