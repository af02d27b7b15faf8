"""`cds audit`: check the hash chain of the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cds.audit.chain import verify
from cds.audit.trail import audit_path
from cds.contracts.settings import Settings

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail (IHE BALP AuditEvents, hash-chained).")


@audit_app.command("verify")
def verify_cmd(
    path: Annotated[Path | None, typer.Option("--path", help="Audit log (default: <data_dir>/audit/audit.jsonl).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
) -> None:
    """Exit 0 when every record's hash and link hold; 1 naming the first bad record otherwise."""
    if path is None:
        if config is not None:
            import os

            os.environ["CDS_CONFIG"] = str(config)
        path = audit_path(Settings())
    if not path.exists():
        typer.echo(f"no audit log at {path}")
        raise typer.Exit(1)
    verdict = verify(path)
    if not verdict.ok:
        typer.echo(f"audit log {path}: BROKEN at line {verdict.bad_line}: {verdict.reason} "
                   f"({verdict.records} record(s) before it verified)")
        raise typer.Exit(1)
    typer.echo(f"audit log {path}: {verdict.records} record(s), chain intact")
    _backlog(Settings())


def _backlog(settings: Settings) -> None:
    """Records committed in the store and not yet in the chain are part of the trail the file
    cannot show; say how many (they do not change the verdict on the chain)."""
    from cds.audit.drain import backlog_note
    from cds.store import Store

    url = settings.store_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        typer.echo("no store here: pending audit records not checked")  # never create one to look
        return
    try:
        store = Store(url)
    except Exception as exc:  # the chain's verdict stands; the store's state is unknown
        typer.echo(f"store {type(exc).__name__}: pending audit records not checked")
        return
    try:
        typer.echo(backlog_note(store))
    finally:
        store.close()


def audit_status_read(settings: Settings, store: object, limit: int = 200) -> None:
    """BALP read record: ``cds status`` showed these patients' studies and cases to a person."""
    import getpass

    from cds.audit.trail import audit_read

    keys = {s.patient_key for s in store.recent_studies(limit) if s.patient_key}  # type: ignore[attr-defined]
    keys |= {c.patient_key for c in store.case_overview(limit)}  # type: ignore[attr-defined]
    if keys:
        audit_read(settings, user=getpass.getuser(), what="cds status", patient_keys=sorted(keys))
