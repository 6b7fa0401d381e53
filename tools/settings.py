"""Load ``airflow_settings.yaml`` (Astro CLI format) into the Airflow metadata DB.

``python -m tools.settings load airflow_settings.yaml`` upserts connections, variables and pools.
Connection extras are stored as given: their keys keep their case (``endpoint_url`` and
``keyFile`` alike). Re-running it is safe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CONNECTION_FIELDS = {
    "conn_type": "conn_type",
    "conn_host": "host",
    "conn_schema": "schema",
    "conn_login": "login",
    "conn_password": "password",
    "conn_port": "port",
    "conn_description": "description",
}


class SettingsError(Exception):
    """The settings file is unreadable or invalid; the message names the entry and field."""


def parse(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Read and check the file; every problem names the entry and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot read: {exc}") from None
    section = raw.get("airflow", raw) or {}
    result: dict[str, list[dict[str, Any]]] = {"connections": [], "variables": [], "pools": []}
    for index, item in enumerate(section.get("connections") or []):
        if not item.get("conn_id") or not item.get("conn_type"):
            raise SettingsError(f"{path}: airflow.connections[{index}] needs conn_id and conn_type")
        extra = item.get("conn_extra")
        if isinstance(extra, str) and extra.strip():
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError as exc:
                raise SettingsError(
                    f"{path}: connection {item['conn_id']}: conn_extra is not JSON: {exc}"
                ) from None
        conn = {
            target: item.get(source)
            for source, target in CONNECTION_FIELDS.items()
            if item.get(source) is not None
        }
        result["connections"].append({"conn_id": item["conn_id"], **conn, "extra": extra or None})
    for index, item in enumerate(section.get("variables") or []):
        if not item.get("variable_name"):
            raise SettingsError(f"{path}: airflow.variables[{index}] needs variable_name")
        value = item.get("variable_value")
        result["variables"].append(
            {
                "key": item["variable_name"],
                "value": value if isinstance(value, str) else json.dumps(value),
            }
        )
    for index, item in enumerate(section.get("pools") or []):
        if not item.get("pool_name") or not isinstance(item.get("pool_slot"), int):
            raise SettingsError(f"{path}: airflow.pools[{index}] needs pool_name and an integer pool_slot")
        result["pools"].append(
            {
                "name": item["pool_name"],
                "slots": item["pool_slot"],
                "description": item.get("pool_description", ""),
            }
        )
    return result


def load(path: Path) -> dict[str, int]:
    """Upsert everything into the metadata DB configured by the environment."""
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    settings = parse(path)
    with create_session() as session:
        for item in settings["connections"]:
            existing = session.query(Connection).filter(Connection.conn_id == item["conn_id"]).one_or_none()
            extra = json.dumps(item.pop("extra")) if item.get("extra") else None
            conn = existing or Connection(conn_id=item["conn_id"])
            for key, value in item.items():
                setattr(conn, key, value)
            conn.set_extra(extra)
            session.add(conn)
        for item in settings["pools"]:
            Pool.create_or_update_pool(
                name=item["name"],
                slots=item["slots"],
                description=item["description"],
                include_deferred=False,
                session=session,
            )
    for item in settings["variables"]:
        Variable.set(item["key"], item["value"])
    return {name: len(items) for name, items in settings.items()}


def main() -> None:
    """CLI: ``load`` writes to the metadata DB, ``check`` only validates; exit code 2 on a bad file."""
    parser = argparse.ArgumentParser(prog="python -m tools.settings", description=__doc__)
    parser.add_argument("command", choices=["load", "check"])
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    try:
        counts = (
            load(args.path) if args.command == "load" else {k: len(v) for k, v in parse(args.path).items()}
        )
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(", ".join(f"{count} {name}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
