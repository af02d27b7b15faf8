"""Which models run for which modality.

The wiring layer names the factory modules (each defines ``load(settings)``); the registry
imports them and keeps every model that loads. A model that cannot load is recorded with the
exact reason (a missing dependency names the package), so ``cds status`` and the job record can
say it, and so the service can refuse to start when an enabled model is unavailable.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

from cds.contracts.domain import ModelIdentity
from cds.contracts.model import CaseModel, ModelUnavailable, StudyModel
from cds.contracts.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ModelRegistry:
    study_models: list[StudyModel] = field(default_factory=list)
    case_models: list[CaseModel] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # factory -> reason
    disabled: set[str] = field(default_factory=set)  # factories a site switched off

    def for_modality(self, modality: str) -> list[StudyModel]:
        return [m for m in self.study_models if modality.upper() in m.modalities]

    @property
    def identities(self) -> list[ModelIdentity]:
        return [m.identity for m in (*self.study_models, *self.case_models)]

    @property
    def failed(self) -> dict[str, str]:
        """Enabled models that did not load, with the reason."""
        return {k: v for k, v in self.unavailable.items() if k not in self.disabled}


def short_name(path: str) -> str:
    """``models.slides.runtime`` -> ``slides``: the name a site uses to disable a model."""
    parts = path.split(".")
    return parts[-2] if len(parts) > 1 else parts[0]


def _load(path: str, settings: Settings) -> StudyModel | CaseModel:
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == path or path.startswith(exc.name + ".")):
            raise ModelUnavailable(f"model module {path} not found") from exc
        raise ModelUnavailable(f"missing dependency: {exc.name} (needed by {path})") from exc
    model = module.load(settings)
    return model


def build_registry(settings: Settings, factories: tuple[str, ...]) -> ModelRegistry:
    """Import each factory and keep the models that load; record why the others did not."""
    registry = ModelRegistry()
    for path in (*factories, *settings.extra_model_factories):
        if path in settings.disabled_models or short_name(path) in settings.disabled_models:
            registry.unavailable[path] = "disabled in settings"
            registry.disabled.add(path)
            continue
        try:
            model = _load(path, settings)
        except ModelUnavailable as exc:
            registry.unavailable[path] = str(exc)
            log.error("model %s unavailable: %s", path, exc)
            continue
        except Exception as exc:  # a broken model module must not take the service down
            registry.unavailable[path] = f"load failed: {type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", path)
            continue
        if isinstance(model, CaseModel) and not isinstance(model, StudyModel):
            registry.case_models.append(model)
        else:
            registry.study_models.append(model)
        log.info("model loaded: %s %s", model.identity.name, model.identity.version)
    return registry
