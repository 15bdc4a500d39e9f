"""The dashboard's policy in words and where its quadrant lines go (pure)."""

from __future__ import annotations

from decimal import Decimal

from services.grader.dashboard import condition_words, policy_words, threshold
from services.grader.grading.conditions import All, AnyOf, Leaf, Not
from services.grader.grading.policy import ActivePolicy, default_policy_document

ACTIVE = ActivePolicy.from_document(1, default_policy_document())


def test_the_default_policy_in_words() -> None:
    tier = policy_words(ACTIVE)[0]
    assert (tier["name"], tier["label"], tier["downgrade_grace_days"]) == ("tier", "客户等级", 30)
    vip, important, regular, prospect = tier["tiers"]
    assert vip["when"] == ("spend in the last 365 days ≥ 50,000.00 and orders in the last "
                           "365 days ≥ 12")
    assert vip["stay_when"] == "spend in the last 365 days ≥ 40,000.00"
    assert vip["actions"] == ["assign_account_manager", "exclusive_offer"]
    assert important["when"] == ("spend in the last 365 days ≥ 10,000.00 or referrals in the "
                                 "last 365 days ≥ 3")
    assert regular["when"] == "orders in total ≥ 1"
    assert (prospect["when"], prospect["stay_when"]) == ("everyone else", None)


def test_nested_groups_are_bracketed_and_not_is_said() -> None:
    cond = All((Leaf("avg_rating", "<=", Decimal("2.5")),
                AnyOf((Leaf("complaints_90d", ">", Decimal(2)),
                       Not(Leaf("last_nps", "==", Decimal(10)))))))
    assert condition_words(cond) == (
        "average rating ≤ 2.5 and (complaints in the last 90 days > 2 or not (last NPS = 10))")


def test_quadrant_lines_are_the_lowest_bar_that_earns_a_better_tier() -> None:
    tier, value, lifecycle, _ = ACTIVE.policy.ladders
    assert threshold(ACTIVE, tier, "spend_365d") == 10000
    assert threshold(ACTIVE, tier, "orders_365d") == 12
    assert threshold(ACTIVE, value, "spend_365d") == 2000
    # The ladder has no bar on it: another ladder's; none anywhere: None (the median).
    assert threshold(ACTIVE, value, "orders_365d") == 6  # lifecycle: mature from 6
    assert threshold(ACTIVE, lifecycle, "distinct_categories") is None
