"""The fault suite: real processes, steady load through ingest, one fault each, and the
offline verifier (tests/faults/system.py): accepted events lost 0, applied twice 0, tier
changes missing from the topic 0, every customer's sequences gapless and in order.

Run alone with `make faults`; each scenario prints its figures (`-s` shows them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from tests.faults.blackhole import Proxy, tcp
from tests.faults.system import (
    Load,
    Report,
    System,
    applied,
    pause,
    process_tree,
    resume,
    verify,
)
from tests.support import SESSION_TIMEOUT_MS, eventually

pytestmark = pytest.mark.faults

SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000  # the services', in System
# Outages that must outlast the session timeout (the group rebalances), and by how much.
PAST_SESSION_S = SESSION_TIMEOUT_S + 2
PG_PAUSE_S = float(os.environ.get("TIERFLOW_FAULT_PG_PAUSE_S", "60"))


@pytest.fixture(scope="module")
def infrastructure() -> Iterator[tuple[EmbeddedPostgres, EmbeddedBroker]]:
    """PostgreSQL and a broker of the suite's own: scenarios stop, pause and kill them."""
    root = Path(tempfile.mkdtemp(prefix="tierflow-faults-"))
    root.chmod(0o755)  # PostgreSQL runs as an unprivileged user when we are root
    server = EmbeddedPostgres(root / "pg")
    server.start()
    broker = EmbeddedBroker(log_path=root / "broker.log")
    broker.start()
    try:
        yield server, broker
    finally:
        broker.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def engine(infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker]
                 ) -> AsyncIterator[AsyncEngine]:
    server, _ = infrastructure
    await upgrade(server.url)
    eng = make_engine(server.url)
    yield eng
    await eng.dispose()


Fault = Callable[[System], Awaitable[None]]


async def scenario(name: str, engine: AsyncEngine,
                   infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker], tmp_path: Path,
                   fault: Fault, *, graders: int = 1, bootstrap: str | None = None) -> Report:
    """Start the system, load it, let `fault` run while events flow, stop the load (every
    event sent is acknowledged in the end), and verify. `bootstrap`: the broker the
    services and the verifier use, when not the suite's own."""
    server, broker = infrastructure
    bootstrap = bootstrap or broker.bootstrap
    system = System(server.url, bootstrap, tmp_path, graders=graders)
    load = Load(system)
    stop = asyncio.Event()
    report = Report(name)
    await system.start()
    loading = asyncio.create_task(load.run(stop))
    try:
        await eventually(lambda: _some_accepted(load), timeout=30)
        await fault(system)
        ended = time.monotonic()
        so_far = list(load.accepted.values())

        async def caught_up() -> None:
            assert await applied(engine, so_far) == len(so_far), system.logs()

        await eventually(caught_up, timeout=180, interval=0.1)
        report.recovery_s = time.monotonic() - ended
        await asyncio.sleep(1.0)  # events keep flowing after the recovery
        stop.set()
        await asyncio.wait_for(loading, 120)
        report.retried = load.failures
        await verify(engine, system, load, report, bootstrap=bootstrap)
    finally:
        stop.set()
        if not loading.done():
            loading.cancel()
        system.stop()
    print(report.line())  # noqa: T201 - the figures for docs/reliability.md
    return report


async def _some_accepted(load: Load) -> None:
    assert len(load.accepted) >= 400


async def test_grader_killed_ten_times(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    rng = random.Random(5)

    async def fault(system: System) -> None:
        grader = system.services["grader-1"]
        for _ in range(10):
            await asyncio.sleep(rng.uniform(0.2, 1.5))  # a random moment under load
            grader.kill()
            grader.start()

    await scenario("grader SIGKILL x10", engine, infrastructure, tmp_path, fault)


async def test_notifier_killed_while_changes_flow(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    rng = random.Random(6)

    async def fault(system: System) -> None:
        notifier = system.services["notifier"]
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            notifier.kill()
            notifier.start()

    await scenario("notifier SIGKILL x5", engine, infrastructure, tmp_path, fault)


async def test_ingest_killed_around_the_produce(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    rng = random.Random(7)

    async def fault(system: System) -> None:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            system.ingest.kill()  # batches in flight: the client sends them again
            system.ingest.start()
            await system.ingest.ready(timeout=30)

    await scenario("ingest SIGKILL x3", engine, infrastructure, tmp_path, fault)


async def test_broker_paused_past_the_session_timeout(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    _, broker = infrastructure

    async def fault(_: System) -> None:
        assert broker.pid is not None
        pause([broker.pid])
        try:
            await asyncio.sleep(PAST_SESSION_S)  # the fault's length
        finally:
            resume([broker.pid])

    report = await scenario(f"broker paused {PAST_SESSION_S:g} s", engine, infrastructure,
                            tmp_path, fault)
    # The client met 503s (or unacknowledged items) and sent the same ids again: some of
    # those sends had landed after all, and still nothing is applied twice.
    assert report.retried > 0


@contextlib.asynccontextmanager
async def broker_behind_a_proxy(log_dir: Path) -> AsyncIterator[tuple[Proxy, int]]:
    """A broker of the scenario's own that advertises the proxy's address (Kafka clients
    connect to the address in the metadata, so every connection goes through the proxy);
    the proxy and the port the broker listens on."""
    listener = free_port()
    async with Proxy(tcp("127.0.0.1", listener)).running() as proxy:
        broker = EmbeddedBroker(port=listener, advertised_port=proxy.port,
                                log_path=log_dir / "proxied-broker.log")
        await asyncio.to_thread(broker.start)
        try:
            yield proxy, listener
        finally:
            broker.stop()


def assert_only_through(proxy: Proxy, system: System, listener_port: int) -> None:
    """The services talk to the broker through the proxy, and never to it directly."""
    assert proxy.open_sockets > 0
    for name, service in system.services.items():
        assert service.proc is not None
        direct = [c for c in psutil.Process(service.proc.pid).net_connections("tcp")
                  if c.raddr and c.raddr.port == listener_port]
        assert direct == [], (name, direct)


async def test_broker_blackholed_past_the_session_timeout(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    async with broker_behind_a_proxy(tmp_path) as (proxy, listener):
        async def fault(system: System) -> None:
            assert_only_through(proxy, system, listener)
            proxy.blackhole()
            # The fault's length: past the session timeout, and past the produce timeout,
            # so batches are answered 503 while their produce is held, to land when the
            # link comes back.
            await asyncio.sleep(PAST_SESSION_S)
            await proxy.forward()

        report = await scenario(f"broker blackholed {PAST_SESSION_S:g} s", engine,
                                infrastructure, tmp_path,
                                fault, bootstrap=proxy.address)
    assert report.retried > 0  # the client sent those batches again, with the same ids


async def test_broker_connections_reset_and_refused(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    resets: list[int] = []
    async with broker_behind_a_proxy(tmp_path) as (proxy, listener):
        async def fault(system: System) -> None:
            assert_only_through(proxy, system, listener)
            for _ in range(3):
                resets.append(await proxy.reset())
                with pytest.raises(ConnectionRefusedError):
                    await asyncio.open_connection("127.0.0.1", proxy.port)
                await asyncio.sleep(2)  # refused meanwhile
                await proxy.forward()
                await asyncio.sleep(1.5)  # the clients connect again, events flow

        await scenario("broker links reset x3, refused 2 s", engine, infrastructure, tmp_path,
                       fault, bootstrap=proxy.address)
    assert all(resets), resets  # each time, the services had connected again


async def test_broker_link_delayed(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    async with broker_behind_a_proxy(tmp_path) as (proxy, listener):
        async def fault(system: System) -> None:
            assert_only_through(proxy, system, listener)
            proxy.delay(0.2)
            await asyncio.sleep(10)  # the fault's length
            assert proxy.delayed > 0
            await proxy.forward()

        await scenario("broker 200 ms each way for 10 s", engine, infrastructure, tmp_path,
                       fault, bootstrap=proxy.address)


async def test_postgres_paused_under_load(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    server, _ = infrastructure

    async def fault(_: System) -> None:
        pids = process_tree(_postmaster(server))
        pause(pids)
        try:
            await asyncio.sleep(PG_PAUSE_S)  # the fault's length
        finally:
            resume(pids)

    await scenario(f"PostgreSQL paused {PG_PAUSE_S:g} s", engine, infrastructure, tmp_path,
                   fault)


async def test_postgres_killed_and_started_again_under_load(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    server, _ = infrastructure

    async def fault(_: System) -> None:
        os.kill(_postmaster(server), signal.SIGKILL)
        await asyncio.sleep(2)  # down for a while
        await asyncio.to_thread(server.stop)  # forgets the dead server
        await asyncio.to_thread(server.start)
        await engine.dispose()  # the test's own pool held connections to the dead server

    await scenario("PostgreSQL SIGKILL, restarted", engine, infrastructure, tmp_path, fault)


async def test_two_graders_one_paused_past_the_session_timeout(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    async def fault(system: System) -> None:
        proc = system.services["grader-2"].proc
        assert proc is not None
        pause([proc.pid])  # its partitions go to grader-1; it wakes up holding stale state
        try:
            await asyncio.sleep(PAST_SESSION_S + 2)  # the fault's length
        finally:
            resume([proc.pid])
        await asyncio.sleep(3)  # both work again

    await scenario(f"two graders, one paused {PAST_SESSION_S + 2:g} s", engine,
                   infrastructure, tmp_path, fault,
                   graders=2)


async def test_rolling_restart_of_every_service(
    engine: AsyncEngine, infrastructure: tuple[EmbeddedPostgres, EmbeddedBroker],
    tmp_path: Path
) -> None:
    async def fault(system: System) -> None:
        for service in system.services.values():
            await asyncio.to_thread(service.stop)
            service.start()
            await service.ready(timeout=60)

    await scenario("rolling restart", engine, infrastructure, tmp_path, fault)


def _postmaster(server: EmbeddedPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split()[0])
