"""Schema migrations with Alembic, configured in code (no alembic.ini to lose)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.storage.engine import async_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on % in passwords.
    config.set_main_option(
        "sqlalchemy.url", async_url(database_url).render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def upgrade(database_url: str, revision: str = "head", service_role: str | None = None) -> None:
    """Migrate, install the SQL functions and, with `service_role`, give that role exactly what
    meter serves with may do (meter_grant_service_role), in one transaction."""
    config = alembic_config(database_url)
    config.attributes["service_role"] = service_role
    command.upgrade(config, revision)


async def upgrade_async(database_url: str, service_role: str | None = None) -> None:
    """Alembic's env runs its own event loop; keep it off the server's loop."""
    await asyncio.to_thread(upgrade, database_url, "head", service_role)


def head_revision() -> str:
    """The newest migration this code ships."""
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None, "the migrations folder has a head"
    return head


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The database's migration, or None when it was never migrated. Raises when unreachable."""
    async with engine.connect() as connection:
        exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision: str | None = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        return revision
