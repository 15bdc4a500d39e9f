"""`tierflow policy show | validate FILE | simulate FILE | apply FILE`: the grader's policy API."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from services.cli.client import api_client, body_of, call, failure
from services.cli.config import CliError
from services.cli.output import Progress, say
from shared.errors import PolicyInvalid
from shared.policy_yaml import load_policy_yaml

FINISHED = ("done", "failed")


@dataclass(frozen=True)
class PolicyOptions:
    """One policy subcommand and its target."""

    action: str
    url: str
    key: str
    file: str | None = None
    output: str = "yaml"
    timeout: float = 600.0


def load_document(source: str) -> Any:
    """A policy from a .json file, a YAML file, or `-` (stdin, JSON or YAML)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}", exit_code=2) from None
    try:
        # JSON stays JSON (exact numbers, no YAML surprises such as `no` becoming false).
        return json.loads(text) if source.endswith(".json") else load_policy_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CliError(f"{source} is not valid JSON or YAML: {exc}", exit_code=2) from None
    except PolicyInvalid as exc:  # the YAML a policy may not use (aliases, too large)
        raise CliError(f"{source}: {exc.problems[0][1]}", exit_code=2) from None


def render(doc: Any, output: str) -> str:
    """A document as YAML (readable, labels in any language) or indented JSON."""
    if output == "json":
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).rstrip()


def problem_lines(doc: Any) -> list[str]:
    """`path: message` for each problem of a validation answer or problem+json document."""
    if not isinstance(doc, dict):
        return []
    items = doc.get("problems") or doc.get("errors") or []
    lines = []
    for item in items:
        if isinstance(item, dict):
            where = item.get("path") or item.get("field") or "(policy)"
            lines.append(f"  {where}: {item.get('message') or item.get('reason') or item}")
        else:
            lines.append(f"  {item}")
    return lines


async def show(client: httpx.AsyncClient, opts: PolicyOptions) -> int:
    """Print the current policy and its version."""
    response = await call(client, "grader", "GET", f"{opts.url}/v1/policy")
    if response.status_code != 200:
        raise failure("grader", response)
    doc = body_of(response)
    if opts.output == "json":
        say(render(doc, "json"))
    else:
        say(f"# policy version {doc.get('version')}")
        say(render(doc.get("policy"), "yaml"))
    return 0


async def validate(client: httpx.AsyncClient, opts: PolicyOptions) -> int:
    """Exit 0 when the server finds the document valid, 1 with every problem otherwise."""
    doc = load_document(opts.file or "-")
    response = await call(client, "grader", "POST", f"{opts.url}/v1/policy/validate", body=doc)
    if response.status_code != 200:
        raise failure("grader", response)
    answer = body_of(response)
    if answer.get("valid"):
        say(f"{opts.file}: valid")
        return 0
    say(f"{opts.file}: invalid")
    for line in problem_lines(answer):
        say(line)
    return 1


async def simulate(client: httpx.AsyncClient, opts: PolicyOptions) -> int:
    """Print what applying the document would change; nothing changes."""
    doc = load_document(opts.file or "-")
    response = await call(client, "grader", "POST", f"{opts.url}/v1/policy/simulate", body=doc)
    if response.status_code in (400, 422):
        say("the document is invalid:")
        for line in problem_lines(body_of(response)):
            say(line)
        return 1
    if response.status_code != 200:
        raise failure("grader", response)
    answer = body_of(response)
    say(transition_table(answer) if opts.output == "table" else render(answer, opts.output))
    return 0


def transition_table(answer: dict[str, Any]) -> str:
    """What a simulation found, a table per ladder: moves first, with a few examples."""
    lines = [f"against policy version {answer['current_version']}: "
             f"{answer['customers']:,} customers as of {answer['as_of']}, "
             f"{answer['changed']:,} would change on some ladder ({answer['seconds']:.1f}s)"]
    for ladder, body in answer["ladders"].items():
        lines.append("")
        lines.append(ladder)
        rows = [(t["from"] or "(new)", t["to"], t["count"], t["examples"])
                for t in body["transitions"]]
        width = max((len(r[0]) for r in rows), default=0)
        to_width = max((len(r[1]) for r in rows), default=0)
        for frm, to, count, examples in rows:
            marker = "  " if frm == to else "->"
            note = f"  e.g. {', '.join(examples)}" if examples else ""
            lines.append(f"  {frm:<{width}} {marker} {to:<{to_width}} {count:>12,}{note}")
        for wait in body["postponed_downgrades"]:
            lines.append(f"  {wait['count']:,} would keep {wait['tier']} for its grace "
                         f"period, then go to {wait['computed']}")
    return "\n".join(lines)


async def apply(client: httpx.AsyncClient, opts: PolicyOptions) -> int:
    """Make the document the new policy version and follow the re-grading job to the end."""
    doc = load_document(opts.file or "-")
    response = await call(client, "grader", "PUT", f"{opts.url}/v1/policy", body=doc)
    if response.status_code in (400, 422):
        say("refused; nothing changed:")
        for line in problem_lines(body_of(response)):
            say(line)
        return 1
    if response.status_code not in (200, 201, 202):
        raise failure("grader", response)
    answer = body_of(response)
    say(f"policy version {answer['version']} is live; re-grading every customer "
        f"(job {answer['job_id']})")
    job = await follow_job(client, opts.url, str(answer["job_id"]), within=opts.timeout)
    say(f"job {job.get('status')}: {job.get('done', 0):,} of {job.get('total', 0):,} customers "
        f"re-graded, {job.get('changed', 0):,} changed")
    return 0 if job.get("status") == "done" else 1


async def follow_job(
    client: httpx.AsyncClient, url: str, job_id: str, *, within: float, interval: float = 0.5
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} with a progress line until it is done or failed."""
    progress = Progress("re-grading", None, unit="customers")
    deadline = time.monotonic() + within
    while True:
        response = await call(client, "grader", "GET", f"{url}/v1/jobs/{job_id}")
        if response.status_code != 200:
            raise failure("grader", response)
        job: dict[str, Any] = body_of(response)
        progress.total = job.get("total") or None
        progress.set(int(job.get("done") or 0), extra=f"changed {job.get('changed') or 0:,}")
        if job.get("status") in FINISHED:
            progress.finish(extra=f"changed {job.get('changed') or 0:,}")
            return job
        if time.monotonic() > deadline:
            progress.finish()
            raise CliError(f"job {job_id} is still {job.get('status')} after {within:.0f}s; "
                           f"it goes on in the grader (GET {url}/v1/jobs/{job_id})")
        await asyncio.sleep(interval)  # polling interval of a deadline-bounded wait


ACTIONS = {"show": show, "validate": validate, "simulate": simulate, "apply": apply}


def run(opts: PolicyOptions) -> int:
    """Run one policy subcommand."""
    return asyncio.run(_run(opts))


async def _run(opts: PolicyOptions) -> int:
    async with api_client(opts.key) as client:
        return await ACTIONS[opts.action](client, opts)
