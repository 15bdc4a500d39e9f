"""Deliver webhooks: one worker per subscription, each with its own connections and its
own limit of attempts in flight, so a dead or slow receiver never delays the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from services.notifier.metrics import NotifierMetrics
from services.notifier.webhooks import store
from services.notifier.webhooks.addresses import UrlGuard
from services.notifier.webhooks.client import Answer, connector, post
from services.notifier.webhooks.schedule import retry_at
from services.notifier.webhooks.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from services.notifier.webhooks.store import Attempt, Result, Subscription
from services.notifier.webhooks.vault import Vault, VaultError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# How long past the request timeout a claimed attempt stays this process's: a process that
# died mid-attempt gives its deliveries back after this.
LEASE_MARGIN_S = 30.0
RELOAD_S = 5.0
PAUSE_AFTER_ERROR_S = 1.0
# Database errors a worker rides out (it pauses and goes on; its leases expire meanwhile).
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def jitter() -> float:
    """A draw in [-1, 1] that spreads retries out."""
    return random.uniform(-1.0, 1.0)  # noqa: S311 - spreading load, not a secret


class Worker:
    """Delivers one subscription's deliveries: claims what is due, attempts it, records."""

    def __init__(
        self, subscription: Subscription, *, pool: asyncpg.Pool, vault: Vault, guard: UrlGuard,
        metrics: NotifierMetrics, clock: Clock, spread: Callable[[], float],
        timeout_s: float, concurrency: int, poll_s: float,
    ) -> None:
        self.subscription = subscription
        self._pool, self._vault, self._guard, self._metrics = pool, vault, guard, metrics
        self._clock, self._spread = clock, spread
        self._timeout_s, self._concurrency, self._poll_s = timeout_s, concurrency, poll_s
        self._label = str(subscription.id)
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[Result]] = set()
        self._opened: dict[bytes, str] = {}

    def wake(self) -> None:
        """New deliveries may be due."""
        self._wake.set()

    def update(self, subscription: Subscription) -> None:
        """A rotated secret (the URL and filter never change)."""
        self.subscription = subscription

    async def run(self) -> None:
        """Deliver until cancelled; in-flight attempts are abandoned (their leases expire)."""
        session = aiohttp.ClientSession(connector=connector(self._guard, limit=self._concurrency))
        try:
            while True:
                try:
                    await self._step(session)
                except DATABASE_ERRORS as exc:
                    log.warning("subscription %s: database unavailable: %r", self._label, exc)
                    await asyncio.sleep(PAUSE_AFTER_ERROR_S)
        finally:
            for task in self._inflight:
                task.cancel()
            await session.close()

    async def _step(self, session: aiohttp.ClientSession) -> None:
        """Record the attempts that ended while claiming more: two connections, so neither
        round trip waits for the other (the recorded ones stay leased until written)."""
        self._wake.clear()
        done = [task for task in self._inflight if task.done()]
        self._inflight.difference_update(done)
        room = self._concurrency - len(self._inflight)
        recording = asyncio.create_task(self._record([task.result() for task in done]))
        try:
            claimed = await self._claim(session, room)
        finally:
            await recording
        if done:  # the next of their lanes may be due now: look again at once
            self._wake.set()
        await self._wait(self._poll_s if claimed < room else None)

    async def _claim(self, session: aiohttp.ClientSession, room: int) -> int:
        if room <= 0:
            return 0
        now = self._clock()
        lease = now + timedelta(seconds=self._timeout_s + LEASE_MARGIN_S)
        async with self._pool.acquire() as conn:
            attempts = await store.claim(
                conn, self.subscription.id, now=now, limit=room, lease_until=lease
            )
        for attempt in attempts:
            self._inflight.add(asyncio.create_task(self._attempt(session, attempt)))
        return len(attempts)

    async def _wait(self, seconds: float | None) -> None:
        """Until an attempt ends, the worker is woken, or `seconds` pass."""
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                [waker, *self._inflight], timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waker.cancel()

    async def _record(self, results: list[Result]) -> None:
        if not results:
            return
        async with self._pool.acquire() as conn:
            await store.record(conn, self.subscription.id, results)
        for result in results:
            self._observe(result)

    async def _attempt(self, session: aiohttp.ClientSession, attempt: Attempt) -> Result:
        at = self._clock()
        try:
            headers = self._headers(attempt, at)
        except VaultError as exc:
            answer = Answer(None, f"secret: {exc}")
        else:
            answer = await post(
                session, self._guard, self.subscription.url, body=attempt.body,
                headers=headers, timeout_s=self._timeout_s,
            )
        ended = self._clock()
        self._metrics.attempts.labels(self._label, answer.kind).inc()
        return Result(
            attempt=attempt, ok=answer.ok, status_code=answer.status, error=answer.error,
            at=ended, retry_at=None if answer.ok or attempt.manual else
            retry_at(attempt.attempts, ended, self._spread()),
        )

    def _headers(self, attempt: Attempt, at: datetime) -> dict[str, str]:
        subscription = self.subscription
        secrets = [self._open(subscription.secret)]
        if subscription.previous_secret is not None and (
            subscription.previous_expires_at is None or subscription.previous_expires_at > at
        ):
            secrets.append(self._open(subscription.previous_secret))
        return {
            EVENT_ID_HEADER: str(attempt.message_id),
            "Tierflow-Delivery-Id": str(attempt.delivery_id),
            SIGNATURE_HEADER: signature_header(secrets, int(at.timestamp()), attempt.body),
        }

    def _open(self, sealed: bytes) -> str:
        """Decrypted once per sealed secret (Fernet costs more than the signature)."""
        secret = self._opened.get(sealed)
        if secret is None:
            secret = self._opened[sealed] = self._vault.open(sealed)
        return secret

    def _observe(self, result: Result) -> None:
        outcome = "delivered" if result.ok else "retrying" if result.retry_at else "failed"
        self._metrics.deliveries.labels(self._label, outcome).inc()
        if result.ok:
            seconds = (result.at - result.attempt.recorded_at).total_seconds()
            self._metrics.latency.observe(max(seconds, 0.0))


class Dispatcher:
    """Keeps one worker running per subscription, and wakes them when deliveries arrive."""

    def __init__(
        self, *, pool: asyncpg.Pool, vault: Vault | None, guard: UrlGuard,
        metrics: NotifierMetrics, clock: Clock = utc_now, spread: Callable[[], float] = jitter,
        timeout_s: float, concurrency: int, poll_s: float,
    ) -> None:
        self._pool, self._vault, self._guard, self._metrics = pool, vault, guard, metrics
        self._clock, self._spread = clock, spread
        self._timeout_s, self._concurrency, self._poll_s = timeout_s, concurrency, poll_s
        self._workers: dict[uuid.UUID, tuple[Worker, asyncio.Task[None]]] = {}
        self._reload = asyncio.Event()
        self._shown: set[uuid.UUID] = set()

    def wake(self) -> None:
        """New or re-queued deliveries: every worker looks now."""
        for worker, _ in self._workers.values():
            worker.wake()

    def reload(self) -> None:
        """Subscriptions changed: pick the change up now rather than at the next reload."""
        self._reload.set()

    async def run(self) -> None:
        """Follow the subscriptions until cancelled, then stop every worker."""
        try:
            while True:
                self._reload.clear()
                try:
                    await self._sync()
                except DATABASE_ERRORS as exc:
                    log.warning("cannot read the subscriptions: %r", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RELOAD_S):
                        await self._reload.wait()
        finally:
            for _, task in self._workers.values():
                task.cancel()
            for _, task in self._workers.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._workers.clear()

    async def _sync(self) -> None:
        async with self._pool.acquire() as conn:
            current = {s.id: s for s in await store.list_subscriptions(conn)}
            backlog = {sid: (count, oldest) for sid, count, oldest in await store.backlog(conn)}
        self._show_backlog(current, backlog)
        for sid in [sid for sid in self._workers if sid not in current]:
            _, task = self._workers.pop(sid)
            task.cancel()
        if self._vault is None:
            if current:
                log.error("TIERFLOW_WEBHOOK_SECRETS_KEY is not set: no webhook is delivered")
            return
        for sid, subscription in current.items():
            if sid in self._workers and self._workers[sid][1].done():
                _, task = self._workers.pop(sid)
                if not task.cancelled() and task.exception() is not None:
                    log.error("the worker of subscription %s stopped: %r; restarting it",
                              sid, task.exception())
            if sid in self._workers:
                self._workers[sid][0].update(subscription)
                continue
            worker = Worker(
                subscription, pool=self._pool, vault=self._vault, guard=self._guard,
                metrics=self._metrics, clock=self._clock, spread=self._spread,
                timeout_s=self._timeout_s, concurrency=self._concurrency, poll_s=self._poll_s,
            )
            task = asyncio.create_task(worker.run(), name=f"webhooks-{sid}")
            self._workers[sid] = (worker, task)

    def _show_backlog(
        self, current: dict[uuid.UUID, Subscription],
        backlog: dict[uuid.UUID, tuple[int, datetime]],
    ) -> None:
        now = self._clock()
        for sid in self._shown - current.keys():
            self._metrics.backlog_deliveries.remove(str(sid))
            self._metrics.oldest_pending.remove(str(sid))
        for sid in current:
            count, oldest = backlog.get(sid, (0, now))
            self._metrics.backlog_deliveries.labels(str(sid)).set(count)
            self._metrics.oldest_pending.labels(str(sid)).set(
                max((now - oldest).total_seconds(), 0.0)
            )
        self._shown = set(current)
