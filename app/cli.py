"""The `cds` command: serve, analyze, status, demo, train.

Settings come from CDS_* environment variables and the TOML file named by CDS_CONFIG (or
--config); command options override both for one run.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.audit_cli import audit_app, audit_status_read
from app.outcome import EXIT_MODEL_UNAVAILABLE, RunOutcome, run_outcome
from app.status_view import print_models, print_status
from cds.contracts.errors import ModelUnavailable
from cds.contracts.settings import Settings
from cds.security.privacy import install_log_privacy

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Breast-cancer decision support: DICOM/FHIR in, SEG/SR/FHIR/PDF out. "
                       "Not for clinical use with the shipped synthetic-trained models.")
train_app = typer.Typer(no_args_is_help=True, help="Train models and regenerate shipped weights.")
app.add_typer(train_app, name="train")
app.add_typer(audit_app, name="audit")
token_app = typer.Typer(no_args_is_help=True, help="Local API tokens for scripts and STOW-RS senders.")
app.add_typer(token_app, name="token")


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
    install_log_privacy()  # httpx/httpcore/pydicom quiet, identifier dumps off, scrub filter on handlers


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]


@contextmanager
def models_required() -> Iterator[None]:
    """Turn a model that cannot load into a clear message and exit code 3, not a traceback."""
    try:
        yield
    except ModelUnavailable as exc:
        _console().print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(EXIT_MODEL_UNAVAILABLE) from exc


def finish(console: Console, outcome: RunOutcome) -> None:
    """Say what did not get done and exit with its code (0 when everything did)."""
    for line in outcome.lines():
        console.print(f"[red]{line}[/red]")
    if outcome.exit_code:
        console.print(f"[bold red]incomplete run[/bold red]: exit code {outcome.exit_code}")
        raise typer.Exit(outcome.exit_code)


def _run_until_signal(config: Path | None, parts: tuple[str, ...] | None, lanes: tuple[str, ...] = ()) -> None:
    """Start the chosen parts of the service and run until SIGTERM/SIGINT."""
    from app.service import Service

    # SIGTERM/SIGINT are caught by a handler that only appends to a list (no lock, so it cannot
    # deadlock with the code it interrupts), installed before anything else: native threads exist
    # from the first imports (numpy's BLAS pool), so blocking the signals per thread cannot cover
    # them all, and a signal the kernel gives such a thread would otherwise kill the process with
    # the default action. The main thread looks at the list while it waits; a signal during
    # start-up stops the service as soon as it has started.
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda sig, frame: received.append(sig))
    settings = load_settings(config)
    setup_logging(settings.log_level)
    with models_required():
        service = Service(settings, http=True, parts=parts, lanes=lanes)
    if parts == ("api",) and service.http is None:
        raise typer.BadParameter("the HTTP surface is switched off (CDS_HTTP_ENABLED=false): nothing to serve")
    service.start()
    log = logging.getLogger("cds")
    for name, why in service.registry.unavailable.items():
        log.warning("model %s not loaded: %s", name, why)  # disabled ones
    log.info("running %s; data in %s", ", ".join(sorted(service.parts)) + (f" (lanes {', '.join(lanes)})" if lanes else ""),
             settings.data_dir)
    if service.listener is not None:
        log.info("DICOM listener %s on port %s", settings.ae_title, service.listener.port)
    if service.http is not None:
        log.info("HTTP on %s (port %d)", service.http.url, service.http.port)
    while not received:
        time.sleep(0.2)
    service.stop()


@app.command()
def serve(config: ConfigOpt = None) -> None:
    """Run everything in one process (listener, scheduler, workers, dispatcher, HTTP) until SIGTERM."""
    _run_until_signal(config, None)


@app.command()
def listen(config: ConfigOpt = None) -> None:
    """Run only the DICOM listener (stateless; several can sit behind a TCP load balancer)."""
    _run_until_signal(config, ("listen",))


@app.command()
def work(
    lane: Annotated[list[str] | None, typer.Option(
        "--lane", help="Lane(s) to claim: study (mammography, ultrasound), slide, case. Repeatable; "
        "default: all, as CDS_WORKERS/CDS_CASE_WORKERS say.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run only model workers: claim jobs from the store, run the models, queue the outputs."""
    from cds.scheduling.workers import LANES

    unknown = [name for name in lane or () if name not in LANES]
    if unknown:
        raise typer.BadParameter(f"unknown lane(s) {unknown}; expected some of {sorted(LANES)}", param_hint="--lane")
    _run_until_signal(config, ("work",), tuple(lane or ()))


@app.command()
def dispatch(config: ConfigOpt = None) -> None:
    """Run only the dispatcher (deliver outputs) and the periodic checks (stable age, case refresh, retention)."""
    _run_until_signal(config, ("dispatch", "schedule"))


@app.command()
def api(config: ConfigOpt = None) -> None:
    """Run only the HTTP surface: API, pages, /metrics, /health, /ready, STOW-RS."""
    _run_until_signal(config, ("api",))


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.")] = Path("./cds-output"),
    fhir: Annotated[Path | None, typer.Option("--fhir", help="FHIR Bundle/NDJSON folder for clinical context.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the pipeline on files or folders without any network; results go to --out.

    Exit codes (app/outcome.py): 0 all done; 3 an enabled model cannot be loaded; 4 an input was
    refused; 5 a job or output failed; 6 a study had no model or a case lacked inputs.
    """
    from app.analyze import run_analyze

    settings = load_settings(config)
    setup_logging("WARNING")
    started = time.time()
    with models_required():
        service = run_analyze(settings, paths, out, fhir_dir=fhir)
    console = _console()
    print_status(console, service.store, limit=50)
    console.print(f"[bold]Outputs:[/bold] {out.resolve()}")
    outcome = run_outcome(service.store, since=started)
    service.stop()
    finish(console, outcome)


@app.command()
def status(config: ConfigOpt = None,
           limit: Annotated[int, typer.Option(help="Rows per table.")] = 20) -> None:
    """Studies, cases, jobs, outputs, failures, and every model with its version or why it is
    not available on this machine with these settings."""
    from app.service import SHIPPED_MODELS
    from cds.pipeline.registry import build_registry
    from cds.store import Store

    settings = load_settings(config)
    console = _console()
    print_models(console, build_registry(settings, SHIPPED_MODELS))
    db = Path(settings.store_url.removeprefix("sqlite:///"))
    if not db.exists():
        typer.echo(f"no store at {db}: nothing received yet (CDS_DATA_DIR={settings.data_dir})")
        raise typer.Exit(1)
    store = Store(settings.store_url)
    print_status(console, store, limit=limit)
    audit_status_read(settings, store)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data and results.")] = Path("./demo-output"),
    config: ConfigOpt = None,
) -> None:
    """Generate a synthetic patient, send it over C-STORE to a local service, show the results.

    Exits non-zero (codes as for `cds analyze`) when any model, study, case or output failed.
    """
    from app.demo import run_demo

    settings = load_settings(config)
    settings = settings.model_copy(update={
        "data_dir": out / "cds-data" if "CDS_DATA_DIR" not in os.environ else settings.data_dir,
        "output_dir": out / "results" if "CDS_OUTPUT_DIR" not in os.environ else settings.output_dir,
    })
    setup_logging("WARNING")
    console = _console()
    console.print("[bold]Synthetic patient[/bold] (phantoms: not patient data) → C-STORE → jobs → outputs")
    with models_required():
        run, service = run_demo(settings, out)
    console.print(f"sent {run.sent}/{len(run.files)} instances in one association; "
                  f"all work settled in {run.seconds:.1f} s")
    for f in run.failed_sends:
        console.print(f"[red]send failed[/red] {f}")
    from cds.store import Store

    store = Store(settings.store_url)
    print_status(console, store, limit=30)
    console.print(f"[bold]Outputs:[/bold] {settings.output_dir.resolve()}")
    console.print(f"[bold]Store:[/bold] CDS_DATA_DIR={settings.data_dir} cds status")
    outcome = run_outcome(store)
    if run.failed_sends:
        outcome.refused += run.failed_sends
    store.close()
    finish(console, outcome)


@token_app.command("create")
def token_create(
    role: Annotated[list[str], typer.Option("--role", help="viewer, clinician, operator, sender or admin (repeatable).")],
    name: Annotated[str, typer.Option("--name", help="Who uses the token (shown in audit records).")],
    config: ConfigOpt = None,
) -> None:
    """Print a new random API token once; only its SHA-256 is appended to the tokens file (0600)."""
    from cds.contracts.review import Role
    from listeners.http.tokens import create_token, tokens_path

    unknown = [r for r in role if r not in Role.__members__]
    if unknown:
        raise typer.BadParameter(f"unknown role(s) {', '.join(unknown)}; expected: {', '.join(Role)}")
    settings = load_settings(config)
    path = tokens_path(settings)
    try:
        token = create_token(path, [Role(r) for r in role], name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(token)
    typer.echo(f"(shown once; its hash was added to {path})", err=True)


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
    for kind, module in (("mammography", "models.mammography.training.train"), ("slides", "models.slides.training.train"),
                         ("crossmodal", "models.crossmodal.training.train")):
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
    """Train the mammography model on a site's own data, or on CBIS-DDSM as distributed (its
    DICOM tree, and one of its description CSVs or their folder as LABELS; see README).

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
