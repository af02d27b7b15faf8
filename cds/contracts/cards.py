"""Model cards: the JSON that ships beside every ONNX weight file.

The card is what a site's ML engineer reads before trusting a model and what the writers copy
into the SR, the FHIR RiskAssessment and the PDF: identity, intended use, training data, metrics,
calibration map and operating thresholds. A card of weights trained on synthetic data says so in
``notice``, and the runtime refuses a card that claims otherwise while ``synthetic_trained`` is
set.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from cds.contracts.domain import NOT_FOR_CLINICAL_USE, ModelIdentity

# Root for the derived device UIDs (UUID-derived "2.25." form needs no registered root).
_UID_NAMESPACE = uuid.UUID("6f1c1a52-2b7e-4f7b-9a55-0c7d3b1e9a10")


def device_uid(name: str, version: str) -> str:
    """A stable DICOM UID for one model name and version (the Device UID of the algorithm)."""
    return "2.25." + str(uuid.uuid5(_UID_NAMESPACE, f"{name}/{version}").int)


class ModelCard(BaseModel):
    name: str
    version: str
    task: str
    intended_use: str
    training_data: str
    synthetic_trained: bool = True
    notice: str = ""
    architecture: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    calibration: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: dict[str, str] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    card_schema: int = 1

    @model_validator(mode="after")
    def _notice_for_synthetic(self) -> ModelCard:
        if self.synthetic_trained and NOT_FOR_CLINICAL_USE.lower().rstrip(".") not in self.notice.lower():
            self.notice = (self.notice + " " + NOT_FOR_CLINICAL_USE).strip()
        return self

    @property
    def device_uid(self) -> str:
        return device_uid(self.name, self.version)

    def identity(self, card_path: Path | None = None) -> ModelIdentity:
        return ModelIdentity(
            name=self.name,
            version=self.version,
            device_uid=self.device_uid,
            synthetic_trained=self.synthetic_trained,
            intended_use=self.intended_use,
            card=card_path,
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls.model_validate_json(path.read_text())
