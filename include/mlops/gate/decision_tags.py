"""The gate's decision as recorded on a model version's tags, read back by promotion.

The gate writes its verdict, decision id and the champion it compared against as ``mlops.gate.*``
tags on the candidate version; promotion reads them to do a compare-and-set against the champion
the gate saw. Reading them here keeps the tag names and the ``"none"`` convention in the core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from include.mlops import tracking
from include.mlops.tags import GATE_CHAMPION_VERSION, GATE_DECISION, GATE_ID, GATE_PASSED, GATE_REPORT

NO_CHAMPION = "none"  # what the gate writes in GATE_CHAMPION_VERSION when there was no champion


@dataclass(frozen=True)
class GateDecisionTags:
    """What a version's tags say about its gate decision (``None`` where a tag is absent).

    ``champion_version`` is the champion the candidate was compared with, ``None`` when there was
    none: promotion expects exactly that champion, so a champion that moved since is refused.
    """

    version: str
    decision: str | None
    decision_id: str | None
    champion_version: str | None
    report: str | None

    @property
    def passed(self) -> bool:
        """Whether the gate recorded a passed decision (a missing decision is not a pass)."""
        return self.decision == GATE_PASSED

    @classmethod
    def from_tags(cls, version: str, tags: Mapping[str, str]) -> GateDecisionTags:
        """The record from a version's tag mapping, as MLflow returns it."""
        champion = tags.get(GATE_CHAMPION_VERSION)
        return cls(
            version=version,
            decision=tags.get(GATE_DECISION),
            decision_id=tags.get(GATE_ID),
            champion_version=None if champion in (None, NO_CHAMPION) else champion,
            report=tags.get(GATE_REPORT),
        )


def read_decision_tags(model: str, version: str, *, tracking_uri: str) -> GateDecisionTags:
    """Read ``model`` v``version``'s gate tags from the registry.

    A version that does not exist is a deterministic ``PromotionRefused`` (a typo in a UI param must
    not be retried); a tracking server that does not answer is ``ServiceUnavailable`` (retried).
    """
    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        tags = tracking.get_version(client, model, version).tags
    return GateDecisionTags.from_tags(version, tags)
