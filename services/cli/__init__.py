"""`tierflow`: the whole system on one machine, one service for production, or a client of it."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import ValidationError

from services.cli.config import ClientSettings, CliError, resolve_key
from services.cli.output import warn
from shared.errors import ConfigError, TierflowError
from shared.settings import settings_problems

SUBCOMMANDS = ("up", "demo", "ingest", "grader", "notifier", "migrate", "send", "policy",
               "customer", "subscriptions")
SERVICES = ("ingest", "grader", "notifier")
POLICY_ACTIONS = ("show", "validate", "simulate", "apply")
CUSTOMER_ACTIONS = ("show", "explain", "history", "override", "erase")
DIRECTIONS = ("up", "down", "initial")
MESSAGE_TYPES = ("tier.changed", "tier.downgrade_scheduled", "customer.erased")
MAX_BATCH = 1000


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _batch_size(text: str) -> int:
    value = _positive(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH}")
    return value


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server's base URL (default: TIERFLOW_INGEST_URL, "
                                      "_GRADER_URL or _NOTIFIER_URL, else the local `tierflow up`)")
    common.add_argument("--key", help="API key (default: TIERFLOW_API_KEY, else DATA_DIR/api-key)")
    common.add_argument("--data-dir", type=Path, help="where `tierflow up` keeps its key")
    return common


def _system_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="run everything on this machine until Ctrl-C")
    up.add_argument("--data-dir", type=Path, help="state directory (default ./.tierflow)")
    demo = commands.add_parser("demo", help="`up`, then a generated history and its tiers")
    demo.add_argument("--data-dir", type=Path, help="state directory (default ./.tierflow)")
    demo.add_argument("--customers", type=_positive, default=3000)
    demo.add_argument("--seed", type=int, default=42, help="same seed, same events (same ids)")
    demo.add_argument("--concurrency", type=_positive, default=4, help="requests in flight")
    demo.add_argument("--exit", action="store_true", help="stop after printing the distribution")
    for name in SERVICES:
        commands.add_parser(name, help=f"run the {name} process (production)")
    commands.add_parser("migrate", help="create or upgrade the database schema")


def _client_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _client_options()
    send = commands.add_parser("send", parents=[common], help="send JSON-lines events to ingest")
    send.add_argument("file", metavar="FILE", help="a JSON-lines file, or - for stdin")
    send.add_argument("--concurrency", type=_positive, default=4, help="requests in flight")
    send.add_argument("--batch-size", type=_batch_size, default=MAX_BATCH)
    policy = commands.add_parser("policy", help="show, validate, simulate or apply a policy")
    actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", parents=[common], help="print the current policy")
    show.add_argument("--output", choices=("yaml", "json"), default="yaml")
    for action in POLICY_ACTIONS[1:]:
        sub = actions.add_parser(action, parents=[common], help=f"{action} a policy document")
        sub.add_argument("file", metavar="FILE", help="policy as YAML or JSON, or - for stdin")
        if action == "simulate":
            sub.add_argument("--output", choices=("table", "yaml", "json"), default="table",
                             help="the transition table, or the whole answer")
        else:
            sub.add_argument("--output", choices=("yaml", "json"), default="yaml")
        if action == "apply":
            sub.add_argument("--timeout", type=float, default=600.0,
                             help="seconds to follow the re-grading job")
    customer = commands.add_parser("customer", help="one customer: tiers, why, history")
    customer_actions = customer.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in zip(CUSTOMER_ACTIONS, (
            "tiers and metrics", "every ladder's conditions, why, and the next change",
            "tier changes, newest first",
            "pin a ladder to a tier (admin), or --clear the pin",
            "erase everything held about the customer (admin)"), strict=True):
        sub = customer_actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("customer_id", metavar="ID")
        sub.add_argument("--output", choices=("text", "yaml", "json"), default="text")
        if action == "history":
            sub.add_argument("--limit", type=_positive, default=20, help="at most 1000")
            sub.add_argument("--cursor", help="where the previous page said older ones start")
        elif action == "override":
            sub.add_argument("ladder", metavar="LADDER")
            sub.add_argument("tier", metavar="TIER", nargs="?", help="a tier of the ladder")
            sub.add_argument("--reason", help="why, for the record (required to set)")
            sub.add_argument("--expires-at", help="RFC 3339 with an offset, e.g. "
                             "2027-01-01T00:00:00Z (default: until cleared)")
            sub.add_argument("--clear", action="store_true",
                             help="remove the override: the rules decide again")
        elif action == "erase":
            sub.add_argument("--yes", action="store_true",
                             help="really erase: it cannot be undone")
    _subscription_parsers(commands, common)


def _subscription_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    parser = commands.add_parser("subscriptions", help="webhook subscriptions (the notifier's)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="subscribe a URL to tier changes")
    add.add_argument("target", metavar="URL", help="where to POST each message")
    listen = actions.add_parser("listen", parents=[common],
                                help="a receiver on this machine that prints each delivery")
    listen.add_argument("--port", type=_positive, default=9000)
    for sub in (add, listen):
        sub.add_argument("--ladder", dest="ladders", action="append", default=[],
                         metavar="LADDER")
        sub.add_argument("--to-tier", dest="to_tiers", action="append", default=[],
                         metavar="TIER")
        sub.add_argument("--direction", dest="directions", action="append", default=[],
                         choices=DIRECTIONS)
        sub.add_argument("--type", dest="types", action="append", default=[],
                         choices=MESSAGE_TYPES)
    actions.add_parser("list", parents=[common], help="every subscription")
    for action, text in (("remove", "delete a subscription and its deliveries"),
                         ("rotate-secret", "a new signing secret (shown once)"),
                         ("deliveries", "a subscription's latest deliveries"),
                         ("retry", "one more attempt: one delivery, or every failed one")):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("target", metavar="SUBSCRIPTION_ID")
        if action == "rotate-secret":
            sub.add_argument("--keep-previous", dest="keep_previous_s", type=int,
                             default=86_400, help="seconds the old secret keeps signing")
        if action == "deliveries":
            sub.add_argument("--status", choices=("pending", "delivered", "failed"))
            sub.add_argument("--limit", type=_positive, default=50)
        if action == "retry":
            sub.add_argument("delivery", metavar="DELIVERY_ID", type=_positive, nargs="?")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tierflow", description="Real-time customer tiering: events in, tiers out.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _system_parsers(commands)
    _client_parsers(commands)
    return parser


def _version() -> str:
    try:
        return version("tierflow")
    except PackageNotFoundError:
        return "unknown"


def _data_dir(args: argparse.Namespace, settings: ClientSettings) -> Path:
    chosen: Path = args.data_dir or settings.data_dir
    return chosen


def _run_up(args: argparse.Namespace) -> int:
    from services.cli import up

    return up.run(_data_dir(args, ClientSettings()))


def _run_demo(args: argparse.Namespace) -> int:
    from services.cli import demo
    from services.cli.up import UpOptions

    options = demo.DemoOptions(customers=args.customers, seed=args.seed,
                               exit_after=args.exit, concurrency=args.concurrency)
    return demo.run(UpOptions(data_dir=_data_dir(args, ClientSettings()).resolve()), options)


def _run_service(args: argparse.Namespace) -> int:
    # Imported only now: each service pulls in its own dependencies.
    module = importlib.import_module(f"services.{args.command}.__main__")
    entry: Callable[[], None] = module.main
    entry()
    return 0


def _run_migrate(_: argparse.Namespace) -> int:
    from services.cli.migrate import run

    return run()


def _run_send(args: argparse.Namespace) -> int:
    from services.cli import send

    settings = ClientSettings()
    key = resolve_key(args.key, settings, args.data_dir)
    return send.run(args.file, url=(args.url or settings.ingest_url).rstrip("/"), key=key,
                    concurrency=args.concurrency, batch_size=args.batch_size)


def _run_policy(args: argparse.Namespace) -> int:
    from services.cli import policy

    settings = ClientSettings()
    return policy.run(policy.PolicyOptions(
        action=args.action, url=(args.url or settings.grader_url).rstrip("/"),
        key=resolve_key(args.key, settings, args.data_dir), file=getattr(args, "file", None),
        output=args.output, timeout=getattr(args, "timeout", 600.0),
    ))


def _run_customer(args: argparse.Namespace) -> int:
    from services.cli import customer

    settings = ClientSettings()
    return customer.run(customer.CustomerOptions(
        action=args.action, url=(args.url or settings.grader_url).rstrip("/"),
        key=resolve_key(args.key, settings, args.data_dir), customer_id=args.customer_id,
        output=args.output, limit=getattr(args, "limit", 20),
        cursor=getattr(args, "cursor", None), ladder=getattr(args, "ladder", None),
        tier=getattr(args, "tier", None), reason=getattr(args, "reason", None),
        expires_at=getattr(args, "expires_at", None), clear=getattr(args, "clear", False),
        yes=getattr(args, "yes", False),
    ))


def _run_subscriptions(args: argparse.Namespace) -> int:
    from services.cli import subscriptions

    settings = ClientSettings()
    options = {k: v for k, v in vars(args).items()
               if k in subscriptions.SubscriptionOptions.__dataclass_fields__}
    options.update(url=(args.url or settings.notifier_url).rstrip("/"),
                   key=resolve_key(args.key, settings, args.data_dir))
    return subscriptions.run(subscriptions.SubscriptionOptions(**options))


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": _run_up, "demo": _run_demo, "ingest": _run_service, "grader": _run_service,
    "notifier": _run_service, "migrate": _run_migrate, "send": _run_send, "policy": _run_policy,
    "customer": _run_customer, "subscriptions": _run_subscriptions,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the command, return the exit code (2: bad usage/config)."""
    args = build_parser().parse_args(argv)
    # pgserver's platformdirs warns about a variable only desktop sessions set: noise here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    if args.command not in SERVICES:  # a service sets up its own logging (TIERFLOW_LOG_LEVEL)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return HANDLERS[args.command](args)
    except ValidationError as exc:
        if not exc.title.endswith("Settings"):
            raise
        for line in settings_problems(exc):
            warn(f"tierflow: {line}")
        return 2
    except CliError as exc:
        warn(f"tierflow: {exc}")
        return exc.exit_code
    except ConfigError as exc:
        warn(f"tierflow: {exc}")
        return 2
    except TierflowError as exc:
        warn(f"tierflow: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other shell tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
