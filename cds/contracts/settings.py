"""The one settings object.

Sites script against these names (``CDS_*`` environment variables, or a TOML file named by
``CDS_CONFIG``), so renaming a field is a breaking change. Every field has a safe default so that
``cds serve`` runs with no configuration at all: local spool, SQLite store, shipped models, and
results written to the output folder when no PACS or FHIR server is configured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class LoincMap(BaseModel):
    """FHIR Observation codes (LOINC by default) for each clinical variable the models read.

    Sites differ in which codes they use, so the table lives in settings. Each value is a list of
    accepted ``system|code`` tokens; the first match wins. The LOINC defaults were checked against
    their LOINC definitions (ER 16112-5, PR 16113-3, HER2 48676-1 "[Interpretation] in Tissue";
    Ki-67 29593-1; tumour size 21889-1 "Size Tumor"; 21893-3 "Regional lymph nodes positive";
    44648-4 Nottingham grade).
    """

    er: list[str] = Field(default_factory=lambda: ["http://loinc.org|16112-5"])
    pr: list[str] = Field(default_factory=lambda: ["http://loinc.org|16113-3"])
    her2: list[str] = Field(default_factory=lambda: ["http://loinc.org|48676-1"])
    ki67: list[str] = Field(default_factory=lambda: ["http://loinc.org|29593-1"])
    tumour_size_mm: list[str] = Field(default_factory=lambda: ["http://loinc.org|21889-1"])
    positive_nodes: list[str] = Field(default_factory=lambda: ["http://loinc.org|21893-3"])
    grade: list[str] = Field(default_factory=lambda: ["http://loinc.org|44648-4"])
    # Not a verified LOINC concept for menopausal status: the SNOMED CT observable (used by the
    # HL7 ICHOM breast-cancer IG) comes first; the LOINC code is kept for sites that used it.
    menopausal_status: list[str] = Field(
        default_factory=lambda: ["http://snomed.info/sct|161712005", "http://loinc.org|42802-5"]
    )


class Settings(BaseSettings):
    """Runtime configuration for every stage (listener, scheduler, workers, writers, dispatch)."""

    model_config = SettingsConfigDict(
        env_prefix="CDS_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # --- DICOM listener -------------------------------------------------------------------
    ae_title: str = Field("CDS", description="Our AE title (called AE expected by the SCP).")
    host: str = Field("0.0.0.0", description="Address the DICOM listener binds to.")
    port: int = Field(11112, description="DICOM listener port.")
    allowed_aes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate; empty allows all.",
    )
    max_pdu: int = Field(
        262144, description="Maximum PDU we accept; large PDUs cut per-PDU overhead (0 = unlimited, which dcmtk mishandles)."
    )
    # --- store, spool, workers ------------------------------------------------------------
    data_dir: Path = Field(Path("./cds-data"), description="Spool, store and job work folders.")
    database_url: str = Field(
        "", description="Store URL; empty means SQLite at <data_dir>/cds.sqlite3."
    )
    stable_age_s: float = Field(
        60.0, description="A study is stable when no instance arrived for this many seconds."
    )
    stable_check_interval_s: float = Field(
        2.0, description="How often the scheduler looks for stable studies."
    )
    workers: int = Field(1, ge=1, description="Job worker threads for study jobs (model inference).")
    case_workers: int = Field(
        1, ge=0, description="Worker threads that only run patient-case jobs (fusion, PDF), so a slow "
        "report never delays the next study's findings. 0: the study workers run case jobs too.")
    poll_interval_s: float = Field(
        0.1, gt=0, description="Idle workers and the dispatcher look for due work this often "
        "(an idle look is one cheap SQLite query; it bounds the latency each stage adds)."
    )
    case_refresh_interval_s: float = Field(
        3600.0,
        description="Re-check the FHIR context of recently active cases this often (0 = never); "
        "a case re-runs only if its inputs changed (new Observations, a new report).",
    )
    case_refresh_window_days: float = Field(
        30.0, description="Cases with a study received within this many days are refreshed."
    )
    job_max_attempts: int = Field(5, ge=1)
    job_backoff_base_s: float = Field(2.0, description="Retry delay = base * 2**(attempt-1).")
    job_backoff_max_s: float = Field(300.0)
    job_lease_s: float = Field(
        900.0, description="A running job whose lease expired is taken up again (crash recovery)."
    )
    outbox_max_attempts: int = Field(
        20, ge=1,
        description="Deliveries failing transiently this many times go to dead-letter "
        "(with backoff capped at job_backoff_max_s, 20 attempts span over an hour).",
    )
    # --- outputs --------------------------------------------------------------------------
    output_dir: Path = Field(
        Path("./cds-output"),
        description="Where results go when no PACS/FHIR destination is configured.",
    )
    pacs_ae_title: str = Field("", description="PACS AE title for C-STORE of results.")
    pacs_host: str = Field("")
    pacs_port: int = Field(104)
    dicomweb_url: str = Field("", description="STOW-RS base URL (alternative to C-STORE).")
    dicomweb_username: str = Field("")
    dicomweb_password: str = Field("")
    encapsulated_pdf: bool = Field(False, description="Also send the PDF as Encapsulated PDF.")
    # --- FHIR -----------------------------------------------------------------------------
    fhir_base_url: str = Field("", description="FHIR R4 base URL; empty = offline.")
    fhir_token: str = Field("", description="Static bearer token.")
    fhir_token_url: str = Field("", description="OAuth2 token endpoint (client credentials).")
    fhir_client_id: str = Field("")
    fhir_client_secret: str = Field("")
    fhir_scope: str = Field("")
    fhir_timeout_s: float = Field(30.0)
    fhir_patient_identifier_system: str = Field(
        "urn:oid:1.2.3.4.5.cds.patient-id",
        description="Identifier system for DICOM Patient ID when Issuer of Patient ID is absent.",
    )
    fhir_issuer_systems: dict[str, str] = Field(
        default_factory=dict,
        description="DICOM Issuer of Patient ID -> FHIR identifier system.",
    )
    fhir_offline_dir: Path | None = Field(
        None, description="FHIR Bundle / NDJSON folder read instead of a server."
    )
    loinc: LoincMap = Field(default_factory=LoincMap)
    # --- models ---------------------------------------------------------------------------
    models_dir: Path | None = Field(
        None, description="Folder of ONNX weights and cards; empty = the shipped ones."
    )
    disabled_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    extra_model_factories: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Import paths of a site's own model modules (each with load(settings)).",
    )
    tta: bool = Field(False, description="Test-time adaptation of normalization statistics.")
    operating_point: dict[str, str] = Field(
        default_factory=dict,
        description="Decision threshold per model (mammography, slides): a card operating point "
        "('youden', 'sensitivity_0.90', 'specificity_0.90', ...) or a number in [0, 1] chosen by "
        "the site. CDS_OPERATING_POINT__MAMMOGRAPHY=sensitivity_0.90; default: youden.",
    )
    # --- logging --------------------------------------------------------------------------
    log_level: str = Field("INFO")

    @field_validator("allowed_aes", "disabled_models", "extra_model_factories", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        """Accept ``CDS_ALLOWED_AES=A,B`` as well as a JSON/TOML list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit arguments, then environment, then the TOML file in CDS_CONFIG."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("CDS_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # --- derived paths ----------------------------------------------------------------------
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def incoming_dir(self) -> Path:
        """Temporary files of instances being received; same filesystem as the spool."""
        return self.data_dir / "incoming"

    @property
    def work_dir(self) -> Path:
        """Per-job scratch and result arrays (masks, heatmaps)."""
        return self.data_dir / "work"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cds.sqlite3'}"

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` of a job or an output: the one backoff policy."""
        delay: float = min(self.job_backoff_base_s * (2 ** max(attempt - 1, 0)), self.job_backoff_max_s)
        return delay

    @property
    def pacs_configured(self) -> bool:
        return bool(self.pacs_host and self.pacs_ae_title) or bool(self.dicomweb_url)

    def ensure_dirs(self) -> None:
        """Create the data folders (idempotent)."""
        for p in (self.data_dir, self.spool_dir, self.incoming_dir, self.work_dir):
            p.mkdir(parents=True, exist_ok=True)
