"""`tierflow subscriptions …` against the real notifier app: add, list, deliveries, retry,
rotate, remove, and `listen` (a receiver that prints verified deliveries)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli import subscriptions as cli
from shared.embedded import free_port
from tests.integration.webhook_support import (
    ADMIN_KEY,
    Receiver,
    notifier,
    record,
    webhook_settings,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


def options(action: str, **fields: Any) -> cli.SubscriptionOptions:
    return cli.SubscriptionOptions(action=action, url="http://notifier", key=ADMIN_KEY, **fields)


async def test_add_list_deliveries_retry_rotate_remove(
    engine: AsyncEngine, migrated_pg: str, broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder, receiver = unique("ladder"), Receiver()
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with receiver.running(), notifier(settings) as api:
        assert await cli.add(api, options("add", target=receiver.url, ladders=[ladder],
                                          directions=["initial", "up"])) == 0
        added = capsys.readouterr().out
        sid = added.split()[1]
        assert "secret  whsec_" in added and "not shown again" in added
        assert f"ladders={ladder}" in added and "directions=initial,up" in added

        assert await cli.list_all(api, options("list")) == 0
        assert sid in capsys.readouterr().out

        await record(engine, unique("c"), ladder, range(1, 3))

        async def delivered() -> None:
            assert len(receiver.hits) == 2

        await eventually(delivered)

        async def listed() -> None:
            await cli.deliveries(api, options("deliveries", target=sid))
            out = capsys.readouterr().out
            assert out.count("delivered") == 2, out

        await eventually(listed)
        assert await cli.retry(api, options("retry", target=sid)) == 0
        assert "0 failed deliveries queued" in capsys.readouterr().out

        assert await cli.rotate(api, options("rotate-secret", target=sid)) == 0
        assert "new secret  whsec_" in capsys.readouterr().out

        assert await cli.remove(api, options("remove", target=sid)) == 0
        with pytest.raises(cli.CliError, match="404"):
            await cli.remove(api, options("remove", target=sid))


async def test_listen_prints_verified_deliveries_and_unsubscribes(
    engine: AsyncEngine, migrated_pg: str, broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder = unique("ladder")
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with notifier(settings) as api:
        listening = asyncio.create_task(cli.listen(api, options(
            "listen", port=free_port(), ladders=[ladder])))
        try:

            out: list[str] = []

            async def printed(*wanted: str) -> None:
                out.append(capsys.readouterr().out)
                assert all(w in "".join(out) for w in wanted), out

            await eventually(lambda: printed("listening on"))
            customer = unique("c")
            await record(engine, customer, ladder, range(1, 2))
            await eventually(lambda: printed(f"✓ {customer}  {ladder}: (new) → vip",
                                             "actions: exclusive_offer"))
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
        assert "removed" in capsys.readouterr().out
        remaining = (await api.get("/v1/subscriptions")).json()["items"]
        assert all(s["filter"]["ladders"] != [ladder] for s in remaining)
