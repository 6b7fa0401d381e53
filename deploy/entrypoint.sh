#!/usr/bin/env bash
# The project image's entry point: one image for the Airflow components and for every remote job.
#
#   <image> train churn --lineage ... --result-uri ...   a core command: python -m include.mlops "$@"
#   <image> train                                        SageMaker's training job (hyperparameters.json)
#   <image> api-server | scheduler | celery worker | ...  anything else: Airflow's own /entrypoint
#
# Kubernetes pods, SageMaker processing jobs and Vertex AI custom jobs set the command to the entry
# point itself (include.mlops.remote.ENTRY_POINT); SageMaker training jobs and `docker run` come here.
# No credentials are read or kept here: the platform gives them to the job (IRSA, workload identity,
# SageMaker's execution role) and the operator passes MLflow's in the job's environment.
set -euo pipefail

# include.mlops.remote.ENTRY_POINT (tests/include/test_entry_point.py checks they are the same).
ENTRY_POINT=(python -m include.mlops)
# The sub-commands of `python -m include.mlops --help` (the same test keeps this list complete).
CORE_COMMANDS=(
    check-specs check-data history drift-history suggest-suite quarantine release generate
    ingest train evaluate promote rollback score drift aliases ping score-partition
)
# The official Airflow image's entry point (a test replaces it with a fake).
AIRFLOW_ENTRYPOINT="${MLOPS_AIRFLOW_ENTRYPOINT:-/entrypoint}"

if [[ $# -gt 0 ]]; then
    for command in "${CORE_COMMANDS[@]}"; do
        if [[ "$1" == "$command" ]]; then
            exec "${ENTRY_POINT[@]}" "$@"
        fi
    done
fi
exec "$AIRFLOW_ENTRYPOINT" "$@"
