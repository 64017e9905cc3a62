"""Alembic environment: central runs migrations programmatically (central.database.migrate) and passes
its engine in `config.attributes["engine"]`; there is no alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from central.schema import metadata

engine: Engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
