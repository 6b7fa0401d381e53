"""airflow-mlops core library.

Framework-free: nothing here imports Airflow, so the same code runs in an Airflow worker, in a
Kubernetes pod or in a SageMaker / Vertex container (``python -m include.mlops <command>``).
Heavy libraries (pandas, sklearn, mlflow, ...) are imported only by the modules that do the work,
never by ``spec``, ``errors`` or ``paths``, which DAG files import at parse time.
"""
