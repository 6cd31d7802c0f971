"""Alembic environment: migrates the database named by the application settings.

A caller may instead hand over an open connection (or anything to ``connect()`` to, such as an
engine) in ``config.attributes["connection"]`` (the tests, pytest-alembic and
``innercontext.deploytool`` do this), and callables for ``on_version_apply`` in
``config.attributes["on_version_apply"]``.

All the migrations of one command run in ONE transaction (``transaction_per_migration`` is
off: PostgreSQL has transactional DDL), so an upgrade or a downgrade that raises leaves the
database as it was.

Offline (``--sql``, and ``innercontext.migrationlint``) the SQL is rendered for the app's
dialect without a database: neither ``DATABASE_URL`` nor the models are read (the imports are
deferred to the online path, which keeps the lint fast).
"""

from logging.config import fileConfig

from sqlalchemy import Connection

from alembic import context

# What offline rendering compiles for: the app's driver, no server.
OFFLINE_URL = "postgresql+psycopg://"

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection: Connection) -> None:
    from innercontext.models import Base

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        transaction_per_migration=False,
        on_version_apply=config.attributes.get("on_version_apply", ()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=OFFLINE_URL,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        run_migrations(given)
        return
    if given is not None:  # an engine, or what pytest-alembic hands over: connect() to it
        with given.connect() as connection:
            run_migrations(connection)
        return
    from innercontext.config import get_settings
    from innercontext.db import create_db_engine

    engine = create_db_engine(get_settings().database_url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
