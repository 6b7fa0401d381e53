"""airflow_settings.yaml parsing (loading into a live DB is covered by the end-to-end tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.settings import SettingsError, parse

ROOT = Path(__file__).resolve().parents[2]


def test_project_settings_parse_and_keep_extra_key_case():
    settings = parse(ROOT / "airflow_settings.yaml")
    gcs = next(c for c in settings["connections"] if c["conn_id"] == "mlops_gcs")
    assert "keyFile" in gcs["extra"]
    s3 = next(c for c in settings["connections"] if c["conn_id"] == "mlops_s3")
    assert s3["extra"]["endpoint_url"].startswith("http://127.0.0.1")
    assert settings["pools"][0]["slots"] == 2


def test_bad_entries_name_what_is_missing(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("airflow:\n  connections:\n    - conn_type: http\n")
    with pytest.raises(SettingsError, match=r"airflow.connections\[0\] needs conn_id"):
        parse(path)
    path.write_text("airflow:\n  connections:\n    - {conn_id: a, conn_type: http, conn_extra: '{bad'}\n")
    with pytest.raises(SettingsError, match="conn_extra is not JSON"):
        parse(path)
