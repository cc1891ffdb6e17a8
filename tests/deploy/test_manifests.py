"""Rules the schemas cannot express, checked on the built overlays (kustomize build, no cluster).

Schema validation (test_k8s.py) says the manifests are well-formed; these say they do what the
deployment needs: probes on the serving port, drain time that fits the grace period, locked-down pods,
environment names the code reads, autoscaling and disruption budgets in prod, the policies' shape.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshkit.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
GRPC_SERVICES = {"catalog": 50051, "inventory": 50052, "order": 50053}
APPS = [*GRPC_SERVICES, "gateway"]
SETTINGS_MODULES = ("catalog_svc.config", "inventory_svc.config", "order_svc.config", "gateway.config")


def kustomize() -> str:
    found = shutil.which("kustomize") or str(ROOT / ".tools/bin/kustomize")
    assert Path(found).is_file(), "kustomize is not installed: run `make tools` (infra/tools.sh)"
    return found


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [kustomize(), "build", str(ROOT / "k8s/overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def config(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    maps = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shopmesh-config")
    ]
    assert len(maps) == 1
    return maps[0]["data"]


def pod_specs(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    specs = {}
    for name, d in of_kind(docs, "Deployment").items():
        specs[f"Deployment/{name}"] = d["spec"]["template"]["spec"]
    for name, d in of_kind(docs, "StatefulSet").items():
        specs[f"StatefulSet/{name}"] = d["spec"]["template"]["spec"]
    for name, d in of_kind(docs, "CronJob").items():
        specs[f"CronJob/{name}"] = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def known_settings() -> set[str]:
    """Every SHOPMESH_* name some process reads: the fields of CommonSettings and of each config.py."""
    names = {f"SHOPMESH_{f.name.upper()}" for f in dataclasses.fields(CommonSettings)}
    for module in SETTINGS_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and issubclass(value, CommonSettings)
            ):
                names |= {f"SHOPMESH_{f.name.upper()}" for f in dataclasses.fields(value)}
    return names


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pods_are_locked_down(overlay: str) -> None:
    for where, spec in pod_specs(build(overlay)).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["memory"], (
                where,
                c["name"],
            )
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert mounts, f"{where}/{c['name']}: read-only root and nothing writable"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_grpc_services_probe_their_serving_port_and_drain_within_the_grace_period(overlay: str) -> None:
    docs = build(overlay)
    grace = float(config(docs)["SHOPMESH_SHUTDOWN_GRACE_SECONDS"])
    deployments = of_kind(docs, "Deployment")
    for name, port in GRPC_SERVICES.items():
        spec = deployments[name]["spec"]["template"]["spec"]
        (main,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["SHOPMESH_GRPC_PORT"] == str(port)
        assert {p["name"]: p["containerPort"] for p in main["ports"]}["grpc"] == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["grpc"]["port"] == port, (name, probe)
        pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] > pre_stop + grace, name
        # the migration runs before the server, as the same role
        (migrate,) = spec["initContainers"]
        assert migrate["command"][:3] == ["python", "-m", "meshkit.migrate"]
        init_env = {e["name"]: e for e in migrate["env"]}
        assert init_env["SHOPMESH_DATABASE_URL"]["value"] == env["SHOPMESH_DATABASE_URL"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_environment_names_are_ones_the_code_reads(overlay: str) -> None:
    docs = build(overlay)
    used = {k for k in config(docs) if k.startswith("SHOPMESH_")}
    for spec in pod_specs(docs).values():
        for c in spec.get("initContainers", []) + spec["containers"]:
            used |= {e["name"] for e in c.get("env", []) if e["name"].startswith("SHOPMESH_")}
    unknown = used - known_settings()
    assert not unknown, f"not a settings field anywhere: {sorted(unknown)}"


def test_peers_are_balanced_client_side_over_headless_services() -> None:
    docs = build("prod")
    cfg = config(docs)
    services = of_kind(docs, "Service")
    for name, port in GRPC_SERVICES.items():
        assert services[name]["spec"]["clusterIP"] == "None", name
        assert cfg[f"SHOPMESH_{name.upper()}_ADDR"] == f"dns:///{name}.shopmesh.svc.cluster.local:{port}"


def test_prod_autoscales_and_budgets_every_app() -> None:
    docs = build("prod")
    deployments, hpas, pdbs = (
        of_kind(docs, "Deployment"),
        of_kind(docs, "HorizontalPodAutoscaler"),
        of_kind(docs, "PodDisruptionBudget"),
    )
    for app in APPS:
        spec = deployments[app]["spec"]
        assert "replicas" not in spec, f"{app}: the HPA owns replicas; apply would reset them"
        assert hpas[app]["spec"]["scaleTargetRef"]["name"] == app
        assert hpas[app]["spec"]["minReplicas"] >= 3
        assert hpas[app]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert pdbs[app]["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
        affinity = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert affinity["preferredDuringSchedulingIgnoredDuringExecution"], app
        assert spec["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1"


def test_dev_runs_one_of_everything_with_replication_factor_one() -> None:
    docs = build("dev")
    assert all(d["spec"]["replicas"] == 1 for d in of_kind(docs, "Deployment").values())
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    (pool,) = of_kind(docs, "KafkaNodePool").values()
    assert pool["spec"]["replicas"] == 1 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    for topic in of_kind(docs, "KafkaTopic").values():
        assert topic["spec"]["replicas"] == 1 and topic["spec"]["config"]["min.insync.replicas"] == 1
    assert of_kind(docs, "Cluster")["shopmesh-pg"]["spec"]["instances"] == 1


def test_prod_topics_replicate_three_ways_and_need_two_in_sync() -> None:
    docs = build("prod")
    topics = of_kind(docs, "KafkaTopic")
    assert set(topics) == {"inventory-events", "order-events", "catalog-events"}
    for topic in topics.values():
        assert topic["spec"]["replicas"] == 3 and topic["spec"]["config"]["min.insync.replicas"] == 2
    kafka = of_kind(docs, "Kafka")["shopmesh-kafka"]["spec"]["kafka"]
    assert kafka["config"]["min.insync.replicas"] == 2
    pools = of_kind(docs, "KafkaNodePool")
    assert pools["controller"]["spec"]["roles"] == ["controller"] and pools["broker"]["spec"]["replicas"] >= 3


def test_postgres_has_one_role_and_schema_per_service() -> None:
    docs = build("prod")
    cluster = of_kind(docs, "Cluster")["shopmesh-pg"]["spec"]
    roles = {r["name"] for r in cluster["managed"]["roles"]}
    database = of_kind(docs, "Database")["shopmesh"]["spec"]
    schemas = {s["name"]: s["owner"] for s in database["schemas"]}
    assert schemas == {"catalog": "catalog", "inventory": "inventory", "orders": "orders"}
    assert roles == set(schemas.values())
    assert cluster["bootstrap"]["initdb"]["database"] == database["name"] == "shopmesh"
    # each service connects as its own role
    urls = {
        name: {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}[
            "SHOPMESH_DATABASE_URL"
        ]
        for name, d in of_kind(docs, "Deployment").items()
        if name in GRPC_SERVICES
    }
    assert {u.split("//")[1].split("@")[0] for u in urls.values()} == roles


def test_batch_jobs_run_shopctl_on_their_schedules() -> None:
    jobs = of_kind(build("prod"), "CronJob")
    wanted = {
        "recommendations": (["shopctl", "recs", "compute"], "nightly"),
        "order-archival": (["shopctl", "orders", "archive"], "monthly"),
        "retention": (["shopctl", "retention", "run"], "daily"),
        "search-reconcile": (["shopctl", "search", "reconcile"], "hourly"),
    }
    assert set(jobs) == set(wanted)
    for name, (command, cadence) in wanted.items():
        spec = jobs[name]["spec"]
        minute, hour, day, month, weekday = spec["schedule"].split()
        assert spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] == command
        assert spec["concurrencyPolicy"] == "Forbid"
        kinds = {
            "hourly": hour == "*" and day == "*",
            "daily": hour.isdigit() and day == "*" and weekday == "*",
            "nightly": hour.isdigit() and int(hour) < 6 and day == "*" and weekday == "*",
            "monthly": hour.isdigit() and day.isdigit() and month == "*",
        }
        assert minute.isdigit() and kinds[cadence], (name, spec["schedule"])


def test_only_the_gateway_takes_traffic_from_outside_the_namespace_besides_scrapes_and_operators() -> None:
    policies = of_kind(build("prod"), "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    outside_ok = {"monitoring", "cnpg-system", "opensearch-operator-system"}
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                ns = (
                    peer.get("namespaceSelector", {})
                    .get("matchLabels", {})
                    .get("kubernetes.io/metadata.name")
                )
                if ns == "ingress-nginx":
                    assert policy["spec"]["podSelector"] == {
                        "matchLabels": {"app.kubernetes.io/name": "gateway"}
                    }
                elif "namespaceSelector" in peer:
                    assert ns in outside_ok, (name, peer)
    mesh = policies["services-from-mesh"]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][
        0
    ]
    assert sorted(mesh["values"]) == sorted(APPS)
    search = policies["opensearch-from-owners"]["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert sorted(search["matchExpressions"][0]["values"]) == ["catalog", "shopctl"]


def test_prometheus_rule_carries_the_seed_alerts_on_the_seed_metrics() -> None:
    (rule,) = of_kind(build("prod"), "PrometheusRule").values()
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) >= {
        "HighCheckoutFailureRate",
        "InventoryOversell",
        "SearchLatencyHigh",
        "OpenSearchCircuitOpen",
    }
    assert "orders_total" in alerts["HighCheckoutFailureRate"]["expr"]
    assert "inventory_oversell_total" in alerts["InventoryOversell"]["expr"]
    assert "search_latency_seconds_bucket" in alerts["SearchLatencyHigh"]["expr"]
    assert 'circuit_breaker_state{service="opensearch"}' in alerts["OpenSearchCircuitOpen"]["expr"]


def test_prod_connection_budget_fits_max_connections_at_full_scale() -> None:
    docs = build("prod")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    budget = 0
    for name, d in of_kind(docs, "Deployment").items():
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        if "SHOPMESH_DATABASE_URL" in env:
            budget += hpas[name]["spec"]["maxReplicas"] * int(env["SHOPMESH_DB_POOL_MAX"])
    for job in of_kind(docs, "CronJob").values():
        env = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        budget += int({e["name"]: e.get("value") for e in env}["SHOPMESH_DB_POOL_MAX"])
    cluster = of_kind(docs, "Cluster")["shopmesh-pg"]["spec"]
    # CloudNativePG's own connections (replication, instance manager) and superuser_reserved need room
    assert budget + 50 <= int(cluster["postgresql"]["parameters"]["max_connections"]), budget


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_servers_listen_on_the_pod_network(overlay: str) -> None:
    docs = build(overlay)
    assert config(docs)["SHOPMESH_GRPC_HOST"] == "0.0.0.0"
    gateway = of_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["SHOPMESH_GATEWAY_HOST"] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]}["http"] == int(
        env["SHOPMESH_GATEWAY_PORT"]
    )
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_gateway_believes_the_ingress_controllers_forwarded_for(overlay: str) -> None:
    """Anonymous rate limits are per client IP: behind the Ingress the TCP peer is the controller's pod,
    so uvicorn must take X-Forwarded-For from pod addresses (and only they may connect: policy above)."""
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    gateway = of_kind(build(overlay), "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    trusted = _TrustedHosts({e["name"]: e.get("value") for e in gateway["env"]}["SHOPMESH_TRUSTED_PROXIES"])
    for pod in ("10.244.1.17", "172.20.3.4", "192.168.5.6", "fd00::12"):
        assert pod in trusted, pod
    assert "203.0.113.9" not in trusted  # a public address is never a proxy of ours


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_ingress_publishes_the_api_and_its_reference_but_not_metrics(overlay: str) -> None:
    """Every REST path of the contract is reachable from outside; the gateway's /metrics (counts per
    route and user-facing errors) and /healthz are not."""
    from gateway.app import FIXED_PATHS, load_api_routes

    (ingress,) = of_kind(build(overlay), "Ingress").values()
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]

    def routed(path: str) -> bool:
        return any(
            path == p["path"]
            if p["pathType"] == "Exact"
            else path == p["path"] or path.startswith(p["path"] + "/")
            for p in paths
        )

    for route in load_api_routes():
        assert routed(route.path.template.split("{")[0].rstrip("/") or "/"), route.path.template
    assert routed("/openapi.json") and routed("/docs") and routed("/docs/static/swagger-ui.css")
    for internal in set(FIXED_PATHS) - {"/openapi.json", "/docs"}:
        assert not routed(internal), internal


@pytest.mark.parametrize(("overlay", "shards", "replicas"), [("dev", "1", "0"), ("prod", "5", "1")])
def test_catalog_creates_the_index_shape_of_its_environment(overlay: str, shards: str, replicas: str) -> None:
    catalog = of_kind(build(overlay), "Deployment")["catalog"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in catalog["env"]}
    assert (env["SHOPMESH_SEARCH_SHARDS"], env["SHOPMESH_SEARCH_REPLICAS"]) == (shards, replicas)
    # the recommendations CronJob is the only scheduler of the nightly run
    assert env["SHOPMESH_RECS_NIGHTLY_HOUR_UTC"] == "-1"


def test_valkey_admits_the_gateway_for_rate_limits() -> None:
    policy = of_kind(build("prod"), "NetworkPolicy")["valkey-from-owners"]["spec"]
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert sorted(allowed) == sorted([*APPS, "shopctl"])
