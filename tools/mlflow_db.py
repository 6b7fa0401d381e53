"""MLflow's two databases before its server starts: the tracking store and the basic-auth app's users.

``python -m tools.mlflow_db`` (the compose stack's ``airflow-init``; the native production stack calls
``prepare`` in-process) migrates the tracking store (``mlflow db upgrade``: creates the tables of an
empty database, upgrades an older schema), migrates the basic-auth app's user store and makes sure the
tasks' user exists with the given password (created, or its password set again: rotating it is
changing the secret and re-running this). The server creates its admin itself, from its settings.
Everything comes from the environment, so no password is in a process's arguments:

- ``MLFLOW_BACKEND_STORE_URI``: the tracking store (as ``mlflow server`` reads it);
- ``MLFLOW_AUTH_DATABASE_URI``: the basic-auth app's store (its ``database_uri``);
- ``MLFLOW_TASK_USERNAME`` / ``MLFLOW_TASK_PASSWORD``: the login of the ``mlflow_default`` connection.
"""

from __future__ import annotations

import os
import sys


def migrate_tracking_store(uri: str) -> None:
    """What ``mlflow db upgrade <uri>`` does: tables created on an empty database, else upgraded."""
    from mlflow.store.db import utils

    engine = utils.create_sqlalchemy_engine_with_retry(uri)
    try:
        if utils._is_empty_database(engine):
            utils._initialize_tables(engine)
        else:
            utils._upgrade_db(engine)
    finally:
        engine.dispose()


def ensure_user(auth_uri: str, username: str, password: str) -> bool:
    """Migrate the basic-auth app's store and give ``username`` this password; True if it was created."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_uri)  # creates or upgrades its tables
    try:
        if store.has_user(username):
            store.update_user(username, password=password)
            return False
        store.create_user(username, password)
        return True
    finally:
        store.engine.dispose()


def prepare(tracking_uri: str, auth_uri: str, username: str, password: str) -> bool:
    """Both stores migrated and the tasks' user in place; True if the user was created."""
    migrate_tracking_store(tracking_uri)
    return ensure_user(auth_uri, username, password)


def main() -> int:
    """CLI: everything from the environment (see the module docstring); 2 if a variable is missing."""
    names = (
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_DATABASE_URI",
        "MLFLOW_TASK_USERNAME",
        "MLFLOW_TASK_PASSWORD",
    )
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        print(f"error: set {', '.join(missing)}", file=sys.stderr)
        return 2
    created = prepare(*(os.environ[name] for name in names))
    user = os.environ["MLFLOW_TASK_USERNAME"]
    print(f"MLflow stores migrated; user {user!r} {'created' if created else 'updated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
