"""The command line's pure pieces: metrics parsing, rates, tables, summaries, documents."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.cli.banner import Summary, banner_lines, example_event
from services.cli.config import CliError
from services.cli.demo import Timings, distribution_table, peak_rate, rate_lines
from services.cli.output import Progress, render_bar
from services.cli.policy import load_document, problem_lines, render
from services.cli.scrape import CONSUMER_LAG, GRADED, metric_sum
from services.cli.send import SendReport, batched, error_texts, read_items
from shared.events import parse_event
from shared.settings import IngestSettings, settings_problems

METRICS = """\
# HELP tierflow_grader_events_total Events consumed.
# TYPE tierflow_grader_events_total counter
tierflow_grader_events_total{outcome="applied"} 90.0
tierflow_grader_events_total{outcome="duplicate"} 7.0
tierflow_grader_events_total{outcome="dlq"} 3.0
tierflow_grader_events_created{outcome="applied"} 1.7e9
# HELP tierflow_grader_consumer_lag Lag.
# TYPE tierflow_grader_consumer_lag gauge
tierflow_grader_consumer_lag{partition="0"} 4.0
tierflow_grader_consumer_lag{partition="1"} 6.0
"""


def test_metric_sum_adds_every_label_set_and_only_that_name() -> None:
    assert metric_sum(METRICS, GRADED) == 100.0
    assert metric_sum(METRICS, CONSUMER_LAG) == 10.0
    assert metric_sum(METRICS, "tierflow_notifier_outbox_backlog") is None


def test_peak_rate_over_one_second_windows() -> None:
    samples = [(0.0, 0.0), (0.5, 100.0), (1.0, 1000.0), (1.5, 3000.0), (2.0, 3100.0)]
    assert peak_rate(samples) == pytest.approx(2900.0)  # 0.5 → 1.5
    assert peak_rate(samples[:2]) is None


def test_distribution_table() -> None:
    doc = {"customers": 4, "ladders": {"tier": {"vip": 1, "regular": 3}, "nps": {"unknown": 4}}}
    lines = distribution_table(doc, width=4)
    assert lines[0] == "4 customers"
    assert any("vip" in line and "25.0%" in line and "█" in line for line in lines)
    assert any("unknown" in line and "100.0%" in line for line in lines)


def test_send_report_summarises_rejects_by_reason() -> None:
    report = SendReport(accepted=8)
    for n in range(7):
        report.reject(f"line {n}", f"e-{n}", ["data.amount: must be greater than 0"])
    report.reject("line 9", None, [])
    lines = report.summary_lines(2.0)
    assert lines[0].startswith("sent 16 events: 8 accepted, 8 rejected")
    assert "         7  data.amount: must be greater than 0" in lines
    assert len([line for line in lines if line.startswith("  line")]) == 5


def test_error_texts_and_local_json_rejects() -> None:
    result = {"errors": [{"field": "occurred_at", "reason": "too far in the future"}]}
    assert error_texts(result) == ["occurred_at: too far in the future"]
    report = SendReport()
    items = list(read_items([b'{"a": 1}\n', b"\n", b"{broken\n", b'{"b": 2}'], report))
    assert [label for label, _ in items] == ["line 1", "line 4"]
    assert report.rejected == 1
    assert report.examples[0].startswith("line 3: (line): not valid JSON")


def test_batched() -> None:
    items = [(str(n), n) for n in range(5)]
    assert [len(b) for b in batched(items, 2)] == [2, 2, 1]


def test_settings_problems_name_each_variable_on_a_line() -> None:
    with pytest.raises(ValidationError) as info:
        IngestSettings(ingest_port=-1, kafka_bootstrap="nope")
    assert settings_problems(info.value) == [
        "invalid setting TIERFLOW_KAFKA_BOOTSTRAP: 'nope' is not host:port",
        "invalid setting TIERFLOW_INGEST_PORT: Input should be greater than or equal to 0",
    ]


def test_policy_documents_load_from_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"base_currency": "CNY", "ladders": []}')
    (tmp_path / "p.yaml").write_text("base_currency: CNY\nladders: []\n")
    assert load_document(str(tmp_path / "p.json")) == load_document(str(tmp_path / "p.yaml"))
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(CliError, match="not valid"):
        load_document(str(tmp_path / "bad.yaml"))
    with pytest.raises(CliError, match="cannot read"):
        load_document(str(tmp_path / "missing.yaml"))
    (tmp_path / "alias.yaml").write_text("base_currency: &c CNY\nother: *c\n")
    with pytest.raises(CliError, match="anchors and aliases") as refused:
        load_document(str(tmp_path / "alias.yaml"))
    assert refused.value.exit_code == 2


def test_render_keeps_labels_readable() -> None:
    assert "VIP客户" in render({"label": "VIP客户"}, "yaml")
    assert '"label": "VIP客户"' in render({"label": "VIP客户"}, "json")


def test_problem_lines() -> None:
    answer = {"valid": False, "problems": [{"path": "ladders[0].name", "message": "bad name"}]}
    assert problem_lines(answer) == ["  ladders[0].name: bad name"]
    problem = {"title": "Invalid", "errors": [{"field": "body", "reason": "not an object"}]}
    assert problem_lines(problem) == ["  body: not an object"]


def test_banner_shows_urls_key_and_a_valid_example() -> None:
    summary = Summary(
        data_dir=Path("/d"), database="embedded", broker="embedded (memory only)",
        api_key="k" * 32, key_note="(admin)",
        urls={"ingest": "http://127.0.0.1:8080", "grader": "http://127.0.0.1:8081",
              "notifier": "http://127.0.0.1:8082"},
    )
    now = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    lines = banner_lines(summary, now=now)
    text = "\n".join(lines)
    for needle in ("http://127.0.0.1:8081/", "k" * 32, "/d", "8082/metrics", "curl"):
        assert needle in text
    assert ("  dashboard  http://127.0.0.1:8081/   (type the admin key below into the page)"
            in lines)
    labels = [line.split()[0] if line.strip() else "" for line in lines]
    assert labels.index("dashboard") < labels.index("API")  # the key is "below"
    parse_event(example_event(now))


def test_banner_names_the_scope_the_dashboard_needs_when_it_prints_no_key() -> None:
    summary = Summary(
        data_dir=Path("/d"), database="embedded", broker="embedded (memory only)",
        api_key=None, key_note="(keys from TIERFLOW_API_KEYS)",
        urls={"grader": "http://[::1]:9081"},
    )
    lines = banner_lines(summary, now=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    assert ("  dashboard  http://[::1]:9081/   (type a key with the tiers:read scope into the"
            " page)") in lines
    no_grader = Summary(data_dir=Path("/d"), database="", broker="", api_key=None,
                        key_note="", urls={"ingest": "http://127.0.0.1:8080"})
    assert not any("dashboard" in line
                   for line in banner_lines(no_grader, now=datetime(2026, 1, 2, tzinfo=UTC)))


def test_progress_bar() -> None:
    assert render_bar(5, 10, width=10) == "[#####-----]  50% "
    assert render_bar(5, None) == ""
    stream = io.StringIO()
    progress = Progress("sending", 10, stream=stream)
    progress.set(10)
    progress.finish()
    assert "10/10 events" in stream.getvalue()


def test_rate_lines() -> None:
    lines = rate_lines(Timings(accepted=10_000, started=0.0, sent_at=2.0, graded_at=4.0,
                               peak=8000.0))
    assert lines[0] == "ingest:  10,000 events accepted in 2.0s (5,000 events/s)"
    assert "2,500 events/s end to end; grader peak 8,000 events/s" in lines[1]
