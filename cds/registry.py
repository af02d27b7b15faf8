"""Which models run for which modality.

A model package exposes a ``load(settings) -> model`` factory; the registry imports the factories
named in :data:`MODEL_FACTORIES` and keeps every model whose weights are present. A factory
that cannot load (weights not shipped, a file missing) raises :class:`ModelUnavailable` with the
reason, which ``cds status`` and the job record show; the pipeline then records "no model
registered for modality X" instead of inventing a result.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cds.domain import CaseInput, ModelIdentity, RecurrenceResult, StudyAnalysis, StudyInput
from cds.settings import Settings

log = logging.getLogger(__name__)

# Import paths of model factories, in the order they run. Each module defines
# ``load(settings: Settings) -> StudyModel | CaseModel`` and raises ModelUnavailable when it cannot.
MODEL_FACTORIES: tuple[str, ...] = (
    "models.mammography.runtime",
    "models.slides.runtime",
    "models.ultrasound.runtime",
    "models.recurrence.runtime",
)


class ModelUnavailable(RuntimeError):
    """A model cannot be loaded here (missing weights, card or dependency); says which and why."""


@runtime_checkable
class StudyModel(Protocol):
    """Runs on one study of one modality (mammography, slide, ultrasound)."""

    identity: ModelIdentity
    modalities: frozenset[str]

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis: ...


@runtime_checkable
class CaseModel(Protocol):
    """Runs on a patient case (everything known across studies): the recurrence model."""

    identity: ModelIdentity

    def analyze_case(self, case: CaseInput) -> RecurrenceResult: ...


@dataclass
class ModelRegistry:
    study_models: list[StudyModel] = field(default_factory=list)
    case_models: list[CaseModel] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # factory -> reason

    def for_modality(self, modality: str) -> list[StudyModel]:
        return [m for m in self.study_models if modality.upper() in m.modalities]

    @property
    def identities(self) -> list[ModelIdentity]:
        return [m.identity for m in (*self.study_models, *self.case_models)]


def build_registry(settings: Settings, factories: tuple[str, ...] = MODEL_FACTORIES) -> ModelRegistry:
    """Import each factory and keep the models that load; record why the others did not."""
    registry = ModelRegistry()
    for path in (*factories, *settings.extra_model_factories):
        parts = path.split(".")
        short = parts[-2] if len(parts) > 1 else parts[0]  # "models.slides.runtime" -> "slides"
        if path in settings.disabled_models or short in settings.disabled_models:
            registry.unavailable[path] = "disabled in settings"
            continue
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            registry.unavailable[path] = f"not built yet ({exc.name} missing)"
            continue
        except Exception as exc:  # a broken model module must not take the service down
            registry.unavailable[path] = f"import failed: {type(exc).__name__}: {exc}"
            log.error("model module %s cannot be imported: %s", path, exc)
            continue
        try:
            model = module.load(settings)
        except ModelUnavailable as exc:
            registry.unavailable[path] = str(exc)
            continue
        except Exception as exc:
            registry.unavailable[path] = f"load failed: {type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", path, exc)
            continue
        if isinstance(model, CaseModel) and not isinstance(model, StudyModel):
            registry.case_models.append(model)
        else:
            registry.study_models.append(model)
        log.info("model loaded: %s %s", model.identity.name, model.identity.version)
    return registry
