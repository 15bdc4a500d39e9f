"""The owner's memory: customers within a budget, evicted oldest-first but never before
they are written, kept out of the garbage collector's sight without leaking; a consumer
that stops advancing while events wait is not ready."""

from __future__ import annotations

import gc
import time
import weakref
from decimal import Decimal

from aiokafka import TopicPartition
from prometheus_client import generate_latest

from services.grader.checkpoints import Graded, Pending, grade_pending
from services.grader.consumer import Consumer
from services.grader.grading.aggregates import apply, to_units
from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.evaluate import LadderState
from services.grader.grading.policy import ActivePolicy
from services.grader.owned import Freezer, OwnedCustomers, estimate
from services.grader.policies import PolicyCache
from services.grader.repository import Stored, customer_row, decode_state, stored_form
from services.grader.telemetry import GraderMetrics
from shared.settings import GraderSettings
from tests.unit.factories import NOON, TODAY, at, fold, purchase

NOW = NOON


def test_eviction_keeps_the_budget_and_spares_unwritten_customers() -> None:
    size = estimate(CustomerState("c-0"))
    owned = OwnedCustomers(budget_bytes=10 * size)
    for i in range(30):
        owned.put(i % 3, CustomerState(f"c-{i}"))
    assert owned.get("c-0") is not None  # now the most recently used
    evicted = owned.evict(keep={"c-1"})
    assert evicted == 20 and len(owned) == 10 and owned.bytes <= owned.budget_bytes
    assert "c-0" in owned and "c-1" in owned and "c-2" not in owned


def test_grown_customers_are_re_estimated_and_partitions_dropped() -> None:
    owned = OwnedCustomers(budget_bytes=10**9)
    state = CustomerState("c-1")
    owned.put(4, state)
    before = owned.bytes
    state.aggregates.days = {d: [0] * 5 for d in range(100)}
    owned.resized(["c-1"])
    assert owned.bytes > before
    owned.put(5, CustomerState("c-2"))
    assert owned.drop_partitions([4]) == 1
    assert "c-1" not in owned and "c-2" in owned and owned.bytes == estimate(CustomerState("c"))


def stored(customer_id: str, spend: str = "0") -> Stored:
    """A customer's stored form, as a sweep reads it."""
    state = customer(customer_id, spend)
    return stored_form(customer_row(0, state, NOW))


def customer(customer_id: str, spend: str = "0") -> CustomerState:
    state = CustomerState(customer_id, policy_version=1, graded_on=TODAY.toordinal(),
                          due_on=TODAY.toordinal() + 3, salt=customer_id.encode()[:16])
    state.aggregates.purchases_total = to_units(Decimal(spend))
    return state


def test_customers_passing_through_go_first_and_leave_the_others_in_place() -> None:
    size = estimate(CustomerState("c-0"))
    owned = OwnedCustomers(budget_bytes=3 * size)
    for i in range(3):
        owned.put(0, CustomerState(f"hot-{i}"))
    for i in range(100):  # a sweep's chunk: re-graded, then written
        owned.pass_through(i % 2, f"swept-{i}", stored(f"swept-{i}", f"{i}.50"))
    assert len(owned) == 103 and owned.bytes == 3 * size  # outside the budget
    assert "swept-7" in owned and owned.partition("swept-7") == 1
    assert owned.peek("swept-7") is None  # not an object...
    assert owned.passing("swept-7") == (1, stored("swept-7", "7.50"))  # ...its stored form
    assert owned.evict(keep={"swept-8"}) == 99  # within the budget, yet they go
    assert "swept-8" in owned and "swept-9" not in owned
    assert all(f"hot-{i}" in owned for i in range(3))
    # An event for one passing through decodes it into an ordinary customer, the newest
    # used, with everything it held.
    state = owned.get("swept-8")
    assert state == customer("swept-8", "8.50") and owned.peek("swept-8") is state
    assert owned.passing("swept-8") is None and owned.bytes == 4 * size
    assert owned.evict() == 1 and "hot-0" not in owned and "swept-8" in owned
    owned.pass_through(5, "swept-x", stored("swept-x"))
    assert owned.drop_partitions([5]) == 1 and "swept-x" not in owned
    owned.pass_through(5, "swept-y", stored("swept-y"))
    owned.clear()
    assert len(owned) == 0


def test_a_consumer_that_stops_committing_while_events_wait_is_not_ready() -> None:
    metrics = GraderMetrics()
    consumer = Consumer(GraderSettings(), policies=PolicyCache(base_currency="CNY"),
                        metrics=metrics)
    consumer.consumer = object()  # only its presence is read
    tp = TopicPartition("events", 0)
    consumer.lag[tp] = 0
    consumer.last_commit = time.monotonic() - 600
    assert consumer.healthy(60)  # caught up: nothing to commit is not a stall
    consumer.lag[tp] = 5
    assert not consumer.healthy(60)
    text = generate_latest(metrics.registry).decode()
    stalled = next(line for line in text.splitlines()
                   if line.startswith("tierflow_grader_stalled_seconds "))
    assert float(stalled.split()[1]) >= 600
    consumer.last_commit = time.monotonic()
    assert consumer.healthy(60)


class Cycle:
    """Garbage only the cyclic collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_cyclic_garbage_is_freed_at_the_next_thaw() -> None:
    now = [0.0]
    freezer = Freezer(thaw_s=600, clock=lambda: now[0])
    cycle = Cycle()
    alive = weakref.ref(cycle)
    try:
        freezer.loaded()  # `cycle` is alive: frozen with the rest
        del cycle
        gc.collect()
        assert alive() is not None  # out of the collector's sight
        now[0] = 599.0
        freezer.loaded()
        gc.collect()
        assert alive() is not None
        now[0] = 600.0
        freezer.loaded()  # time to thaw: collected, then frozen again
        assert alive() is None
    finally:
        gc.unfreeze()


def test_an_event_while_a_regrade_is_in_flight_folds_into_the_regraded_state() -> None:
    """A sweep's customer is graded from its stored form and held on as the new stored
    form (no object); an event that comes before that write commits decodes the re-graded
    state, and the next checkpoint writes both."""
    ladder = {"name": "tier", "tiers": [
        {"name": "gold", "when": {"metric": "spend_365d", "op": ">=", "value": 10000}},
        {"name": "basic"}]}
    v1 = ActivePolicy.from_document(1, {"ladders": [ladder]})
    ladder["tiers"][0]["when"]["value"] = 5000  # type: ignore[index]
    v2 = ActivePolicy.from_document(2, {"ladders": [ladder]})
    bought, later = purchase("6000.00", at(3)), purchase("10.00", at(0))
    stored_state = CustomerState("c-1", fold([bought]), salt=b"s" * 16)
    grade_customer(stored_state, v1, now=NOON, today=TODAY, reason="event")
    assert stored_state.ladders["tier"].tier == "basic"
    owned = OwnedCustomers(budget_bytes=10**6)
    owned.pass_through(2, "c-1", stored_form(customer_row(2, stored_state, NOON)))

    def checkpoint(pending: Pending) -> Graded:
        return grade_pending(pending, owned, v2, now=NOON, topic="t", advances=[],
                             partition_of=owned.partition)

    first = checkpoint(Pending(swept={"c-1"}))
    [row] = first.checkpoint.customer_rows
    assert row[:2] == ("c-1", 2) and row[3] == '{"tier:gold"}' and row[4] == 2
    assert [tc.reason for tc in first.changes] == ["policy"]
    assert owned.peek("c-1") is None and owned.passing("c-1") == (2, stored_form(row))
    state = owned.get("c-1")  # the event comes before `first` is written
    assert state is not None and state.policy_version == 2
    assert state.ladders["tier"].tier == "gold"
    apply(state.aggregates, later)
    second = checkpoint(Pending(causes={"c-1": (NOON, later.event_id)}))
    [row] = second.checkpoint.customer_rows
    written = decode_state("c-1", *stored_form(row))
    both = fold([bought, later])
    assert written == state and written.aggregates.days == both.days
    assert written.aggregates.purchases_total == both.purchases_total
    assert written.ladders["tier"] == first_tier(first) and second.changes == []


def first_tier(graded: Graded) -> LadderState:
    return decode_state("c-1", *stored_form(graded.checkpoint.customer_rows[0])).ladders["tier"]
