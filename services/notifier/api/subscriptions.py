"""Webhook subscriptions (admin): create, list, get, delete, rotate the secret; deliveries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.notifier.webhooks import store
from services.notifier.webhooks.addresses import AddressRefused, UrlGuard
from services.notifier.webhooks.dispatcher import Clock
from services.notifier.webhooks.filters import Filter
from services.notifier.webhooks.signing import new_secret
from services.notifier.webhooks.vault import Vault
from shared.http import ok, problems, storable

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])

# Texts and numbers that reach PostgreSQL are checked here: a NUL, a lone surrogate or a
# number beyond bigint is a 422 for the client to fix, not a database error.
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable)]
BIGINT_MAX = 2**63 - 1
DeliveryId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@dataclass
class Webhooks:
    """What the routes need, set on `app.state.webhooks` by the composition root."""

    vault: Vault | None
    clock: Clock
    guard: UrlGuard | None = None  # needs a running loop: made by the lifespan
    pool: asyncpg.Pool | None = None


async def get_webhooks(request: Request) -> Webhooks:
    """The app's webhook wiring."""
    webhooks: Webhooks = request.app.state.webhooks
    return webhooks


async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one request."""
    pool = (await get_webhooks(request)).pool
    assert pool is not None  # noqa: S101 - the lifespan made it before serving
    async with pool.acquire() as conn:
        yield conn


WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]
ConnDep = Annotated[asyncpg.Connection, Depends(get_conn)]


MessageType = Literal["tier.changed", "tier.downgrade_scheduled", "customer.erased"]


class FilterIn(BaseModel):
    """Which changes to receive; an absent or null field accepts any value."""

    model_config = ConfigDict(extra="forbid")

    ladders: list[Name] | None = Field(default=None, max_length=100)
    to_tiers: list[Name] | None = Field(default=None, max_length=100)
    directions: list[Literal["up", "down", "initial"]] | None = None
    types: list[MessageType] | None = None

    def domain(self) -> Filter:
        """As the filter the relay applies."""
        return Filter.from_document(self.model_dump())


class SubscriptionIn(BaseModel):
    """A new subscription."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2048, examples=[
        "https://hooks.example.com/tiers"], json_schema_extra={"format": "uri"}),
        AfterValidator(storable)]
    filter: FilterIn = Field(default_factory=FilterIn)


class RotateIn(BaseModel):
    """How long the current secret keeps signing beside the new one."""

    model_config = ConfigDict(extra="forbid")

    previous_valid_for_s: int = Field(default=86_400, ge=0, le=7 * 86_400)


class RetryIn(BaseModel):
    """Which deliveries to try again."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["failed"] = "failed"


# The answers, for the OpenAPI document only (the routes return dicts, unvalidated).
class FilterOut(BaseModel):
    """Which changes the subscription receives; null accepts any value."""

    ladders: list[str] | None
    to_tiers: list[str] | None
    directions: list[Literal["up", "down", "initial"]] | None
    types: list[MessageType] | None


class Subscription(BaseModel):
    """A subscription, without its secret."""

    id: uuid.UUID
    url: str
    filter: FilterOut
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="Until then, deliveries carry a signature by the previous secret too")


class SubscriptionWithSecret(Subscription):
    """A subscription with its signing secret, shown this once."""

    secret: str


class Subscriptions(BaseModel):
    """Every subscription, oldest first."""

    items: list[Subscription]


class Delivery(BaseModel):
    """One message to one subscription, and how its attempts went."""

    id: int
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="The receiver's HTTP status")
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    customer_id: str
    ladder: str
    after_id: int | None = Field(description="The delivery before it, same customer and ladder")
    message_id: uuid.UUID
    type: MessageType
    sequence: int


class Deliveries(BaseModel):
    """A page of deliveries, newest first."""

    items: list[Delivery]
    next_cursor: int | None = Field(description="The `cursor` of the next page, if any")


class Retried(BaseModel):
    """How many failed deliveries get one more attempt."""

    retried: int


class RetriedOne(BaseModel):
    """The delivery queued again."""

    id: int
    status: Literal["pending"]


NO_SUBSCRIPTION = (404, "No such subscription")
NOT_CONFIGURED = (503, "Webhooks are not configured (TIERFLOW_WEBHOOK_SECRETS_KEY), or the"
                       " database is unavailable")
INVALID = (422, "A value breaks a rule; `errors` names it")


def _vault(webhooks: Webhooks) -> Vault:
    if webhooks.vault is None:
        raise HTTPException(
            503, "Webhooks are not configured: set TIERFLOW_WEBHOOK_SECRETS_KEY on the notifier"
        )
    return webhooks.vault


async def _found(conn: asyncpg.Connection, sid: uuid.UUID) -> store.Subscription:
    subscription = await store.get_subscription(conn, sid)
    if subscription is None:
        raise HTTPException(404, "No such subscription")
    return subscription


@router.post("", status_code=201, response_model=None, responses={
    201: ok(SubscriptionWithSecret, "Registered; the secret is shown this once"),
    **problems((422, "A value breaks a rule, or the URL is refused"), NOT_CONFIGURED)})
async def create(body: SubscriptionIn, webhooks: WebhooksDep, conn: ConnDep) -> dict[str, Any]:
    """Register a URL; the answer holds the signing secret, shown this once."""
    vault = _vault(webhooks)
    assert webhooks.guard is not None  # noqa: S101 - made by the lifespan
    try:
        await webhooks.guard.check(body.url)
    except AddressRefused as exc:
        raise HTTPException(422, f"The URL is refused: {exc}") from None
    secret = new_secret()
    subscription = await store.create_subscription(
        conn, url=body.url, filter_=body.filter.domain(), sealed=vault.seal(secret),
        at=webhooks.clock(),
    )
    return {**subscription.view(), "secret": secret}


@router.get("", response_model=None, responses={
    200: ok(Subscriptions, "Every subscription"), **problems(503)})
async def list_all(conn: ConnDep) -> dict[str, Any]:
    """Every subscription (without secrets)."""
    return {"items": [s.view() for s in await store.list_subscriptions(conn)]}


@router.get("/{sid}", response_model=None, responses={
    200: ok(Subscription, "The subscription"), **problems(NO_SUBSCRIPTION, INVALID, 503)})
async def get_one(sid: uuid.UUID, conn: ConnDep) -> dict[str, Any]:
    """One subscription (without its secret)."""
    return (await _found(conn, sid)).view()


@router.delete("/{sid}", status_code=204, response_model=None, responses={
    204: {"description": "Deleted, with its deliveries"},
    **problems(NO_SUBSCRIPTION, INVALID, 503)})
async def delete(sid: uuid.UUID, conn: ConnDep) -> Response:
    """Stop deliveries and forget the subscription and its deliveries."""
    if not await store.delete_subscription(conn, sid):
        raise HTTPException(404, "No such subscription")
    return Response(status_code=204)


@router.post("/{sid}/rotate-secret", response_model=None, responses={
    200: ok(SubscriptionWithSecret, "The new secret, shown this once"),
    **problems(NO_SUBSCRIPTION, INVALID, NOT_CONFIGURED)})
async def rotate(
    sid: uuid.UUID, webhooks: WebhooksDep, conn: ConnDep, body: RotateIn | None = None
) -> dict[str, Any]:
    """A new secret, shown this once; the current one signs too for a while."""
    vault = _vault(webhooks)
    valid_for = (body or RotateIn()).previous_valid_for_s
    secret = new_secret()
    until = webhooks.clock() + timedelta(seconds=valid_for)
    subscription = await store.rotate_secret(
        conn, sid, sealed=vault.seal(secret), previous_until=until
    )
    if subscription is None:
        raise HTTPException(404, "No such subscription")
    return {**subscription.view(), "secret": secret}


@router.get("/{sid}/deliveries", response_model=None, responses={
    200: ok(Deliveries, "A page of deliveries"), **problems(NO_SUBSCRIPTION, INVALID, 503)})
async def deliveries(
    sid: uuid.UUID, conn: ConnDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> dict[str, Any]:
    """The subscription's deliveries, newest first; `next_cursor` pages back."""
    await _found(conn, sid)
    items = await store.list_deliveries(conn, sid, status=status, before=cursor, limit=limit)
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return {"items": items, "next_cursor": next_cursor}


@router.post("/{sid}/deliveries/retry", status_code=202, response_model=None, responses={
    202: ok(Retried, "Queued again"), **problems(NO_SUBSCRIPTION, INVALID, 503)})
async def retry_all(
    sid: uuid.UUID, webhooks: WebhooksDep, conn: ConnDep, body: RetryIn | None = None
) -> dict[str, Any]:
    """One more attempt for every failed delivery."""
    await _found(conn, sid)
    return {"retried": await store.retry_failed(conn, sid, now=webhooks.clock())}


@router.post("/{sid}/deliveries/{delivery_id}/retry", status_code=202, response_model=None,
             responses={202: ok(RetriedOne, "Queued again"), **problems(
                 (404, "No such delivery"), (409, "The delivery is still pending"), INVALID,
                 503)})
async def retry_one(
    sid: uuid.UUID, delivery_id: DeliveryId, webhooks: WebhooksDep, conn: ConnDep
) -> dict[str, Any]:
    """One more attempt for a failed (or already delivered) delivery."""
    had = await store.retry_delivery(conn, sid, delivery_id, now=webhooks.clock())
    if had is None:
        raise HTTPException(404, "No such delivery")
    if had == "pending":
        raise HTTPException(409, "The delivery is still pending: it will be attempted")
    return {"id": delivery_id, "status": "pending"}
