"""deploy/k8s matches the code: the checks docker-compose.yml passes (tests/unit/test_deploy.py),
run on the Kubernetes manifests, and what only Kubernetes has: probes, Services, pod security,
resources and the grace period."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import CommonSettings, GraderSettings
from tests.unit.test_deploy import (
    COMPOSE,
    PORT_FIELD,
    ROOT,
    SAMPLE_DOTENV,
    SETTINGS_BY_COMMAND,
    console_script,
    env_problems,
    load_yaml,
    placeholder_problems,
    value_problems,
)

K8S = ROOT / "deploy" / "k8s"
WORKLOADS = frozenset({"Deployment", "Job", "StatefulSet", "DaemonSet"})
TOPIC_FIELDS = ("topic_events", "topic_tier_changes", "topic_dlq")
# What a filled-in Secret holds: stand-ins that pass validation.
SAMPLE_SECRETS = {
    "TIERFLOW_DATABASE_URL": "postgresql+asyncpg://tierflow:pw@postgres:5432/tierflow",
    "TIERFLOW_API_KEYS": SAMPLE_DOTENV["TIERFLOW_API_KEYS"],
    "TIERFLOW_WEBHOOK_SECRETS_KEY": SAMPLE_DOTENV["TIERFLOW_WEBHOOK_SECRETS_KEY"],
}
# A consumer's resident memory: docs/performance.md#memory.
CONSUMER_BASE_MIB = 100
CHECKPOINT_EVENT_BYTES = 4_000
QUANTITY = re.compile(r"^(?P<number>[0-9.]+)(?P<unit>m|Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
UNITS = {
    None: 1, "m": 0.001, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}

Docs = list[dict[str, Any]]


def load_manifests(directory: Path = K8S) -> Docs:
    """Every document of every YAML file in `directory` (yaml.safe_load_all)."""
    docs = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: a document is not a mapping"
                docs.append(doc)
    return docs


def label(doc: dict[str, Any]) -> str:
    """`Deployment/tierflow-ingest`."""
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def find(docs: Docs, kind: str, name: str) -> dict[str, Any] | None:
    """The manifest of that kind and name."""
    return next((d for d in docs if d.get("kind") == kind
                 and d.get("metadata", {}).get("name") == name), None)


def quantity(text: object) -> float:
    """A Kubernetes quantity (`500m`, `2`, `512Mi`) as a number (cores, bytes)."""
    match = QUANTITY.match(str(text))
    assert match, f"{text!r} is not a quantity"
    return float(match["number"]) * UNITS[match["unit"]]


def manifest_problems(docs: Docs) -> list[str]:
    """Every document names its kind and itself, once, and no namespace (plain YAML that
    `kubectl apply -n NAMESPACE` places)."""
    problems = []
    seen = set()
    for doc in docs:
        if not doc.get("apiVersion") or not doc.get("kind") or not doc.get(
                "metadata", {}).get("name"):
            problems.append(f"{label(doc)}: apiVersion, kind and metadata.name are required")
        if "namespace" in doc.get("metadata", {}):
            problems.append(f"{label(doc)}: names a namespace")
        if label(doc) in seen:
            problems.append(f"{label(doc)}: defined twice")
        seen.add(label(doc))
    kinds = {doc.get("kind") for doc in docs}
    for kind in ("ConfigMap", "Secret", "Deployment", "Service", "Job"):
        if kind not in kinds:
            problems.append(f"no {kind}")
    return problems


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a workload."""
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def is_tierflow(image: str) -> bool:
    """`tierflow:latest`, `registry.example.com/team/tierflow:0.1.0` (not `apache/kafka`)."""
    return re.split(r"[:@]", image.rsplit("/", 1)[-1])[0] == "tierflow"


def tierflow_containers(docs: Docs) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(`Kind/name/container`, workload, container) for every container of our image."""
    for doc in docs:
        if doc.get("kind") in WORKLOADS:
            spec = pod_spec(doc)
            for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                if is_tierflow(str(container.get("image", ""))):
                    yield f"{label(doc)}/{container.get('name')}", doc, container


def source_values(docs: Docs, kind: str, name: str) -> dict[str, str] | None:
    """A ConfigMap's data, or a Secret's stringData and (decoded) data; None if missing."""
    doc = find(docs, kind, name)
    if doc is None:
        return None
    values = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
    if kind == "Secret":
        values = {k: base64.b64decode(v).decode() for k, v in values.items()}
        values.update({str(k): str(v) for k, v in (doc.get("stringData") or {}).items()})
    return values


def container_env(
    docs: Docs, container: dict[str, Any], secrets: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The environment a container gets (envFrom, then env, as the kubelet does it), and
    references to what does not exist. `secrets`, by variable, replace values from Secrets."""
    env: dict[str, str] = {}
    problems = []
    filled = secrets or {}

    def put(var: str, value: str, kind: str) -> None:
        env[var] = filled.get(var, value) if kind == "Secret" else value

    for source in container.get("envFrom", []):
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key in source:
                values = source_values(docs, kind, source[key]["name"])
                if values is None:
                    problems.append(f"envFrom: no {kind} {source[key]['name']}")
                    continue
                for var, value in values.items():
                    put(source.get("prefix", "") + var, value, kind)
    for item in container.get("env", []):
        var = item["name"]
        if "value" in item:
            env[var] = str(item["value"])
            continue
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = item.get("valueFrom", {}).get(key)
            if ref is None:
                continue
            values = source_values(docs, kind, ref["name"]) or {}
            if ref["key"] not in values:
                problems.append(f"{var}: no key {ref['key']} in {kind} {ref['name']}")
            else:
                put(var, values[ref["key"]], kind)
    return env, problems


def as_compose(docs: Docs, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each tierflow container as a compose service (its args as the command, its resolved
    environment), so the compose checks of test_deploy.py apply unchanged."""
    services = {}
    for name, _, container in tierflow_containers(docs):
        env, _ = container_env(docs, container, secrets)
        services[name] = {"image": "tierflow", "command": container.get("args", []),
                          "environment": env}
    return {"services": services}


def reference_problems(docs: Docs) -> list[str]:
    """Every ConfigMap, Secret and key a container's environment names exists."""
    return [f"{name}: {problem}" for name, _, container in tierflow_containers(docs)
            for problem in container_env(docs, container)[1]]


def command_problems(docs: Docs) -> list[str]:
    """The image's entrypoint is `tierflow`; the args are its subcommands: migrate in a
    Job, the three processes in Deployments."""
    cli, _ = console_script()
    problems = []
    used = {}
    for name, doc, container in tierflow_containers(docs):
        args = [str(a) for a in container.get("args", [])]
        if "command" in container:
            problems.append(f"{name}: sets command (the image's entrypoint is `tierflow`)")
        if not args or args[0] not in cli.SUBCOMMANDS:
            problems.append(f"{name}: {args} is not a `tierflow` subcommand")
            continue
        used[args[0]] = doc["kind"]
    wanted = {"migrate": "Job", "ingest": "Deployment", "grader": "Deployment",
              "notifier": "Deployment"}
    if used != wanted:
        problems.append(f"runs {used}, expected {wanted}")
    return problems


def args_cmd(container: dict[str, Any]) -> str:
    """The subcommand a container runs."""
    return str((container.get("args") or [""])[0])


def listening_port(cmd: str, env: Mapping[str, str]) -> tuple[int, int]:
    """(the port the process listens on, the port it should): for a grader consumer, its
    own default (health and metrics), for the rest, their settings default."""
    field = PORT_FIELD[cmd]
    defaults = SETTINGS_BY_COMMAND[cmd].model_fields
    listens = int(env.get(f"TIERFLOW_{field.upper()}", defaults[field].default))
    if env.get("TIERFLOW_GRADER_ROLE") == "consumer":
        return listens, int(GraderSettings.model_fields["grader_consumer_port"].default)
    return listens, int(defaults[field].default)


def probe_port(probe: dict[str, Any], container: dict[str, Any]) -> int | None:
    """The port an httpGet probe (or a Service's targetPort) names, by number or name."""
    port = probe.get("httpGet", {}).get("port") if "httpGet" in probe else probe.get("port")
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared.get("containerPort")):
            return int(declared["containerPort"])
    return int(port) if isinstance(port, int) else None


def port_problems(docs: Docs) -> list[str]:
    """Each process listens on its settings default, declares that port, is probed on it
    (/readyz for readiness, /healthz for liveness and start-up) and scraped on it."""
    problems = []
    for name, doc, container in tierflow_containers(docs):
        cmd = args_cmd(container)
        if cmd not in PORT_FIELD:
            continue
        env, _ = container_env(docs, container)
        listens, expected = listening_port(cmd, env)
        if listens != expected:
            problems.append(f"{name}: listens on {listens}, expected {expected}")
        declared = [p.get("containerPort") for p in container.get("ports", [])]
        if declared != [expected]:
            problems.append(f"{name}: containerPorts {declared}, expected [{expected}]")
        for probe, path, required in (("readinessProbe", "/readyz", True),
                                      ("livenessProbe", "/healthz", True),
                                      ("startupProbe", "/healthz", False)):
            spec = container.get(probe)
            if spec is None:
                if required:
                    problems.append(f"{name}: no {probe}")
                continue
            if spec.get("httpGet", {}).get("path") != path:
                problems.append(f"{name}: {probe} is not on {path}")
            if probe_port(spec, container) != expected:
                problems.append(f"{name}: {probe} is not on port {expected}")
        annotations = doc["spec"]["template"].get("metadata", {}).get("annotations", {})
        if annotations.get("prometheus.io/port", str(expected)) != str(expected):
            problems.append(f"{name}: Prometheus is told to scrape another port than {expected}")
    return problems


def topic_problems(docs: Docs) -> list[str]:
    """Every process is told the topics and their partitions, equal to the settings
    defaults (what kafka-init and docker-compose.yml use too)."""
    problems = []
    defaults = CommonSettings.model_fields
    for name, _, container in tierflow_containers(docs):
        env, _ = container_env(docs, container)
        for field in (*TOPIC_FIELDS, "events_partitions"):
            value = env.get(f"TIERFLOW_{field.upper()}")
            if value != str(defaults[field].default):
                problems.append(f"{name}: TIERFLOW_{field.upper()} is {value!r}, the code"
                                f" uses {defaults[field].default!r}")
    return problems


def template_labels(doc: dict[str, Any]) -> dict[str, str]:
    """A workload's pod labels."""
    labels: dict[str, str] = doc["spec"]["template"].get("metadata", {}).get("labels", {})
    return labels


def service_problems(docs: Docs) -> list[str]:
    """Each Service selects the pods of one Deployment and forwards to the port its
    process listens on, under the same number; every HTTP API has one; consumers none."""
    problems = []
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    served = set()
    for service in (d for d in docs if d.get("kind") == "Service"):
        selector = service["spec"].get("selector") or {}
        chosen = [d for d in deployments if selector
                  and selector.items() <= template_labels(d).items()]
        if len(chosen) != 1:
            problems.append(f"{label(service)}: selects {[label(d) for d in chosen]}")
            continue
        served.add(label(chosen[0]))
        container = pod_spec(chosen[0])["containers"][0]
        for port in service["spec"].get("ports", []):
            target = probe_port({"port": port.get("targetPort", port["port"])}, container)
            declared = [p.get("containerPort") for p in container.get("ports", [])]
            if target not in declared or port["port"] != target:
                problems.append(f"{label(service)}: port {port['port']} -> {target}, but"
                                f" {label(chosen[0])} listens on {declared}")
    for name, doc, container in tierflow_containers(docs):
        if doc["kind"] != "Deployment":
            continue
        env, _ = container_env(docs, container)
        consumer = env.get("TIERFLOW_GRADER_ROLE") == "consumer"
        if consumer and label(doc) in served:
            problems.append(f"{name}: consumers serve no API, a Service has nothing to send")
        if not consumer and label(doc) not in served:
            problems.append(f"{name}: no Service")
    return problems


def compose_grace_s() -> int:
    """docker-compose.yml's stop_grace_period of the tierflow processes, in seconds."""
    grace = str(load_yaml(COMPOSE)["services"]["grader-consumer"]["stop_grace_period"])
    match = re.fullmatch(r"(\d+)s", grace)
    assert match, grace
    return int(match[1])


def security_problems(docs: Docs) -> list[str]:
    """Not root (by number: the image's USER is a name the kubelet cannot check), no
    privilege escalation, requests and limits of CPU and memory, the grace period the
    processes' drain needs (as in docker-compose.yml), and a preStop pause inside it."""
    problems = []
    grace = compose_grace_s()
    for name, doc, container in tierflow_containers(docs):
        pod = pod_spec(doc)
        context = {**(pod.get("securityContext") or {}),
                   **(container.get("securityContext") or {})}
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if not isinstance(context.get("runAsUser"), int) or context["runAsUser"] == 0:
            problems.append(f"{name}: runAsUser is not a numeric, non-root user")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(kind) or {}):
                    problems.append(f"{name}: no {resource} in resources.{kind}")
                elif resource in (resources.get("requests") or {}) and kind == "limits" \
                        and quantity(resources["limits"][resource]) < quantity(
                            resources["requests"][resource]):
                    problems.append(f"{name}: {resource} limit below its request")
        if doc["kind"] != "Deployment":
            continue
        if pod.get("terminationGracePeriodSeconds") != grace:
            problems.append(f"{name}: terminationGracePeriodSeconds is not {grace}"
                            " (docker-compose.yml's stop_grace_period)")
        pause = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        words = [str(w) for w in pause.get("command", [])]
        if words and (words[0] != "sleep" or int(words[1]) >= grace // 2):
            problems.append(f"{name}: preStop {words} leaves the drain too little of {grace}s")
    return problems


def capacity_problems(docs: Docs) -> list[str]:
    """Consumers: no more replicas than partitions, memory for their state; the API: as
    many simulate workers as its CPU limit (the default counts the node's cores)."""
    problems = []
    for name, doc, container in tierflow_containers(docs):
        env, _ = container_env(docs, container)
        role = env.get("TIERFLOW_GRADER_ROLE")
        grader = GraderSettings.model_fields
        limits = (container.get("resources") or {}).get("limits") or {}
        if role == "consumer":
            partitions = int(env.get("TIERFLOW_EVENTS_PARTITIONS",
                                     grader["events_partitions"].default))
            if int(doc["spec"].get("replicas", 1)) > partitions:
                problems.append(f"{name}: more replicas than the {partitions} partitions")
            state_mib = int(env.get("TIERFLOW_STATE_MEMORY_MB", grader["state_memory_mb"].default))
            checkpoint = int(env.get("TIERFLOW_CHECKPOINT_MAX_EVENTS",
                                     grader["checkpoint_max_events"].default))
            needed = (CONSUMER_BASE_MIB + state_mib) * 2**20 + CHECKPOINT_EVENT_BYTES * checkpoint
            if "memory" in limits and quantity(limits["memory"]) < needed:
                problems.append(f"{name}: a memory limit of {limits['memory']} cannot hold"
                                f" {state_mib} MiB of state (about {needed / 2**20:.0f} MiB)")
        if role in ("api", "all"):
            workers = env.get("TIERFLOW_SIMULATE_WORKERS", "0")
            if workers == "0" or ("cpu" in limits and int(workers) > quantity(limits["cpu"])):
                problems.append(f"{name}: TIERFLOW_SIMULATE_WORKERS {workers} against a CPU"
                                f" limit of {limits.get('cpu')}")
        if args_cmd(container) == "grader" and doc["kind"] == "Deployment" \
                and role not in ("api", "consumer"):
            problems.append(f"{name}: a grader Deployment runs the `api` or `consumer` role")
    return problems


@pytest.fixture(scope="module")
def docs() -> Docs:
    return load_manifests()


def test_every_manifest_parses_and_names_itself(docs: Docs) -> None:
    assert manifest_problems(docs) == []


def test_every_tierflow_variable_is_a_settings_field(docs: Docs) -> None:
    assert reference_problems(docs) == []
    assert env_problems(as_compose(docs)) == []


def test_filled_in_values_pass_validation_and_pinned_ones_equal_defaults(docs: Docs) -> None:
    assert value_problems(as_compose(docs, SAMPLE_SECRETS)) == []


def test_the_secret_placeholders_do_not_pass_validation(docs: Docs) -> None:
    """The Secret as committed: every process refuses to start, naming each placeholder."""
    assert placeholder_problems(as_compose(docs), {}) == []


def test_args_are_tierflow_subcommands(docs: Docs) -> None:
    assert command_problems(docs) == []


def test_ports_and_probes_equal_the_settings_defaults(docs: Docs) -> None:
    assert port_problems(docs) == []


def test_topics_equal_the_settings_defaults(docs: Docs) -> None:
    assert topic_problems(docs) == []


def test_services_reach_the_processes(docs: Docs) -> None:
    assert service_problems(docs) == []


def test_pods_run_unprivileged_bounded_and_drain(docs: Docs) -> None:
    assert security_problems(docs) == []


def test_consumers_and_api_are_sized(docs: Docs) -> None:
    assert capacity_problems(docs) == []


def _workload(docs: Docs, name: str, kind: str = "Deployment") -> dict[str, Any]:
    doc = find(docs, kind, name)
    assert doc is not None, name
    return doc


def _container(docs: Docs, name: str, kind: str = "Deployment") -> dict[str, Any]:
    container: dict[str, Any] = pod_spec(_workload(docs, name, kind))["containers"][0]
    return container


def _env_var(docs: Docs, name: str, var: str) -> dict[str, Any]:
    item: dict[str, Any] = next(
        e for e in _container(docs, name).get("env", []) if e["name"] == var)
    return item


def _config(docs: Docs) -> dict[str, str]:
    doc = find(docs, "ConfigMap", "tierflow-config")
    assert doc is not None
    data: dict[str, str] = doc["data"]
    return data


def _renamed_var(docs: Docs) -> None:
    _config(docs)["TIERFLOW_KAFKA_BOOTSTRAPS"] = _config(docs).pop("TIERFLOW_KAFKA_BOOTSTRAP")


def _grader_var_for_everyone(docs: Docs) -> None:
    _config(docs)["TIERFLOW_CONSUMER_GROUP"] = "tierflow-grader"


def _moved_topic(docs: Docs) -> None:
    _config(docs)["TIERFLOW_TOPIC_TIER_CHANGES"] = "tiers"


def _secret_filled_in(docs: Docs) -> None:
    secret = find(docs, "Secret", "tierflow-secrets")
    assert secret is not None
    secret["stringData"]["TIERFLOW_DATABASE_URL"] = SAMPLE_SECRETS["TIERFLOW_DATABASE_URL"]


def _missing_config_map(docs: Docs) -> None:
    _container(docs, "tierflow-ingest")["envFrom"][0]["configMapRef"]["name"] = "tierflow"


def _moved_container_port(docs: Docs) -> None:
    _container(docs, "tierflow-ingest")["ports"][0]["containerPort"] = 9080


def _readiness_on_healthz(docs: Docs) -> None:
    _container(docs, "tierflow-grader-api")["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _liveness_on_another_port(docs: Docs) -> None:
    _container(docs, "tierflow-notifier")["livenessProbe"]["httpGet"]["port"] = 8080


def _consumer_on_the_api_port(docs: Docs) -> None:
    _env_var(docs, "tierflow-grader-consumer", "TIERFLOW_GRADER_PORT")["value"] = "8081"


def _unknown_subcommand(docs: Docs) -> None:
    _container(docs, "tierflow-notifier")["args"] = ["notify"]


def _migrate_in_a_deployment(docs: Docs) -> None:
    _container(docs, "tierflow-migrate", "Job")["args"] = ["ingest"]


def _more_consumers_than_partitions(docs: Docs) -> None:
    _workload(docs, "tierflow-grader-consumer")["spec"]["replicas"] = 13


def _state_beyond_the_memory_limit(docs: Docs) -> None:
    _env_var(docs, "tierflow-grader-consumer", "TIERFLOW_STATE_MEMORY_MB")["value"] = "4096"


def _simulate_on_every_core_of_the_node(docs: Docs) -> None:
    env = _container(docs, "tierflow-grader-api")["env"]
    env[:] = [e for e in env if e["name"] != "TIERFLOW_SIMULATE_WORKERS"]


def _runs_as_root(docs: Docs) -> None:
    del pod_spec(_workload(docs, "tierflow-ingest"))["securityContext"]["runAsNonRoot"]


def _no_limits(docs: Docs) -> None:
    del _container(docs, "tierflow-migrate", "Job")["resources"]["limits"]


def _short_grace(docs: Docs) -> None:
    pod_spec(_workload(docs, "tierflow-grader-consumer"))["terminationGracePeriodSeconds"] = 5


def _service_to_the_wrong_port(docs: Docs) -> None:
    service = find(docs, "Service", "tierflow-grader-api")
    assert service is not None
    service["spec"]["ports"][0]["targetPort"] = 8091


def _service_for_the_consumers(docs: Docs) -> None:
    service = copy.deepcopy(find(docs, "Service", "tierflow-grader-api"))
    assert service is not None
    service["metadata"]["name"] = "tierflow-grader-consumer"
    service["spec"]["selector"]["app.kubernetes.io/component"] = "grader-consumer"
    service["spec"]["ports"][0]["port"] = 8091
    docs.append(service)


def _namespaced(docs: Docs) -> None:
    _workload(docs, "tierflow-ingest")["metadata"]["namespace"] = "tierflow"


Checker = Callable[[Docs], list[str]]


@pytest.mark.parametrize("mistake,checker", [
    (_renamed_var, lambda d: env_problems(as_compose(d))),
    (_grader_var_for_everyone, lambda d: env_problems(as_compose(d))),
    (_moved_topic, lambda d: value_problems(as_compose(d, SAMPLE_SECRETS))),
    (_moved_topic, topic_problems),
    (_secret_filled_in, lambda d: placeholder_problems(as_compose(d), {})),
    (_missing_config_map, reference_problems),
    (_moved_container_port, port_problems),
    (_readiness_on_healthz, port_problems),
    (_liveness_on_another_port, port_problems),
    (_consumer_on_the_api_port, port_problems),
    (_unknown_subcommand, command_problems),
    (_migrate_in_a_deployment, command_problems),
    (_more_consumers_than_partitions, capacity_problems),
    (_state_beyond_the_memory_limit, capacity_problems),
    (_simulate_on_every_core_of_the_node, capacity_problems),
    (_runs_as_root, security_problems),
    (_no_limits, security_problems),
    (_short_grace, security_problems),
    (_service_to_the_wrong_port, service_problems),
    (_service_for_the_consumers, service_problems),
    (_namespaced, manifest_problems),
])
def test_the_checks_catch_mistakes(
    docs: Docs, mistake: Callable[[Docs], None], checker: Checker,
) -> None:
    broken = copy.deepcopy(docs)
    assert checker(broken) == [], "the manifests must pass before the mistake"
    mistake(broken)
    assert checker(broken)


def test_the_loader_reads_every_document(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: ConfigMap\n---\n---\nkind: Secret\n")
    (tmp_path / "b.yml").write_text("kind: Job\n")
    assert [d["kind"] for d in load_manifests(tmp_path)] == ["ConfigMap", "Secret", "Job"]
    (tmp_path / "c.yaml").write_text("- not a mapping\n")
    with pytest.raises(AssertionError):
        load_manifests(tmp_path)
