"""Admin writes to one customer: overrides and erasure (CONTRACT §4.3, §5).

The API never writes a customer's row: the customer's owner (the consumer of their
partition) is its only writer. A write is published as a control record on the events
topic (services/grader/controls.py), applied by the owner in order with the customer's
events, and the answer waits until the checkpoint that applied it is committed (the
control's id is then in the dedupe table), up to `TIERFLOW_WRITE_WAIT_SECONDS`; past that
it answers 202, and the write still happens when the owner reaches it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from services.grader import repository as repo
from services.grader.api.customers import (
    ID_RULE,
    Customer,
    answer,
    customer_view,
    stored_or_problem,
    valid_customer_id,
)
from services.grader.api.deps import Grader, GraderDep
from services.grader.controls import Control
from services.grader.grading.messages import utc_iso
from services.grader.routing import owner_partition
from shared.http import UNAVAILABLE, failed, ok, problem, problems
from shared.kafka import make_producer
from shared.settings import GraderSettings

router = APIRouter(prefix="/v1/customers", tags=["admin"])
SEND_TIMEOUT_S = 10.0
POLL_FIRST_S = 0.01
POLL_MAX_S = 0.2
APPLIED = "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_hash = $1::uuid)"
LadderName = Annotated[str, Path(max_length=64)]


class ControlSender:
    """Publishes controls to the owner's partition. The producer starts on first use, so
    the API comes up (and serves lookups) while the broker is away."""

    def __init__(self, settings: GraderSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, control: Control) -> None:
        """Publish and wait for the broker's acknowledgement."""
        producer = await self._started()
        topic = self.settings.topic_events
        partitions = await producer.partitions_for(topic)
        await producer.send_and_wait(
            topic, value=control.value(), key=control.customer_id.encode(),
            partition=owner_partition(control.customer_id, len(partitions)),
            headers=control.headers())

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self.settings, client_id="tierflow-grader-api")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        """Stop the producer, if it started."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class OverrideRequest(BaseModel):
    """`PUT /v1/customers/{id}/overrides/{ladder}`."""

    tier: str = Field(min_length=1, max_length=64, description="A tier of the ladder")
    reason: str = Field(min_length=1, max_length=500, description="Why, for the record")
    expires_at: AwareDatetime | None = Field(
        None, description="When the override ends (RFC 3339 with an offset; in the "
        "future); it takes effect by the first UTC midnight at or after it. null: until "
        "removed")


class Accepted(BaseModel):
    """The write is on its way to the customer's owner, which had not applied it within
    the wait (it is behind); it will, in order with the customer's events."""

    customer_id: str
    status: Literal["accepted"]
    control_id: str


class Erased(BaseModel):
    """`DELETE /v1/customers/{id}`: done."""

    customer_id: str
    status: Literal["erased"]
    erased_at: str


async def _publish_and_wait(grader: Grader, control: Control) -> bool | Response:
    """Send the control; True once its owner has committed it, False after the wait, or
    the problem to answer when the broker or the database is away."""
    assert grader.controls is not None and grader.pool is not None  # noqa: S101 - lifespan
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await grader.controls.send(control)
    except TimeoutError:
        return problem(503, "The event broker did not take the request in time",
                       detail="It may still be applied; sending it again is safe.")
    except UNAVAILABLE as exc:
        return failed(exc)
    except Exception as exc:  # noqa: BLE001 - a broker error: nothing was sent
        return problem(503, "The event broker refused the request",
                       detail=f"{type(exc).__name__}; it may still be applied, sending it "
                              "again is safe.")
    key = repo.event_hash(control.key_id)
    deadline = time.monotonic() + grader.settings.write_wait_seconds
    pause = POLL_FIRST_S
    while True:
        try:
            async with grader.pool.acquire() as conn:
                if await conn.fetchval(APPLIED, key):
                    return True
        except UNAVAILABLE:
            return False  # sent: it will be applied; we cannot tell when
        if time.monotonic() + pause > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MAX_S)


def _accepted(control: Control) -> Response:
    return Response(
        answer({"customer_id": control.customer_id, "status": "accepted",
                "control_id": control.id}).body,
        status_code=202, media_type="application/json")


async def _after(grader: Grader, control: Control, outcome: bool | Response) -> Response:
    """The customer as they are once `control` applied; 409 if an override to set is not
    there (the customer was erased, or the policy lost the tier, meanwhile)."""
    if isinstance(outcome, Response):
        return outcome
    if not outcome:
        return _accepted(control)
    found = await stored_or_problem(grader, control.customer_id)
    if isinstance(found, Response):
        if found.status_code != 404:
            return found
        return problem(409, "The customer was erased before the request applied")
    if control.kind == "override.set" and control.ladder not in found.state.overrides:
        return problem(409, "The override did not apply", detail=(
            "The policy in force no longer has this tier, or the customer was erased and "
            "is new again, by the time the customer's owner reached the request."))
    return answer(customer_view(found, grader.policies.active))


@router.put("/{customer_id}/overrides/{ladder}", response_class=Response, responses={
    200: ok(Customer, "Applied: the customer, with the override"),
    202: ok(Accepted, "Sent; not applied within the wait (the grader is behind)"),
    **problems((404, "No such customer, or no such ladder in the policy in force"),
               (409, "The customer was erased, or the policy changed, before it applied"),
               (422, "Not a tier of the ladder, an expiry in the past, or a bad body"),
               503)})
async def put_override(customer_id: str, ladder: LadderName, body: OverrideRequest,
                       grader: GraderDep) -> Response:
    """Pin the customer's tier on one ladder (admin). The computed tier is still shown;
    setting it, removing it and its expiry each record a change with `reason: override`
    when the tier applied moves."""
    found = await stored_or_problem(grader, customer_id)
    if isinstance(found, Response):
        return found
    active = grader.policies.active
    spec = next((lad for lad in active.policy.ladders if lad.name == ladder), None)
    if spec is None:
        return problem(404, f"The policy in force has no ladder {ladder!r}",
                       detail=f"Ladders: {', '.join(lad.name for lad in active.policy.ladders)}")
    now = datetime.now(UTC)
    errors = []
    if spec.rank(body.tier) is None:
        errors.append({"field": "body.tier", "reason": f"not a tier of {ladder!r}: one of "
                       + ", ".join(t.name for t in spec.tiers)})
    if body.expires_at is not None and body.expires_at <= now:
        errors.append({"field": "body.expires_at", "reason": "must be in the future"})
    if errors:
        return problem(422, "The override cannot be set", errors=errors)
    control = Control.make("override.set", customer_id, requested_at=now, ladder=ladder,
                           tier=body.tier, reason=body.reason, expires_at=body.expires_at)
    return await _after(grader, control, await _publish_and_wait(grader, control))


@router.delete("/{customer_id}/overrides/{ladder}", response_class=Response, responses={
    200: ok(Customer, "Removed: the customer, graded by the rules again on this ladder"),
    202: ok(Accepted, "Sent; not applied within the wait (the grader is behind)"),
    **problems((404, "No such customer, or no override on this ladder"),
               (422, "A ladder name longer than 64 characters"), 503)})
async def delete_override(customer_id: str, ladder: LadderName,
                          grader: GraderDep) -> Response:
    """Remove an override (admin): the ladder's entry conditions decide again at once."""
    found = await stored_or_problem(grader, customer_id)
    if isinstance(found, Response):
        return found
    pin = found.state.overrides.get(ladder)
    if pin is None or pin.ended:
        return problem(404, f"Customer {customer_id!r} has no override on {ladder!r}")
    control = Control.make("override.remove", customer_id, requested_at=datetime.now(UTC),
                           ladder=ladder)
    return await _after(grader, control, await _publish_and_wait(grader, control))


@router.delete("/{customer_id}", response_class=Response, responses={
    200: ok(Erased, "Erased"),
    202: ok(Accepted, "Sent; not applied within the wait (the grader is behind)"),
    **problems((404, "Not a customer id any event could carry"), 503)})
async def erase_customer(customer_id: str, grader: GraderDep) -> Response:
    """Erase everything held about a customer (admin): aggregates, tiers, overrides,
    history, webhook deliveries, unsent messages; their dedupe records become unreadable
    and are pruned with the window. Events after it start a fresh customer. Erasing an id
    nobody holds is not an error: what is held at that point of the customer's stream,
    possibly nothing, is erased. See docs/api.md for what cannot be erased."""
    if not valid_customer_id(customer_id):
        return problem(404, "No such customer", detail=ID_RULE)
    now = datetime.now(UTC)
    control = Control.make("erase", customer_id, requested_at=now)
    outcome = await _publish_and_wait(grader, control)
    if isinstance(outcome, Response):
        return outcome
    if not outcome:
        return _accepted(control)
    body: dict[str, Any] = {"customer_id": customer_id, "status": "erased",
                            "erased_at": utc_iso(now)}
    return answer(body)
