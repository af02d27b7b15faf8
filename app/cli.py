"""The `cds` command: serve, analyze, status, demo, train.

Settings come from CDS_* environment variables and the TOML file named by CDS_CONFIG (or
--config); command options override both for one run.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cds.contracts.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Breast-cancer decision support: DICOM/FHIR in, SEG/SR/FHIR/PDF out. "
                       "Not for clinical use with the shipped synthetic-trained models.")
train_app = typer.Typer(no_args_is_help=True, help="Train models and regenerate shipped weights.")
app.add_typer(train_app, name="train")


def _console() -> Console:
    return Console()


def load_settings(config: Path | None) -> Settings:
    if config is not None:
        os.environ["CDS_CONFIG"] = str(config)
    return Settings()


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs dataset contents (patient names) at DEBUG: keep it at INFO or above.
    logging.getLogger("pynetdicom").setLevel(max(logging.INFO, logging.getLogger().level))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]


@app.command()
def serve(config: ConfigOpt = None) -> None:
    """Run the DICOM listener, scheduler, workers and dispatcher until SIGTERM/SIGINT."""
    from app.service import Service

    settings = load_settings(config)
    setup_logging(settings.log_level)
    service = Service(settings)
    # Wait for SIGTERM/SIGINT with sigwait, not a handler: a handler that sets an Event can
    # deadlock if the signal lands while the main thread holds that Event's lock. Blocking the
    # signals before any thread starts makes every thread inherit the mask.
    wanted = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    service.start()
    for name, why in service.registry.unavailable.items():
        logging.getLogger("cds").warning("model %s not loaded: %s", name, why)
    logging.getLogger("cds").info("serving as %s on port %s; data in %s", settings.ae_title,
                                  service.listener.port, settings.data_dir)
    signal.sigwait(wanted)
    service.stop()


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.")] = Path("./cds-output"),
    fhir: Annotated[Path | None, typer.Option("--fhir", help="FHIR Bundle/NDJSON folder for clinical context.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the pipeline on files or folders without any network; results go to --out."""
    from app.analyze import run_analyze

    settings = load_settings(config)
    setup_logging("WARNING")
    service = run_analyze(settings, paths, out, fhir_dir=fhir)
    console = _console()
    print_status(console, service.store, limit=50)
    console.print(f"[bold]Outputs:[/bold] {out.resolve()}")
    service.stop()


@app.command()
def status(config: ConfigOpt = None,
           limit: Annotated[int, typer.Option(help="Rows per table.")] = 20) -> None:
    """Studies, cases, jobs, outputs and failures as tables."""
    from cds.store import Store

    settings = load_settings(config)
    db = Path(settings.store_url.removeprefix("sqlite:///"))
    if not db.exists():
        typer.echo(f"no store at {db}: nothing received yet (CDS_DATA_DIR={settings.data_dir})")
        raise typer.Exit(1)
    print_status(_console(), Store(settings.store_url), limit=limit)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data and results.")] = Path("./demo-output"),
    config: ConfigOpt = None,
) -> None:
    """Generate a synthetic patient, send it over C-STORE to a local service, show the results."""
    from app.demo import run_demo

    settings = load_settings(config)
    settings = settings.model_copy(update={
        "data_dir": out / "cds-data" if "CDS_DATA_DIR" not in os.environ else settings.data_dir,
        "output_dir": out / "results" if "CDS_OUTPUT_DIR" not in os.environ else settings.output_dir,
    })
    setup_logging("WARNING")
    console = _console()
    console.print("[bold]Synthetic patient[/bold] (phantoms: not patient data) → C-STORE → jobs → outputs")
    run, service = run_demo(settings, out)
    console.print(f"sent {run.sent}/{len(run.files)} instances in one association; "
                  f"all work settled in {run.seconds:.1f} s")
    for f in run.failed_sends:
        console.print(f"[red]send failed[/red] {f}")
    from cds.store import Store

    print_status(console, Store(settings.store_url), limit=30)
    console.print(f"[bold]Outputs:[/bold] {settings.output_dir.resolve()}")
    console.print(f"[bold]Store:[/bold] CDS_DATA_DIR={settings.data_dir} cds status")


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else ""


def print_status(console: Console, store, limit: int = 20) -> None:
    """Render the store's state as tables (shared by status, analyze and demo)."""
    counts = store.counts()
    console.print("[bold]Counts[/bold] " + "; ".join(
        f"{k}: " + ", ".join(f"{s}={n}" for s, n in v.items()) for k, v in counts.items() if v))

    t = Table(title="Studies")
    for c in ("study UID", "patient key", "state", "gen", "instances", "last received"):
        t.add_column(c)
    for s in store.recent_studies(limit):
        t.add_row(s.study_uid, s.patient_key or "", s.state, str(s.generation),
                  str(s.n_instances), _ts(s.last_received))
    console.print(t)

    t = Table(title="Cases")
    for c in ("patient key", "studies (modalities)", "evaluated", "inputs fingerprint", "last job"):
        t.add_column(c)
    for c in store.case_overview(limit):
        t.add_row(c.patient_key, f"{c.n_studies} ({c.modalities or ''})", _ts(c.evaluated_at),
                  c.fingerprint or "", str(c.last_job_id or ""))
    console.print(t)

    t = Table(title="Jobs")
    for c in ("id", "kind", "state", "attempts", "key", "note / last error"):
        t.add_column(c, overflow="fold")
    for j in store.jobs(limit=limit):
        t.add_row(str(j.id), j.kind, j.state, f"{j.attempts}/{j.max_attempts}", j.key, j.last_error or "")
    console.print(t)

    t = Table(title="Results")
    for c in ("job", "kind", "study / modality", "model", "status", "summary"):
        t.add_column(c, overflow="fold")
    for r in store.results(limit=limit):
        t.add_row(str(r.job_id), r.kind, f"{r.study_uid or ''} {r.modality or ''}".strip(),
                  f"{r.model or ''} {r.model_version or ''}".strip(), r.status, r.summary or "")
    console.print(t)

    t = Table(title="Outbox")
    for c in ("id", "kind", "destination", "state", "attempts", "payload", "last error"):
        t.add_column(c, overflow="fold")
    for o in store.outbox_items(limit=limit):
        t.add_row(str(o.id), o.kind, o.destination, o.state, str(o.attempts), o.payload_path.name,
                  o.last_error or "")
    console.print(t)

    t = Table(title="Failures (refused instances, dead jobs, dead outputs)")
    for c in ("when", "what", "id", "reason"):
        t.add_column(c, overflow="fold")
    for r in store.recent_rejections(limit):
        if r.sop_uid:
            what = f"instance refused 0x{r.status:04X}"
        elif r.status == 0x0122:
            what = "SOP classes not offered (negotiation; no instance refused)"
        else:
            what = "association rejected"
        t.add_row(_ts(r.at), what, r.sop_uid or r.calling_ae, r.reason)
    for j in store.jobs("dead", limit=limit):
        t.add_row(_ts(j.updated_at), "job dead", str(j.id), j.last_error or "")
    for o in store.outbox_items("dead", limit=limit):
        t.add_row("", "output dead", str(o.id), o.last_error or "")
    console.print(t)


# -- training ---------------------------------------------------------------------------------
def _train_target(kind: str) -> Path:
    return Path(__file__).resolve().parent.parent / "models" / kind / "weights"


@train_app.command("synthetic")
def train_synthetic(
    out: Annotated[Path | None, typer.Option(help="Folder for weights (default: the shipped ones).")] = None,
    seed: int = 0,
) -> None:
    """Regenerate every shipped model from the project's phantoms (and GBSG2) on CPU."""
    started = time.monotonic()
    for kind, module in (("mammography", "models.mammography.training.train"), ("slides", "models.slides.training.train")):
        mod = _import_trainer(module)
        card = mod.train_synthetic((out / kind) if out else _train_target(kind), seed=seed)
        typer.echo(f"{kind}: {card.name} {card.version} written")
    us = _import_trainer("models.ultrasound.training.train")
    card = us.train_encoder((out / "ultrasound") if out else _train_target("ultrasound"), seed=seed)
    typer.echo(f"ultrasound: {card.name} {card.version} written")
    rec = _import_trainer("models.recurrence.training.train")
    for card in rec.train_all((out / "recurrence") if out else _train_target("recurrence"), seed=seed):
        typer.echo(f"recurrence: {card.name} {card.version} written")
    typer.echo(f"done in {time.monotonic() - started:.0f} s")


@train_app.command("text")
def train_text(config: ConfigOpt = None) -> None:
    """Export the all-MiniLM-L6-v2 report-text encoder to ONNX (90 MB: made here, never shipped).

    Without it the recurrence model treats report-text embeddings as a missing input.
    """
    from models.text.embedding import text_model_dir

    settings = load_settings(config)
    path = _import_trainer("models.text.training.export").export_minilm_onnx(
        text_model_dir(settings.models_dir, settings.data_dir))
    typer.echo(f"sentence encoder written to {path}")


DicomDirArg = Annotated[Path, typer.Argument(help="Folder of DICOM instances.")]
LabelsArg = Annotated[Path, typer.Argument(help="Labels CSV (see the model card for its columns).")]
OutOpt = Annotated[Path, typer.Option(help="Folder for weights and the resumable checkpoint.")]


def _train_own(module: str, dicom_dir: Path, labels: Path, out: Path, resume: bool) -> None:
    card = _import_trainer(module).train_from_folder(dicom_dir, labels, out, resume=resume)
    typer.echo(f"{card.name} {card.version} written to {out}")


@train_app.command("mammography")
def train_mammography(dicom_dir: DicomDirArg, labels: LabelsArg, out: OutOpt, resume: bool = True) -> None:
    """Train the mammography model on a site's own data (e.g. CBIS-DDSM converted to DICOM).

    labels CSV: file name or sop_instance_uid, label (normal/benign/in_situ/invasive)[, grade, mask].
    Each image is paired with the CSV's image of the same study and view from the other breast
    (the network's second input channel); an image without one is paired with itself.
    """
    _train_own("models.mammography.training.train", dicom_dir, labels, out, resume)


@train_app.command("slides")
def train_slides(dicom_dir: DicomDirArg, labels: LabelsArg, out: OutOpt, resume: bool = True) -> None:
    """Train the slide model on a site's own data (e.g. CAMELYON converted to DICOM).

    labels CSV: series or study UID, label (0/1).
    """
    _train_own("models.slides.training.train", dicom_dir, labels, out, resume)


def _import_trainer(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise typer.BadParameter(
            f"{module} cannot be imported ({exc}); training needs the 'train' extra: "
            "pip install -e '.[train]'") from exc


def main() -> None:
    app()


if __name__ == "__main__":
    main()
