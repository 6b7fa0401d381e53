#!/usr/bin/env bash
# Creates the MLflow tracking database and its owner next to the Airflow metadata database.
#
# Run by the postgres image's entrypoint from /docker-entrypoint-initdb.d, once, when the data
# volume is initialised; it does not run again on an existing volume (drop the volume to re-run).
# Credentials come from the postgres service's environment in docker-compose.yaml.
set -e

: "${MLFLOW_DB_NAME:?MLFLOW_DB_NAME must be set}"
: "${MLFLOW_DB_USER:?MLFLOW_DB_USER must be set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"

# psql variables (:"ident" / :'literal') quote the values, so no shell text is spliced into SQL.
psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=mlflow_db="$MLFLOW_DB_NAME" \
    --set=mlflow_user="$MLFLOW_DB_USER" \
    --set=mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"mlflow_user" WITH LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE :"mlflow_db" WITH OWNER :"mlflow_user";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
SQL
