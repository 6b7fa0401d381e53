# syntax=docker/dockerfile:1
# The project's one image. It runs every Airflow component of docker-compose.yaml and its MLflow
# tracking server, and it is the image every remote backend runs a stage in: a Kubernetes pod, a
# SageMaker training or processing job, a Vertex AI custom job (docs/backends.md: build and push).
FROM apache/airflow:3.3.2-python3.12

# requirements.lock is the uv-compiled, universal lock of requirements.txt: the whole dependency
# closure, pinned (apache-airflow==3.3.2 included), so it is installed as-is with --no-deps.
# Packages that the base image ships and the lock does not name (the Celery, Postgres and Redis
# providers, psycopg2-binary, ...) stay as the image has them.
COPY requirements.lock /requirements.lock
RUN pip install --no-cache-dir --no-deps --requirement /requirements.lock

# The project: the framework-free core with the pipeline specs and suites (include/), the Airflow
# adapters (plugins/), the DAG files and the tools, where Airflow looks for them. docker-compose.yaml
# mounts the working tree over these folders, so local edits need no rebuild there.
# No credentials and no connections go into the image: a job gets its cloud credentials from its
# platform (IRSA, workload identity, SageMaker's execution role) and MLflow's from the operator.
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 tools/ /opt/airflow/tools/
COPY --chown=airflow:0 --chmod=0755 deploy/entrypoint.sh /opt/airflow/deploy/entrypoint.sh
RUN python -m compileall -q /opt/airflow/include /opt/airflow/plugins

# `python -m include.mlops` (include.mlops.remote.ENTRY_POINT) must import the project from anywhere.
ENV PYTHONPATH=/opt/airflow \
    PYTHONUNBUFFERED=1
WORKDIR /opt/airflow

# The core's commands (train, score-partition, ingest, ... and SageMaker's bare `train`) run
# `python -m include.mlops`; anything else (api-server, scheduler, celery worker, bash, ...) goes
# to Airflow's own /entrypoint, as with the base image. dumb-init forwards signals to the job.
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/airflow/deploy/entrypoint.sh"]
CMD []
