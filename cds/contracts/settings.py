"""The one settings object.

Sites script against these names (``CDS_*`` environment variables, or a TOML file named by
``CDS_CONFIG``), so renaming a field is a breaking change. Every field has a safe default so that
``cds serve`` runs with no configuration at all: local spool, SQLite store, shipped models, and
results written to the output folder when no PACS or FHIR server is configured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cds.contracts.http_settings import HttpSettings
from cds.contracts.security_settings import SecuritySettings


class LoincMap(BaseModel):
    """FHIR Observation codes (LOINC by default) for each clinical variable the models read.

    Sites differ in which codes they use, so the table lives in settings. Each value is a list of
    accepted ``system|code`` tokens (an Observation's code, or a component's code). The defaults
    follow HL7 mCODE STU3 (4.0.0): the tumour-marker codes are those of
    ``ValueSet-mcode-tumor-marker-test-vs`` for ER, PR and HER2 (presence by IHC, percent of
    positive nuclei "Cells.<marker>/100 cells", ISH). Ki-67 is not in that (extensible) value
    set: 85330-9 "Cells.Ki-67 nuclear Ag/100 cells in Breast cancer specimen" first. Tumour size is mCODE's 21889-1 with its
    33728-7 "maximum dimension" component (or 33728-7 alone); regional nodes 21893-3 / 21894-1
    (CAP 92833-3 "examined" as a component); Nottingham grade 44648-4. The older codes stay as
    alternatives (ER 16112-5 / PR 16113-3 "[Interpretation]", Ki-67 29593-1, biochemical
    receptor assays 14130-9 / 31207-4 in fmol).
    """

    er: list[str] = Field(default_factory=lambda: [
        "http://loinc.org|85337-4", "http://loinc.org|85329-1", "http://loinc.org|40556-3",
        "http://loinc.org|14228-1", "http://loinc.org|16112-5", "http://loinc.org|14130-9"])
    pr: list[str] = Field(default_factory=lambda: [
        "http://loinc.org|85339-0", "http://loinc.org|85325-9", "http://loinc.org|40557-1",
        "http://loinc.org|14230-7", "http://loinc.org|16113-3", "http://loinc.org|31207-4"])
    her2: list[str] = Field(default_factory=lambda: [
        "http://loinc.org|48676-1", "http://loinc.org|85319-2", "http://loinc.org|72383-3"])
    her2_ish: list[str] = Field(default_factory=lambda: [
        "http://loinc.org|85318-4", "http://loinc.org|31150-6", "http://loinc.org|96893-3"])
    ki67: list[str] = Field(default_factory=lambda: ["http://loinc.org|85330-9", "http://loinc.org|29593-1"])
    tumour_size_mm: list[str] = Field(default_factory=lambda: ["http://loinc.org|21889-1",
                                                               "http://loinc.org|33728-7"])
    positive_nodes: list[str] = Field(default_factory=lambda: ["http://loinc.org|21893-3"])
    nodes_examined: list[str] = Field(default_factory=lambda: ["http://loinc.org|21894-1",
                                                               "http://loinc.org|92833-3"])
    grade: list[str] = Field(default_factory=lambda: ["http://loinc.org|44648-4"])
    # Not a verified LOINC concept for menopausal status: the SNOMED CT observable (used by the
    # HL7 ICHOM breast-cancer IG) comes first; the LOINC code is kept for sites that used it.
    menopausal_status: list[str] = Field(
        default_factory=lambda: ["http://snomed.info/sct|161712005", "http://loinc.org|42802-5"]
    )
    # mCODE TNM stage group (pathologic first, then clinical); LOINC 21908-9 / 21902-2 as used before.
    stage_group: list[str] = Field(default_factory=lambda: [
        "http://snomed.info/sct|399588009", "http://snomed.info/sct|399537006",
        "http://loinc.org|21908-9", "http://loinc.org|21902-2"])


class Settings(SecuritySettings, HttpSettings):
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
    listen_reuse_port: bool = Field(
        False, description="Bind the DICOM port with SO_REUSEPORT, so several `cds listen` "
        "processes on one host share it and the kernel spreads associations over them (each "
        "process its own interpreter lock: parallel associations use every core).")
    allowed_aes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate; empty allows all.",
    )
    max_pdu: int = Field(
        262144, description="Maximum PDU we accept; large PDUs cut per-PDU overhead (0 = unlimited, which dcmtk mishandles)."
    )
    # --- DICOM network limits (issue 14): every wait and every buffer is bounded -------------
    dicom_acse_timeout_s: float = Field(
        30.0, gt=0, description="A connection must complete its A-ASSOCIATE request within this "
        "many seconds of connecting, or it is closed.")
    dicom_dimse_timeout_s: float = Field(
        120.0, gt=0, description="Longest wait for the next part of a DIMSE message.")
    dicom_network_timeout_s: float = Field(
        120.0, gt=0, description="An association that sends nothing for this long is aborted.")
    dicom_read_timeout_s: float = Field(
        30.0, gt=0, description="Once a PDU has begun, the longest wait for its next bytes; a "
        "silent peer is cut off after this.")
    dicom_pdu_deadline_s: float = Field(
        60.0, gt=0, description="A whole PDU must arrive within this many seconds of its first "
        "byte (cuts off peers that trickle a byte at a time).")
    dicom_max_associations: int = Field(
        32, ge=1, description="Concurrent associations over all peers (A-ASSOCIATE-RJ beyond).")
    dicom_max_associations_per_peer: int = Field(
        8, ge=1, description="Concurrent connections from one peer address; further ones are "
        "rejected (local limit exceeded), so one host cannot take every slot.")
    dicom_max_associate_rq_bytes: int = Field(
        131072, ge=1024, description="Largest A-ASSOCIATE-RQ PDU accepted; checked on the PDU "
        "header before anything is buffered (dcmtk proposing every storage class needs ~20 KiB).")
    dicom_max_pdata_bytes: int = Field(
        0, ge=0, description="Largest P-DATA-TF PDU accepted, checked on its header before "
        "buffering; 0 = max_pdu (the limit we announce), or 16 MiB when max_pdu is 0.")
    dicom_require_called_ae: bool = Field(
        True, description="Reject associations whose called AE title is not ae_title "
        "(A-ASSOCIATE-RJ 'called AE title not recognized').")
    dicom_rejection_record_interval_s: float = Field(
        60.0, ge=0, description="A rejected association is recorded at most once per peer "
        "address and reason in this many seconds (later ones are counted in the log only).")
    # --- store, spool, workers ------------------------------------------------------------
    data_dir: Path = Field(Path("./cds-data"), description="Spool, store and job work folders.")
    database_url: str = Field(
        "", description="Store URL; empty means SQLite at <data_dir>/cds.sqlite3. "
        "postgresql://USER@HOST:PORT/DB for several processes or hosts on one store (the password "
        "from PGPASSWORD or ~/.pgpass, never in this URL)."
    )
    stable_age_s: float = Field(
        60.0, description="A study is stable when no instance arrived for this many seconds."
    )
    complete_on_release: bool = Field(
        True, description="A study is complete as soon as the association that sent it is released "
        "normally (a PACS routing a stable study sends it whole in one association, as Orthanc's "
        "routing does). A mammography study must also hold the four standard views (RCC, LCC, "
        "RMLO, LMLO, from their attributes). The stable age stays the fallback for aborted or partial "
        "arrivals, and a late instance re-runs the study. Switch off for senders that split a "
        "study over associations.")
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
    retry_budget_h: float = Field(
        72.0, gt=0,
        description="A job or an output waiting for a peer that does not answer (FHIR server or "
        "PACS outage) is retried with the capped backoff for this many hours from its creation, "
        "whatever job_max_attempts / outbox_max_attempts say (those still bound unexpected "
        "errors); only then is it dead-lettered. 72 h outlasts a weekend's downtime.",
    )
    peer_probe_interval_s: float = Field(
        5.0, gt=0,
        description="While jobs or outputs wait for an unreachable peer, the dispatcher asks that "
        "peer this often whether it answers again (FHIR: GET /metadata); when it does, every row "
        "waiting for it is made due at once instead of at the end of its backoff.",
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
    dicomweb_password: SecretStr = Field(SecretStr(""), description="Never printed; or dicomweb_password_file.")
    encapsulated_pdf: bool = Field(False, description="Also send the PDF as Encapsulated PDF.")
    # --- FHIR -----------------------------------------------------------------------------
    fhir_base_url: str = Field("", description="FHIR R4 base URL; empty = offline.")
    fhir_token: SecretStr = Field(SecretStr(""), description="Static bearer token (or fhir_token_file).")
    fhir_token_url: str = Field("", description="OAuth2 token endpoint (client credentials).")
    fhir_client_id: str = Field("")
    fhir_client_secret: SecretStr = Field(SecretStr(""), description="OAuth2 client secret (or fhir_client_secret_file).")
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
    similar_pathology_k: int = Field(
        3, ge=0, le=10,
        description="Reference pathology patches shown beside each mammography lesion (the "
        "cross-modal alignment model, models/crossmodal); 0 shows none. Disable the model itself "
        "with CDS_DISABLED_MODELS=crossmodal.",
    )
    operating_point: dict[str, str] = Field(
        default_factory=dict,
        description="Decision threshold per model (mammography, slides): a card operating point "
        "('youden', 'sensitivity_0.90', 'specificity_0.90', ...) or a number in [0, 1] chosen by "
        "the site. CDS_OPERATING_POINT__MAMMOGRAPHY=sensitivity_0.90; default: youden.",
    )
    recurrence_primary: Literal["multimodal", "clinical"] = Field(
        "multimodal",
        description="Which recurrence model answers the case when both can: 'multimodal' (MRRP "
        "fusion of clinical data, slide and ultrasound features; trained on a semi-synthetic "
        "cohort) or 'clinical' (clinical variables only; trained and validated on the real GBSG2 "
        "cohort). The other model's answer is shown beside it in the report with why they can "
        "differ; only the primary answer is written as the case's RiskAssessment. With no imaging "
        "input only the clinical model answers.",
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

    def within_retry_budget(self, created_at: float | None, now: float) -> bool:
        """Whether a job or output created at ``created_at`` (epoch s) may still wait for a peer."""
        return created_at is None or now < created_at + self.retry_budget_h * 3600.0

    @property
    def pacs_configured(self) -> bool:
        return bool(self.pacs_host and self.pacs_ae_title) or bool(self.dicomweb_url)

    def ensure_dirs(self) -> None:
        """Create the data folders (idempotent)."""
        for p in (self.data_dir, self.spool_dir, self.incoming_dir, self.work_dir):
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(p, 0o700)  # patient data: owner only, whatever the umask or an older install
