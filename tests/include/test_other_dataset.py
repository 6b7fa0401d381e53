"""A spec written for another tabular dataset works without code changes.

Uses datasets that scikit-learn ships (no download): wine (three classes, string labels) and
breast cancer (binary, string labels), written as CSV with a suite written from scratch.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from include.mlops import storage
from include.mlops.data import ingest
from include.mlops.gate import evaluation
from include.mlops.model import registry, training
from include.mlops.scoring import inference
from include.mlops.spec import find_spec

pytestmark = pytest.mark.slow


def frame(loader) -> pd.DataFrame:
    data = loader(as_frame=True)
    df = data.frame.rename(columns=lambda c: c.replace(" ", "_").replace("/", "_"))
    df["label"] = [str(data.target_names[t]) for t in data.target]
    df = df.drop(columns=["target"])
    df.insert(0, "sample_id", range(len(df)))
    return df


@pytest.mark.parametrize("dataset", ["wine", "breast_cancer"])
def test_foreign_dataset_end_to_end(dataset, state, pipelines_dir, tmp_path):
    from sklearn import datasets

    df = frame(getattr(datasets, f"load_{dataset}"))
    suite = tmp_path / f"{dataset}.json"
    suite.write_text(
        json.dumps(
            {
                "name": dataset,
                "expectations": [
                    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "sample_id"}},
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}},
                ],
            }
        )
    )
    spec_file = pipelines_dir / f"{dataset}.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": dataset,
                "data": {
                    "landing": f"{{MLOPS_DATA_ROOT}}/in/{dataset}",
                    "format": "csv",
                    "target": "label",
                    "task": "classification",
                    "id_column": "sample_id",
                },
                "validation": {"suite": str(suite)},
                "training": {
                    "estimator": "sklearn.linear_model.LogisticRegression",
                    "params": {"max_iter": 500},
                    "holdout_fraction": 0.3,
                },
                "evaluation": {
                    "primary_metric": "f1",
                    "thresholds": {"f1": {"min": 0.8}, "roc_auc": {"min": 0.9}},
                },
                "inference": {
                    "input": f"{{MLOPS_DATA_ROOT}}/score/{dataset}",
                    "output": f"{{MLOPS_DATA_ROOT}}/predictions/{dataset}",
                    "format": "csv",
                },
            }
        )
    )
    spec = find_spec(dataset)
    storage.write_text(storage.join(spec.uri("landing"), "batch.csv"), df.to_csv(index=False))
    storage.write_text(
        storage.join(spec.uri("scoring"), "new.csv"), df.drop(columns=["label"]).head(40).to_csv(index=False)
    )

    [published] = [ingest.ingest_file(spec, uri) for uri in ingest.discover(spec)]
    assert published.status == "published"
    result = training.train(spec)
    assert result.metrics["f1"] > 0.8
    decision = evaluation.evaluate(spec)
    assert decision["passed"], decision["reasons"]
    registry.promote(spec, version=result.version, expected_champion=None)
    scored = inference.score(spec, run_id="r")
    predictions = pd.read_parquet(scored["files"][0]["output"])
    assert set(predictions["prediction"]) <= set(df["label"])
    assert len(predictions) == 40
