"""deploy/: every Kubernetes manifest validates against the Kubernetes schemas (kubernetes-validate, offline) and
agrees with dagcache itself: its config.toml loads into Settings, the Secret's variables are real settings, the
probes hit the admin port's /healthz and /readyz, the Services reach the port dagcache listens on, and the
containers run non-root on a read-only root filesystem. The Helm values' sidecar is checked the same way."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from proxy.config import ENV_PREFIX, Settings, load_config

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
HELM_VALUES = REPO / "deploy" / "helm" / "values-airflow.yaml"
# The oldest Kubernetes release the manifests claim to support, and the newest the validator knows.
KUBE_VERSIONS = ("1.29", "1.37")

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(directory: Path) -> Doc:
    return load_docs(directory / "kustomization.yaml")[0]


def resources_of(directory: Path) -> list[Doc]:
    return [doc for item in kustomization(directory)["resources"] for doc in load_docs(directory / item)]


def validate(doc: Doc) -> None:
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def strategic_merge(base: Any, patch: Any) -> Any:
    """Enough of kubectl's strategic merge for these patches: maps merge, lists of named items (or ports) merge
    by name (or port number), anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) for i in base + patch):
        merge_key = "name" if all("name" in i for i in base + patch) else "port"
        merged_list = [copy.deepcopy(i) for i in base]
        for item in patch:
            match = [n for n, old in enumerate(merged_list) if old.get(merge_key) == item.get(merge_key)]
            if match:
                merged_list[match[0]] = strategic_merge(merged_list[match[0]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


# What the official chart renders for the api-server of the release "airflow", reduced to what the patches meet.
CHART_API_SERVER: list[Doc] = [
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "airflow-api-server"},
        "spec": {
            "selector": {"matchLabels": {"tier": "airflow", "component": "api-server", "release": "airflow"}},
            "template": {
                "metadata": {"labels": {"tier": "airflow", "component": "api-server", "release": "airflow"}},
                "spec": {
                    "containers": [
                        {
                            "name": "api-server",
                            "image": "apache/airflow:3.1.0",
                            "args": ["bash", "-c", "exec airflow api-server"],
                            "ports": [{"name": "api-server", "containerPort": 8080}],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "airflow-config"}}],
                },
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "airflow-api-server"},
        "spec": {
            "selector": {"tier": "airflow", "component": "api-server", "release": "airflow"},
            "ports": [{"name": "api-server", "port": 8080}],
        },
    },
]


def sidecar_rendered() -> list[Doc]:
    """The sidecar overlay applied to the chart's api-server objects, as `kubectl apply -k` would produce."""
    directory = KUBE / "sidecar"
    docs = [*resources_of(directory), *copy.deepcopy(CHART_API_SERVER)]
    for patch in kustomization(directory)["patches"]:
        target = patch["target"]
        matches = [d for d in docs if (d["kind"], d["metadata"]["name"]) == (target["kind"], target["name"])]
        assert len(matches) == 1, f"patch {patch['path']} targets {target}, found {len(matches)}"
        (body,) = load_docs(directory / patch["path"])
        docs[docs.index(matches[0])] = strategic_merge(matches[0], body)
    return docs


def standalone_rendered() -> list[Doc]:
    return resources_of(KUBE / "standalone")


RENDERED = {"standalone": standalone_rendered, "sidecar": sidecar_rendered}


@dataclass(frozen=True)
class Dagcache:
    """The dagcache container of a layout, its pod, and the Settings its config and Secret produce."""

    container: Doc
    pod: Doc
    settings: Settings
    docs: list[Doc]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def settings_from(config_toml: str, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(config_toml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_config(path)


def mounted_config(container: Doc, pod: Doc, configmaps: dict[str, Doc]) -> str:
    """config.toml as the container sees it: --config PATH resolved through its volume mounts."""
    args = container["args"]
    path = Path(args[args.index("--config") + 1])
    mounts = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    assert len(mounts) == 1, f"nothing mounted at {path.parent}"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    data: dict[str, str] = configmaps[volume["configMap"]["name"]]["data"]
    assert path.name in data, f"ConfigMap {volume['configMap']['name']} has no key {path.name}"
    return data[path.name]


def secret_env(container: Doc, secrets: dict[str, Doc]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]]["stringData"])
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and ref["name"] in secrets:
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def dagcache_of(docs: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dagcache:
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    found = [(c, pod) for pod in pods for c in pod["containers"] if c["name"] == "dagcache"]
    assert len(found) == 1, "exactly one dagcache container"
    container, pod = found[0]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    env = secret_env(container, secrets)
    settings = settings_from(mounted_config(container, pod, configmaps), env, tmp_path, monkeypatch)
    return Dagcache(container, pod, settings, docs)


@pytest.fixture(params=sorted(RENDERED))
def layout(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dagcache:
    return dagcache_of(RENDERED[request.param](), tmp_path, monkeypatch)


def port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return int(numbers[0])


def yaml_files() -> Iterator[Path]:
    yield from sorted(KUBE.rglob("*.yaml"))


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_rendered_object_is_a_valid_kubernetes_object(name: str) -> None:
    docs = RENDERED[name]()
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        validate(doc)


@pytest.mark.parametrize("directory", ["standalone", "sidecar"])
def test_the_kustomization_lists_every_file_and_nothing_missing(directory: str) -> None:
    path = KUBE / directory
    listed = {*kustomization(path)["resources"], *(p["path"] for p in kustomization(path).get("patches", []))}
    present = {p.name for p in path.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_every_manifest_file_is_yaml_with_kubernetes_headers() -> None:
    files = list(yaml_files())
    assert len(files) >= 12
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for doc in load_docs(path):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path


def test_config_and_secret_load_into_settings(layout: Dagcache) -> None:
    settings = layout.settings
    assert settings.redis.url and settings.database.url, "the Secret provides both URLs"
    assert settings.admin.enabled
    assert settings.upstream.readiness_path == "/api/v2/monitor/health"


def test_secret_keys_are_dagcache_settings(layout: Dagcache) -> None:
    secrets = {d["metadata"]["name"]: d for d in layout.docs if d["kind"] == "Secret"}
    for name in secret_env(layout.container, secrets):
        assert name.startswith(ENV_PREFIX), name
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("__")
        model = Settings.model_fields[section].annotation
        assert model is not None and key in model.model_fields, name


def test_probes_hit_the_admin_port(layout: Dagcache) -> None:
    container, admin = layout.container, layout.settings.admin.port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(container, container[probe]["httpGet"]["port"]) == admin


def test_the_container_listens_where_the_config_says(layout: Dagcache) -> None:
    numbers = {p["containerPort"] for p in layout.container["ports"]}
    assert numbers == {layout.settings.server.port, layout.settings.admin.port}
    other = [c for c in layout.pod["containers"] if c is not layout.container]
    taken = {p["containerPort"] for c in other for p in c.get("ports", [])}
    assert not numbers & taken, "dagcache's ports collide with another container of the pod"


def test_the_service_in_front_reaches_dagcache(layout: Dagcache) -> None:
    selectors = [d for d in layout.docs if d["kind"] == "Service"]
    pod_labels = next(
        d["spec"]["template"]["metadata"]["labels"]
        for d in layout.docs
        if d["kind"] == "Deployment" and layout.pod is d["spec"]["template"]["spec"]
    )
    # standalone: Service "dagcache"; sidecar: the api-server Service, patched.
    name = "dagcache" if any(s["metadata"]["name"] == "dagcache" for s in selectors) else "airflow-api-server"
    service = named(layout.docs, "Service", name)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert port_number(layout.container, target) == layout.settings.server.port


def test_the_sidecar_keeps_a_direct_path_for_the_execution_api() -> None:
    docs = sidecar_rendered()
    direct = named(docs, "Service", "airflow-api-server-direct")
    api_server = named(docs, "Deployment", "airflow-api-server")["spec"]["template"]
    main = next(c for c in api_server["spec"]["containers"] if c["name"] == "api-server")
    assert direct["spec"]["selector"].items() <= api_server["metadata"]["labels"].items()
    assert [port_number(main, p["targetPort"]) for p in direct["spec"]["ports"]] == [8080]


def test_the_standalone_ingress_sends_the_execution_api_around_dagcache() -> None:
    docs = standalone_rendered()
    ingress = named(docs, "Ingress", "airflow")
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/execution/": "airflow-api-server", "/": "dagcache"}
    upstream = dagcache_settings_standalone().upstream.url
    assert upstream == "http://airflow-api-server:8080"


def dagcache_settings_standalone() -> Settings:
    docs = standalone_rendered()
    config = named(docs, "ConfigMap", "dagcache-config")["data"]["config.toml"]
    return Settings(**tomllib.loads(config))


def test_the_hpa_scales_the_deployment() -> None:
    docs = standalone_rendered()
    hpa = named(docs, "HorizontalPodAutoscaler", "dagcache")
    target = hpa["spec"]["scaleTargetRef"]
    assert named(docs, target["kind"], target["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    container = next(c for c in named(docs, "Deployment", "dagcache")["spec"]["template"]["spec"]["containers"])
    assert container["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"


def test_containers_run_non_root_on_a_read_only_root(layout: Dagcache) -> None:
    pod_context = layout.pod.get("securityContext", {})
    context = {**pod_context, **layout.container["securityContext"]}
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= layout.container["resources"].keys()
    grace = layout.pod.get("terminationGracePeriodSeconds", 30)
    assert grace > layout.settings.server.shutdown_grace


# --- the Helm values for the official chart -----------------------------------------------------------------------


def helm_values() -> Doc:
    # What the chart's `tpl` does to these values for the release "airflow".
    values: Doc = yaml.safe_load(HELM_VALUES.read_text().replace("{{ .Release.Name }}", "airflow"))
    return values


def helm_rendered() -> list[Doc]:
    """The objects the chart builds from these values, as far as dagcache is concerned: the api-server pod with
    the extra container and volumes, the extra ConfigMap and Secret (names templated with the release)."""
    values = helm_values()
    api = values["apiServer"]
    pod = copy.deepcopy(CHART_API_SERVER[0])
    spec = pod["spec"]["template"]["spec"]
    spec["containers"] += api["extraContainers"]
    spec["volumes"] += api["extraVolumes"]
    docs = [pod]
    for name, body in values["extraConfigMaps"].items():
        meta = {"name": name}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": yaml.safe_load(body["data"])})
    for name, body in values["extraSecrets"].items():
        meta = {"name": name}
        data = yaml.safe_load(body["stringData"])
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": data})
    # The chart's own metadata Secret (key "connection"), which the sidecar reuses.
    metadata_url = "postgresql://postgres:postgres@airflow-postgresql.default:5432/postgres?sslmode=disable"
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "airflow-metadata"},
            "stringData": {"connection": metadata_url},
        }
    )
    return docs


def test_helm_extra_container_is_a_valid_container_spec() -> None:
    for doc in helm_rendered():
        validate(doc)
    for container in helm_values()["apiServer"]["extraContainers"]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [container]}}
        validate(pod)


def test_helm_sidecar_config_probes_and_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = dagcache_of(helm_rendered(), tmp_path, monkeypatch)
    test_config_and_secret_load_into_settings(sidecar)
    test_probes_hit_the_admin_port(sidecar)
    test_the_container_listens_where_the_config_says(sidecar)
    test_containers_run_non_root_on_a_read_only_root(sidecar)
    assert sidecar.settings.upstream.url == "http://127.0.0.1:8080"


def test_helm_service_and_ingress_route_to_dagcache_but_not_the_execution_api() -> None:
    values = helm_values()
    container = values["apiServer"]["extraContainers"][0]
    service_ports = {p["name"]: p["port"] for p in values["apiServer"]["service"]["ports"]}
    # The chart's Service ports have no targetPort: the port number is the container port it reaches.
    assert port_number(container, "dagcache") == service_ports["dagcache"]
    assert service_ports["api-server"] == "{{ .Values.ports.apiServer }}"
    ingress = values["ingress"]["apiServer"]
    assert ingress["enabled"] and (ingress["path"], ingress["pathType"]) == ("/execution", "Prefix")
    (catch_all,) = ingress["precedingPaths"]
    assert (catch_all["path"], catch_all["pathType"], catch_all["servicePort"]) == ("/", "Prefix", "dagcache")
    assert catch_all["serviceName"] == "airflow-api-server"
