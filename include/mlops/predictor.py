"""The prediction columns a model writes for a frame: ``prediction`` and, when binary, ``probability``.

Batch inference, the drift reference and the gate all predict through here, so the columns they
compare are computed the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PREDICT_CHECK_ROWS = 2_000  # rows on which argmax(predict_proba) is compared with predict


class Predictor:
    """Prediction columns for a chunk from one model pass.

    A classifier with ``predict_proba`` runs once: labels are the argmax of the probabilities, as
    ``predict`` gives them for the usual estimators. This is checked against ``predict`` on the first
    chunk's first rows; for a model where it does not hold (e.g. an SVC) ``predict`` runs as well.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.proba = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        self.argmax_matches: bool | None = None

    def __call__(self, features: pd.DataFrame) -> dict[str, Any]:
        """Prediction columns for one chunk, from a single model pass when that is exact."""
        import numpy as np

        if not self.proba:
            return {"prediction": np.asarray(self.model.predict(features))}
        proba = np.asarray(self.model.predict_proba(features))
        classes = np.asarray(self.model.classes_)
        predicted = classes[np.argmax(proba, axis=1)]
        if self.argmax_matches is None:
            head = features.iloc[:PREDICT_CHECK_ROWS]
            self.argmax_matches = bool(
                np.array_equal(np.asarray(self.model.predict(head)), predicted[: len(head)])
            )
            if not self.argmax_matches:
                log.info("argmax(predict_proba) differs from predict for this model: running both")
        if not self.argmax_matches:
            predicted = np.asarray(self.model.predict(features))
        columns = {"prediction": predicted}
        if proba.shape[1] == 2:
            columns["probability"] = np.ascontiguousarray(proba[:, 1])
        return columns


def predict(model: Any, features: pd.DataFrame) -> dict[str, Any]:
    """``prediction`` and, for a binary classifier, ``probability`` (the drift reference uses it)."""
    return Predictor(model)(features)


# ---------------------------------------------------------------------------------------------
# Training side
# ---------------------------------------------------------------------------------------------


def predict_frame(model: Any, features: pd.DataFrame) -> pd.DataFrame:
    """The prediction columns batch inference writes (``prediction``, maybe ``probability``)."""
    import pandas as pd

    return pd.DataFrame(predict(model, features))
