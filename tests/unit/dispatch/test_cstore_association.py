"""The C-STORE target carries a run of outputs in one association and releases it when idle."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from cds.contracts.handoffs import OutboxItem, OutboxMeta
from cds.contracts.settings import Settings
from cds.dispatch.targets.cstore import OUTPUT_SOP_CLASSES, CStoreTarget

SEG, SR = OUTPUT_SOP_CLASSES[0], OUTPUT_SOP_CLASSES[1]


def _object(path: Path, sop_class: str) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_one_association_for_a_run_of_outputs(tmp_path: Path) -> None:
    accepted: list[int] = []
    stored: list[str] = []
    scp = AE(ae_title="PACS")
    for uid in OUTPUT_SOP_CLASSES:
        scp.add_supported_context(uid, ExplicitVRLittleEndian)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_ACCEPTED, lambda e: accepted.append(1)),
        (evt.EVT_C_STORE, lambda e: stored.append(str(e.request.AffectedSOPInstanceUID)) or 0x0000)])
    try:
        port = server.server_address[1]
        target = CStoreTarget(Settings(data_dir=tmp_path, pacs_host="127.0.0.1", pacs_port=port,
                                       pacs_ae_title="PACS"))
        items = [OutboxItem(id=i, kind="dicom", destination="pacs", key=f"k{i}", state="delivering",
                            payload_path=_object(tmp_path / f"{i}.dcm", cls), meta=OutboxMeta(),
                            attempts=1, next_attempt_at=0.0)
                 for i, cls in enumerate((SEG, SEG, SR))]
        for item in items:
            assert "success" in target.deliver(item)
        assert len(stored) == 3 and len(accepted) == 1, f"{len(accepted)} associations for 3 objects"
        target.idle()
        assert target.deliver(items[0])  # after idle: a new association
        assert len(accepted) == 2
        target.close()
    finally:
        server.shutdown()
