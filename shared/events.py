"""The four event types of the contract: one pydantic union, parsed in one place."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    field_validator,
)

EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
MAX_AMOUNT = Decimal("1e12")
# pydantic alone would also take unix timestamps and offsets without a colon.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _exact_amount(value: object) -> Decimal:
    """Money arrives as a decimal string or a JSON number; never through a binary float."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("must be a decimal string or number")
    # A float here came from JSON text pydantic already parsed; repr round-trips it exactly
    # to the shortest decimal that reads back as the same number, i.e. what was written.
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        amount = Decimal(text.strip())
    except ArithmeticError:
        raise ValueError("must be a decimal number") from None
    if not amount.is_finite():
        raise ValueError("must be finite")
    if amount <= 0:
        raise ValueError("must be greater than 0")
    if amount > MAX_AMOUNT:
        raise ValueError("must be at most 1e12")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValueError("at most 4 decimal places")
    return amount


class _Money(_Strict):
    amount: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    order_id: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object) -> Decimal:
        return _exact_amount(value)


class PurchaseData(_Money):
    category: str | None = Field(default=None, max_length=64)
    quantity: StrictInt | None = Field(default=None, ge=1)


class RefundData(_Money):
    pass


class InteractionData(_Strict):
    channel: str = Field(min_length=1, max_length=32)
    action: str = Field(min_length=1, max_length=32)


class FeedbackData(_Strict):
    rating: StrictInt | None = Field(default=None, ge=1, le=5)
    nps: StrictInt | None = Field(default=None, ge=0, le=10)
    complaint: StrictBool | None = None
    comment: str | None = Field(default=None, max_length=2000)

    @field_validator("comment")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    def model_post_init(self, __context: object) -> None:
        if self.rating is None and self.nps is None and self.complaint is None:
            raise ValueError("at least one of rating, nps, complaint is required")


class _Event(_Strict):
    event_id: EventId
    customer_id: CustomerId
    occurred_at: AwareDatetime
    source: str | None = Field(default=None, max_length=64)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not RFC3339.fullmatch(value):
            raise ValueError("must be an RFC 3339 date-time with an offset")
        return value

    @field_validator("source")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class Purchase(_Event):
    type: Literal["purchase"]
    data: PurchaseData


class Refund(_Event):
    type: Literal["refund"]
    data: RefundData


class Interaction(_Event):
    type: Literal["interaction"]
    data: InteractionData


class Feedback(_Event):
    type: Literal["feedback"]
    data: FeedbackData


Event = Annotated[Purchase | Refund | Interaction | Feedback, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES = ("purchase", "refund", "interaction", "feedback")


def parse_event(raw: bytes | str) -> Event:
    """Validate one event from JSON text; raises pydantic.ValidationError."""
    return EVENT_ADAPTER.validate_json(raw)


def parse_event_obj(obj: object) -> Event:
    """Validate one event already decoded from JSON."""
    return EVENT_ADAPTER.validate_python(obj)


def too_far_in_future(event: Event, *, now: datetime, max_future_seconds: int) -> bool:
    """True when `occurred_at` is more than the allowed skew ahead of `now`."""
    return event.occurred_at > now + timedelta(seconds=max_future_seconds)


def event_json(event: Event) -> bytes:
    """The canonical JSON of an event, as it goes onto the topic."""
    return EVENT_ADAPTER.dump_json(event, exclude_none=True)
