"""Policy validation: the default parses; a bad document reports every problem with its path."""

from __future__ import annotations

import copy
import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.grader.grading.policy import (
    MAX_DEPTH,
    All,
    AnyOf,
    Leaf,
    Not,
    default_policy_document,
    metrics_read,
    parse_policy,
)
from shared.errors import PolicyInvalid, TierflowError
from shared.policy_yaml import MAX_DEPTH as MAX_YAML_DEPTH
from shared.policy_yaml import MAX_NODES, MAX_POLICY_BYTES, load_policy_yaml


def leaf(metric: str = "orders_total", op: str = ">=", value: object = 1) -> dict[str, Any]:
    return {"metric": metric, "op": op, "value": value}


def valid_doc() -> dict[str, Any]:
    return {
        "base_currency": "CNY",
        "ladders": [{
            "name": "tier", "label": "等级", "downgrade_grace_days": 30,
            "tiers": [
                {"name": "gold", "when": leaf("spend_365d", ">=", 1000),
                 "stay_when": leaf("spend_365d", ">=", 800), "actions": ["call"]},
                {"name": "basic"},
            ],
        }],
    }


def problems(doc: object) -> list[tuple[str, str]]:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(doc)
    return caught.value.problems


def paths(doc: object) -> list[str]:
    return sorted(path for path, _ in problems(doc))


def test_default_policy_parses_with_the_contract_ladders() -> None:
    policy = parse_policy(default_policy_document())
    tiers = {ladder.name: [t.name for t in ladder.tiers] for ladder in policy.ladders}
    assert list(tiers) == ["tier", "value", "lifecycle", "nps"]
    assert tiers["tier"] == ["vip", "important", "regular", "prospect"]
    assert tiers["value"] == ["high", "mid", "low"]
    assert set(tiers["lifecycle"]) == {"new", "growing", "mature", "churned"}
    assert tiers["lifecycle"][-1] == "churned"
    assert tiers["nps"] == ["promoter", "passive", "detractor", "unknown"]
    assert policy.base_currency == "CNY"
    vip = policy.ladders[0].tiers[0]
    assert vip.label == "VIP客户"
    assert vip.actions == ("assign_account_manager", "exclusive_offer")


def test_a_valid_document_parses_into_dataclasses() -> None:
    ladder = parse_policy(valid_doc()).ladders[0]
    assert (ladder.name, ladder.label, ladder.downgrade_grace_days) == ("tier", "等级", 30)
    gold, basic = ladder.tiers
    assert gold.when == Leaf("spend_365d", ">=", Decimal(1000))
    assert gold.stay_when == Leaf("spend_365d", ">=", Decimal(800))
    assert (basic.when, basic.label, basic.actions) == (None, "basic", ())
    assert ladder.rank("basic") == 1
    assert ladder.rank("gone") is None
    assert metrics_read(ladder) == ("spend_365d",)


def test_grace_defaults_to_zero_and_values_may_be_decimal_strings() -> None:
    doc = valid_doc()
    del doc["ladders"][0]["downgrade_grace_days"]
    doc["ladders"][0]["tiers"][0]["when"] = leaf("avg_rating", ">", "4.5")
    ladder = parse_policy(doc).ladders[0]
    assert ladder.downgrade_grace_days == 0
    assert ladder.tiers[0].when == Leaf("avg_rating", ">", Decimal("4.5"))


def test_compound_conditions_parse() -> None:
    doc = valid_doc()
    doc["ladders"][0]["tiers"][0]["when"] = {"all": [
        {"any": [leaf("orders_30d"), leaf("referrals_365d", "==", 0)]},
        {"not": leaf("complaints_90d", "!=", 0)},
    ]}
    when = parse_policy(doc).ladders[0].tiers[0].when
    assert isinstance(when, All)
    assert isinstance(when.parts[0], AnyOf)
    assert when.parts[1] == Not(Leaf("complaints_90d", "!=", Decimal(0)))
    assert metrics_read(parse_policy(doc).ladders[0]) == (
        "orders_30d", "referrals_365d", "complaints_90d", "spend_365d")


def test_policy_invalid_is_a_tierflow_error() -> None:
    assert issubclass(PolicyInvalid, TierflowError)


def _nest(depth: int) -> dict[str, Any]:
    cond: dict[str, Any] = leaf()
    for _ in range(depth - 1):
        cond = {"not": cond}
    return cond


def test_nesting_up_to_the_limit_is_accepted() -> None:
    doc = valid_doc()
    doc["ladders"][0]["tiers"][0]["when"] = _nest(MAX_DEPTH)
    parse_policy(doc)


def _set(doc: dict[str, Any], path: tuple[object, ...], value: object) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


T0 = ("ladders", 0, "tiers", 0)
INVALID = [
    pytest.param(_set(valid_doc(), (*T0, "when"), leaf("spend_999d")),
                 ["ladders[0].tiers[0].when.metric"], id="unknown-metric"),
    pytest.param(_set(valid_doc(), (*T0, "when"), leaf(op="=>")),
                 ["ladders[0].tiers[0].when.op"], id="bad-op"),
    pytest.param(_set(valid_doc(), (*T0, "when"), leaf(value=True)),
                 ["ladders[0].tiers[0].when.value"], id="bool-value"),
    pytest.param(_set(valid_doc(), (*T0, "when"), leaf(value=None)),
                 ["ladders[0].tiers[0].when.value"], id="null-value"),
    pytest.param(_set(valid_doc(), (*T0, "when"), leaf(value="NaN")),
                 ["ladders[0].tiers[0].when.value"], id="nan-value"),
    pytest.param(_set(valid_doc(), (*T0, "when"), leaf(value="lots")),
                 ["ladders[0].tiers[0].when.value"], id="text-value"),
    pytest.param(_set(valid_doc(), (*T0, "when"), {"metric": "orders_total"}),
                 ["ladders[0].tiers[0].when.op", "ladders[0].tiers[0].when.value"],
                 id="leaf-missing-op-and-value"),
    pytest.param(_set(valid_doc(), (*T0, "when"), {"all": []}),
                 ["ladders[0].tiers[0].when.all"], id="empty-all"),
    pytest.param(_set(valid_doc(), (*T0, "when"), {"any": [leaf(), leaf("nope")]}),
                 ["ladders[0].tiers[0].when.any[1].metric"], id="problem-inside-any"),
    pytest.param(_set(valid_doc(), (*T0, "when"), {"all": [leaf()], "any": [leaf()]}),
                 ["ladders[0].tiers[0].when"], id="two-kinds-in-one-condition"),
    pytest.param(_set(valid_doc(), (*T0, "when"), {"not": leaf(), "why": "x"}),
                 ["ladders[0].tiers[0].when.why"], id="unknown-field-in-not"),
    pytest.param(_set(valid_doc(), (*T0, "when"), {**leaf(), "unit": "CNY"}),
                 ["ladders[0].tiers[0].when.unit"], id="unknown-field-in-leaf"),
    pytest.param(_set(valid_doc(), (*T0, "when"), "orders_total >= 1"),
                 ["ladders[0].tiers[0].when"], id="condition-not-an-object"),
    pytest.param(_set(valid_doc(), (*T0, "when"), _nest(MAX_DEPTH + 1)),
                 ["ladders[0].tiers[0].when" + ".not" * MAX_DEPTH], id="nesting-too-deep"),
    pytest.param(_set(valid_doc(), (*T0, "stay_when"), leaf("bogus")),
                 ["ladders[0].tiers[0].stay_when.metric"], id="bad-stay-when"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "tiers", 0),
                      {"name": "gold", "actions": ["call"]}),
                 ["ladders[0].tiers[0].when"], id="missing-when"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "tiers", 1, "when"), leaf()),
                 ["ladders[0].tiers[1].when"], id="when-on-last-tier"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "tiers", 1, "name"), "gold"),
                 ["ladders[0].tiers"], id="duplicate-tier-names"),
    pytest.param(_set(valid_doc(), ("ladders",), valid_doc()["ladders"] * 2),
                 ["ladders"], id="duplicate-ladder-names"),
    pytest.param(_set(valid_doc(), (*T0, "name"), "Gold"),
                 ["ladders[0].tiers[0].name"], id="uppercase-name"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "name"), "a" * 33),
                 ["ladders[0].name"], id="name-too-long"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "name"), "1tier"),
                 ["ladders[0].name"], id="name-starting-with-digit"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "name"), "tier\n"),
                 ["ladders[0].name"], id="name-with-newline"),
    pytest.param(_set(valid_doc(), (*T0, "name"), None),
                 ["ladders[0].tiers[0].name"], id="missing-name"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "colour"), "red"),
                 ["ladders[0].colour"], id="unknown-ladder-field"),
    pytest.param(_set(valid_doc(), (*T0, "priority"), 1),
                 ["ladders[0].tiers[0].priority"], id="unknown-tier-field"),
    pytest.param(_set(valid_doc(), ("version",), 3), ["version"], id="unknown-top-field"),
    pytest.param(_set(valid_doc(), ("ladders",), []), ["ladders"], id="empty-ladders"),
    pytest.param(_set(valid_doc(), ("ladders",), {"tier": {}}), ["ladders"],
                 id="ladders-not-a-list"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "tiers"), []), ["ladders[0].tiers"],
                 id="empty-tiers"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "downgrade_grace_days"), -1),
                 ["ladders[0].downgrade_grace_days"], id="negative-grace"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "downgrade_grace_days"), 1.5),
                 ["ladders[0].downgrade_grace_days"], id="fractional-grace"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "downgrade_grace_days"), True),
                 ["ladders[0].downgrade_grace_days"], id="bool-grace"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "downgrade_grace_days"), "30"),
                 ["ladders[0].downgrade_grace_days"], id="text-grace"),
    pytest.param(_set(valid_doc(), (*T0, "actions"), "call"),
                 ["ladders[0].tiers[0].actions"], id="actions-not-a-list"),
    pytest.param(_set(valid_doc(), (*T0, "actions"), ["ok", ""]),
                 ["ladders[0].tiers[0].actions"], id="empty-action"),
    pytest.param(_set(valid_doc(), (*T0, "label"), 7),
                 ["ladders[0].tiers[0].label"], id="label-not-text"),
    pytest.param(_set(valid_doc(), ("base_currency",), "yuan"), ["base_currency"],
                 id="bad-currency"),
    pytest.param(_set(valid_doc(), ("ladders", 0, "tiers", 0), "gold"),
                 ["ladders[0].tiers[0]"], id="tier-not-an-object"),
    pytest.param([valid_doc()], [""], id="document-not-an-object"),
]


@pytest.mark.parametrize(("doc", "expected"), INVALID)
def test_invalid_documents_name_the_path(doc: object, expected: list[str]) -> None:
    found = problems(doc)
    assert sorted(path for path, _ in found) == sorted(expected)
    assert all(message for _, message in found)


def test_every_problem_is_reported_at_once() -> None:
    doc: dict[str, Any] = {
        "base_currency": "CNY", "extra": 1,
        "ladders": [
            {"name": "Tier", "downgrade_grace_days": -3, "tiers": [
                {"name": "a", "when": {"all": [leaf("nope"), leaf(op="~", value=False)]}},
                {"name": "a", "when": leaf()},
            ]},
            {"name": "other", "tiers": [{"name": "x", "label": "X", "oops": True}]},
        ],
    }
    assert paths(doc) == sorted([
        "extra",
        "ladders[0].name",
        "ladders[0].downgrade_grace_days",
        "ladders[0].tiers[0].when.all[0].metric",
        "ladders[0].tiers[0].when.all[1].op",
        "ladders[0].tiers[0].when.all[1].value",
        "ladders[0].tiers[1].when",
        "ladders[0].tiers",
        "ladders[1].tiers[0].oops",
    ])
    assert "Tier" not in str(PolicyInvalid([("a", "b")]))  # the message is just the problems


def test_bad_names_are_not_reported_as_duplicates_of_each_other() -> None:
    doc = valid_doc()
    doc["ladders"] = [
        {**doc["ladders"][0], "name": "Bad"},
        {**doc["ladders"][0], "name": "Worse"},
    ]
    assert paths(doc) == ["ladders[0].name", "ladders[1].name"]


def test_duplicate_ladder_names_reported_even_when_a_ladder_has_other_problems() -> None:
    doc = valid_doc()
    doc["ladders"].append({"name": "tier", "tiers": []})
    assert paths(doc) == ["ladders", "ladders[1].tiers"]


def test_bad_tier_names_are_not_reported_as_duplicates_of_each_other() -> None:
    doc = valid_doc()
    doc["ladders"][0]["tiers"][0]["name"] = "A"
    doc["ladders"][0]["tiers"][1]["name"] = "B"
    assert paths(doc) == ["ladders[0].tiers[0].name", "ladders[0].tiers[1].name"]


# --- The base currency: the setting is the one source -------------------------------------


def test_base_currency_may_be_left_out() -> None:
    doc = valid_doc()
    del doc["base_currency"]
    assert parse_policy(doc, base_currency="CNY").base_currency is None


def test_base_currency_must_agree_with_the_setting() -> None:
    assert parse_policy(valid_doc(), base_currency="CNY").base_currency == "CNY"
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(valid_doc(), base_currency="USD")
    [(path, message)] = caught.value.problems
    assert path == "base_currency"
    assert "USD" in message and "TIERFLOW_BASE_CURRENCY" in message


# --- YAML: no aliases, bounded --------------------------------------------------------------


def laughs(levels: int = 6) -> str:
    """"Billion laughs" as a policy: under 500 bytes whose one condition is 10**levels
    leaves once the aliases are expanded (parse_policy took 11 s over it)."""
    lines = ["base_currency: CNY", "parts:",
             '- &c0 {metric: orders_total, op: ">=", value: 1}']
    for n in range(1, levels + 1):
        lines.append(f"- &c{n} {{any: [{','.join([f'*c{n - 1}'] * 10)}]}}")
    lines += ["ladders:", "- name: tier", "  tiers:", f"  - {{name: gold, when: *c{levels}}}",
              "  - {name: basic}"]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_before_they_expand() -> None:
    text = laughs()
    assert len(text) < 500
    started = time.perf_counter()
    with pytest.raises(PolicyInvalid) as caught:
        load_policy_yaml(text)
    assert time.perf_counter() - started < 1.0  # grading it expanded took seconds of CPU
    [(path, message)] = caught.value.problems
    assert path == "" and "aliases" in message


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: 2\n",  # an anchor alone
    "base: &b {x: 1}\nother:\n  <<: *b\n",  # a merge key needs an alias
])
def test_yaml_anchors_and_merge_keys_are_refused(text: str) -> None:
    with pytest.raises(PolicyInvalid, match="aliases"):
        load_policy_yaml(text)


def test_yaml_size_nodes_and_depth_are_bounded() -> None:
    with pytest.raises(PolicyInvalid, match="bytes"):
        load_policy_yaml("a: " + "x" * MAX_POLICY_BYTES)
    with pytest.raises(PolicyInvalid, match="values"):
        load_policy_yaml("[" + "1," * MAX_NODES + "1]")
    with pytest.raises(PolicyInvalid, match="deep"):
        load_policy_yaml("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1))


def test_yaml_default_policy_loads_as_from_json() -> None:
    document = default_policy_document()
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    assert load_policy_yaml(text) == document
    assert load_policy_yaml(text.encode()) == document
    parse_policy(load_policy_yaml(text), base_currency="CNY")


def test_the_recipes_of_the_guide_are_valid_ladders() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    recipes = guide[guide.index("## Recipes"):guide.index("## Explaining a customer")]
    ladders = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", recipes, re.S)]
    assert [ladder.name for ladder in parse_policy({"ladders": ladders}).ladders] == [
        "rfm", "care"]


@pytest.mark.parametrize("value", ["1e999999", "-1000000000000001", 1e16])
def test_a_threshold_beyond_every_metric_is_refused(value: object) -> None:
    doc = {"ladders": [{"name": "l", "tiers": [
        {"name": "a", "when": {"metric": "days_since_last_purchase", "op": "<", "value": value}},
        {"name": "b"}]}]}
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(doc)
    assert caught.value.problems == [("ladders[0].tiers[0].when.value",
                                      "must be between -1e15 and 1e15")]
    ok = copy.deepcopy(doc)
    ok["ladders"][0]["tiers"][0]["when"]["value"] = "1e15"
    parse_policy(ok)
