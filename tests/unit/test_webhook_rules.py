"""The pure parts of webhook delivery: schedule, filters, signatures, address rules."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.webhooks.addresses import (
    AddressRefused,
    address_allowed,
    parse_networks,
    url_host,
)
from services.notifier.webhooks.filters import Change, Filter, fan_out
from services.notifier.webhooks.schedule import JITTER, MAX_ATTEMPTS, RETRY_DELAYS_S, retry_at
from services.notifier.webhooks.signing import signature, signature_header

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_the_schedule_spans_about_a_day_in_eight_attempts() -> None:
    assert MAX_ATTEMPTS == 8
    total = sum(RETRY_DELAYS_S)
    assert 22 * 3600 <= total <= 26 * 3600
    assert list(RETRY_DELAYS_S) == sorted(RETRY_DELAYS_S)


@pytest.mark.parametrize("attempts", range(1, MAX_ATTEMPTS))
def test_each_retry_waits_its_delay_within_the_jitter(attempts: int) -> None:
    delay = RETRY_DELAYS_S[attempts - 1]
    assert retry_at(attempts, NOW, 0.0) == NOW + timedelta(seconds=delay)
    low, high = retry_at(attempts, NOW, -1.0), retry_at(attempts, NOW, 1.0)
    assert low == NOW + timedelta(seconds=delay * (1 - JITTER))
    assert high == NOW + timedelta(seconds=delay * (1 + JITTER))
    assert retry_at(attempts, NOW, 5.0) == high  # a draw out of range is clamped


def test_no_retry_after_the_last_attempt() -> None:
    assert retry_at(MAX_ATTEMPTS, NOW, 0.0) is None
    assert retry_at(0, NOW, 0.0) is None


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"whsec_k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("whsec_k", 1_700_000_000, b"{}") == expected
    assert signature_header(["whsec_k", "whsec_old"], 1_700_000_000, b"{}") == (
        f"t=1700000000,v1={expected},v1={signature('whsec_old', 1_700_000_000, b'{}')}"
    )


def change(**fields: object) -> Change:
    base: dict[str, object] = {"id": 1, "customer_id": "c-1", "kind": "tier.changed",
                               "ladder": "tier", "to_tier": "vip", "direction": "up"}
    return Change(**{**base, **fields})  # type: ignore[arg-type]


ERASURE = {"kind": "customer.erased", "ladder": "", "to_tier": None, "direction": ""}


@pytest.mark.parametrize(("document", "fields", "expected"), [
    ({}, {}, True),
    ({"ladders": ["tier"]}, {}, True),
    ({"ladders": ["value"]}, {}, False),
    ({"to_tiers": ["vip", "important"]}, {"to_tier": "important"}, True),
    ({"to_tiers": ["vip"]}, {"to_tier": "regular"}, False),
    ({"directions": ["down"]}, {"direction": "up"}, False),
    ({"directions": ["up", "initial"]}, {"direction": "initial"}, True),
    ({"types": ["tier.downgrade_scheduled"]}, {}, False),
    ({"types": ["tier.downgrade_scheduled"]}, {"kind": "tier.downgrade_scheduled"}, True),
    ({"ladders": ["tier"], "to_tiers": ["vip"], "directions": ["up"]}, {}, True),
    ({"ladders": None, "to_tiers": []}, {}, False),  # an empty list accepts nothing
    # An erasure goes to every subscription that takes its type: each held something.
    ({"ladders": ["value"], "to_tiers": ["vip"], "directions": ["up"]}, ERASURE, True),
    ({}, ERASURE, True),
    ({"types": ["tier.changed", "customer.erased"]}, ERASURE, True),
    ({"types": ["tier.changed"]}, ERASURE, False),
])
def test_filters(document: dict[str, list[str] | None], fields: dict[str, object],
                 expected: bool) -> None:
    wanted = Filter.from_document(document)
    c = change(**fields)
    assert wanted.matches(kind=c.kind, ladder=c.ladder, to_tier=c.to_tier,
                          direction=c.direction) is expected
    assert Filter.from_document(wanted.document()) == wanted


def test_an_erasure_goes_only_to_the_subscriptions_informed_of_the_customer() -> None:
    told, stranger, picky = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    subscriptions = [(told, Filter(ladders=frozenset({"value"}))), (stranger, Filter()),
                     (picky, Filter(types=frozenset({"tier.changed"})))]
    erased = change(id=7, **ERASURE)
    assert fan_out([erased], subscriptions, {"c-1": frozenset({told, picky})}) == [
        (told, 7, "c-1", "")]  # picky was told, but does not take the type
    assert fan_out([erased], subscriptions) == []  # nobody was told of c-1
    assert fan_out([erased], subscriptions, {"c-2": frozenset({told})}) == []


def test_fan_out_keeps_change_order_per_subscription() -> None:
    everything, vips = uuid.uuid4(), uuid.uuid4()
    subscriptions = [(everything, Filter()), (vips, Filter.from_document({"to_tiers": ["vip"]}))]
    changes = [change(id=1), change(id=2, to_tier="regular"), change(id=3)]
    assert fan_out(changes, subscriptions) == [
        (everything, 1, "c-1", "tier"), (vips, 1, "c-1", "tier"),
        (everything, 2, "c-1", "tier"),
        (everything, 3, "c-1", "tier"), (vips, 3, "c-1", "tier"),
    ]


REFUSED = [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::",  # noqa: S104 - refused ones "10.1.2.3", "172.16.0.1",
    "192.168.1.1", "169.254.169.254", "fe80::1", "fd00:ec2::254", "fc00::1", "100.64.0.1",
    "224.0.0.1", "ff02::1", "255.255.255.255", "192.0.2.1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1", "64:ff9b::a00:1", "240.0.0.1",
]


@pytest.mark.parametrize("text", REFUSED)
def test_non_public_addresses_are_refused(text: str) -> None:
    assert not address_allowed(ipaddress.ip_address(text), ())


@pytest.mark.parametrize("text", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                  "::ffff:93.184.215.14", "64:ff9b::5db8:d70e"])
def test_public_addresses_are_allowed(text: str) -> None:
    assert address_allowed(ipaddress.ip_address(text), ())


def test_configured_networks_open_exactly_themselves() -> None:
    allowed = parse_networks("127.0.0.0/8, ::1/128,10.20.0.0/16")
    for text in ("127.0.0.1", "::1", "10.20.3.4"):
        assert address_allowed(ipaddress.ip_address(text), allowed)
    for text in ("10.21.0.1", "169.254.169.254", "192.168.0.1"):
        assert not address_allowed(ipaddress.ip_address(text), allowed)


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("https://user:pw@example.com/", "credentials"),
    ("https:///path", "no host"),
    ("http://example.com:99999/", "not a valid URL"),
    ("gopher://127.0.0.1:6379/_INFO", "scheme"),
])
def test_urls_refused_before_any_lookup(url: str, reason: str) -> None:
    with pytest.raises(AddressRefused, match=reason):
        url_host(url)


def test_url_host_is_the_bare_host() -> None:
    assert url_host("https://Hooks.Example.com:8443/a?b=c") == "hooks.example.com"
    assert url_host("http://[::1]:8080/") == "::1"
