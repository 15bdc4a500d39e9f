"""`tierflow migrate`: bring the configured database's schema to the newest revision."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from services.cli.config import CliError
from services.cli.output import say
from shared.db.migrate import alembic_config, upgrade_sync
from shared.settings import CommonSettings


def shown(url: str) -> str:
    """A database URL safe to print: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def run() -> int:
    """Migrate and print the revision the schema is at."""
    url = CommonSettings().database_url.get_secret_value()
    try:
        upgrade_sync(url)
    except (OSError, SQLAlchemyError) as exc:
        raise CliError(f"cannot migrate {shown(url)}: {exc}") from None
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    say(f"database schema is at revision {head} ({shown(url)})")
    return 0
