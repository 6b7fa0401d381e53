#!/usr/bin/env bash
# Creates, next to the Airflow metadata database, MLflow's tracking database and its basic-auth
# app's user store (owner: the MLflow role) and the project's coordination store (its own role).
#
# Run by the postgres image's entrypoint from /docker-entrypoint-initdb.d, once, when the data
# volume is initialised; it does not run again on an existing volume (drop the volume to re-run).
# Credentials come from the postgres service's environment in docker-compose.yaml.
set -e

: "${MLFLOW_DB_NAME:?MLFLOW_DB_NAME must be set}"
: "${MLFLOW_AUTH_DB_NAME:?MLFLOW_AUTH_DB_NAME must be set}"
: "${MLFLOW_DB_USER:?MLFLOW_DB_USER must be set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"
: "${MLOPS_DB_NAME:?MLOPS_DB_NAME must be set}"
: "${MLOPS_DB_USER:?MLOPS_DB_USER must be set}"
: "${MLOPS_DB_PASSWORD:?MLOPS_DB_PASSWORD must be set}"

# psql variables (:"ident" / :'literal') quote the values, so no shell text is spliced into SQL.
psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=mlflow_db="$MLFLOW_DB_NAME" \
    --set=mlflow_auth_db="$MLFLOW_AUTH_DB_NAME" \
    --set=mlflow_user="$MLFLOW_DB_USER" \
    --set=mlflow_password="$MLFLOW_DB_PASSWORD" \
    --set=mlops_db="$MLOPS_DB_NAME" \
    --set=mlops_user="$MLOPS_DB_USER" \
    --set=mlops_password="$MLOPS_DB_PASSWORD" <<'SQL'
CREATE ROLE :"mlflow_user" WITH LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE :"mlflow_db" WITH OWNER :"mlflow_user";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
CREATE DATABASE :"mlflow_auth_db" WITH OWNER :"mlflow_user";
REVOKE ALL ON DATABASE :"mlflow_auth_db" FROM PUBLIC;
CREATE ROLE :"mlops_user" WITH LOGIN PASSWORD :'mlops_password';
CREATE DATABASE :"mlops_db" WITH OWNER :"mlops_user";
REVOKE ALL ON DATABASE :"mlops_db" FROM PUBLIC;
SQL
