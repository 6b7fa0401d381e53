# syntax=docker/dockerfile:1
# Image for every Airflow component of docker-compose.yaml and for its MLflow tracking server.
FROM apache/airflow:3.3.2-python3.12

# requirements.lock is the uv-compiled, universal lock of requirements.txt: the whole dependency
# closure, pinned (apache-airflow==3.3.2 included), so it is installed as-is with --no-deps.
# Packages that the base image ships and the lock does not name (the Celery, Postgres and Redis
# providers, psycopg2-binary, ...) stay as the image has them.
COPY requirements.lock /requirements.lock
RUN pip install --no-cache-dir --no-deps --requirement /requirements.lock
