"""Names of the tags the project writes on MLflow runs, model versions and registered models.

One constant per tag, so that the writer and every reader spell it the same way; the values are
part of the contract with people reading the MLflow UI and with older versions, so never rename one.
"""

from __future__ import annotations

# Lineage of a training run and its model version (written by training).
PIPELINE = "mlops.pipeline"
DATASET_URIS = "mlops.dataset_uris"
DATASET_SHA256 = "mlops.dataset_sha256"
VALIDATION = "mlops.validation"
CODE_VERSION = "mlops.code_version"
ESTIMATOR = "mlops.estimator"
TRAINING_ROWS = "mlops.training_rows"
HOLDOUT_ROWS = "mlops.holdout_rows"

# Lineage from Airflow (written by the operators, read to find work a retried task already did).
AIRFLOW_DAG_ID = "airflow.dag_id"
AIRFLOW_RUN_ID = "airflow.run_id"
AIRFLOW_TASK_ID = "airflow.task_id"

# The gate's decision on a model version (written by the gate, read by promotion and retraining).
GATE_DECISION = "mlops.gate.decision"
GATE_ID = "mlops.gate.id"
GATE_CHAMPION_VERSION = "mlops.gate.champion_version"
GATE_REASONS = "mlops.gate.reasons"
GATE_REPORT = "mlops.gate.report"
GATE_PASSED = "passed"
GATE_FAILED = "failed"

# Promotion bookkeeping on model versions and on the registered model.
APPROVAL = "mlops.approval"
PROMOTED_AT = "mlops.promoted_at"
PROMOTION_ID = "mlops.promotion_id"
PENDING = "mlops.pending"
HISTORY_PREFIX = "mlops.history."
