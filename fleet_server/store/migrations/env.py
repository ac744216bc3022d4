"""Alembic's entry point for the fleet server's schema.

At run time :mod:`fleet_server.store.migrate` hands the connection (already
inside its locked transaction) in ``config.attributes["connection"]``. For a
developer writing a revision, ``alembic -x url=sqlite:///fleet.db ...`` with
``script_location`` pointing here works too.
"""

from alembic import context
from sqlalchemy import create_engine

from fleet_server.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).connect() as own:
        context.configure(connection=own, target_metadata=metadata, render_as_batch=own.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        own.commit()
else:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
