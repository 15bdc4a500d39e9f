"""What `tierflow up` prints once everything is ready: pure, from a summary of the system."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

BROKER_NOTE = (
    "note: the embedded broker keeps messages in memory only: events not yet graded and "
    "tier-change messages on its topics are lost when it stops (everything in PostgreSQL stays)"
)


@dataclass(frozen=True)
class Summary:
    """The facts the banner shows."""

    data_dir: Path
    urls: dict[str, str]
    database: str
    broker: str
    api_key: str | None
    key_note: str
    logs: dict[str, Path] = field(default_factory=dict)


def example_event(now: datetime) -> str:
    """A valid purchase event, occurring now, as one line of JSON."""
    china = timezone(timedelta(hours=8))
    at = now.astimezone(china).isoformat(timespec="seconds")
    return (
        '{"event_id": "hello-1", "type": "purchase", "customer_id": "c-1", '
        f'"occurred_at": "{at}", "source": "pos", '
        '"data": {"amount": "1299.00", "currency": "CNY", "category": "shoes"}}'
    )


def example_curl(ingest_url: str, key: str, now: datetime) -> str:
    """A curl command that sends one event."""
    return (
        f"curl -sS -X POST {ingest_url}/v1/events \\\n"
        f"    -H {shlex.quote('Authorization: Bearer ' + key)} "
        "-H 'Content-Type: application/json' \\\n"
        f"    -d {shlex.quote(example_event(now))}"
    )


def _lookup(grader_url: str, key: str | None) -> str:
    auth = shlex.quote(f"Authorization: Bearer {key or '<key>'}")
    return f"  curl -sS -H {auth} {grader_url}/v1/customers/c-1"


def dashboard_url(grader_url: str) -> str:
    """The dashboard page: `/` of the grader's API."""
    return grader_url.rstrip("/") + "/"


def _page_key(summary: Summary) -> str:
    """What to type into the dashboard page: it asks for a key that may read tiers."""
    if summary.api_key:
        return "type the admin key below into the page"
    return "type a key with the tiers:read scope into the page"


def banner_lines(summary: Summary, *, now: datetime) -> list[str]:
    """The lines to print once the system is up."""
    urls = summary.urls
    lines = ["", "tierflow is up", ""]
    if "ingest" in urls:
        lines.append(f"  ingest     {urls['ingest']}   (POST /v1/events, /v1/events/batch)")
    if "grader" in urls:
        lines.append(f"  grader     {urls['grader']}   (lookups, stats, policy)")
        lines.append(f"  dashboard  {dashboard_url(urls['grader'])}   ({_page_key(summary)})")
    if "notifier" in urls:
        lines.append(f"  notifier   {urls['notifier']}   (tier changes: the tier-changes topic,"
                     " webhooks)")
    if urls:
        lines.append("  metrics    " + "  ".join(f"{u}/metrics" for u in urls.values()))
    lines += [
        f"  database   {summary.database}",
        f"  broker     {summary.broker}",
        f"  API key    {summary.api_key or '(none printed)'}   {summary.key_note}",
        f"  data dir   {summary.data_dir}   (logs in {summary.data_dir / 'logs'})",
    ]
    if summary.api_key and "ingest" in urls:
        lines += ["", "Send an event:", "  " + example_curl(urls["ingest"], summary.api_key, now)]
    if "grader" in urls:
        lines += ["Look the customer up:", _lookup(urls["grader"], summary.api_key)]
    if "notifier" in urls:
        lines += ["Watch tier changes arrive by webhook (a receiver on this machine):",
                  "  tierflow subscriptions listen --port 9000",
                  "  (or subscribe your own: tierflow subscriptions add http://127.0.0.1:PORT/path)"]
    lines += ["", "Ctrl-C stops everything."]
    return lines
