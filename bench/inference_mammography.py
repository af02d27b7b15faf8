"""Benchmark: mammography inference per 4-view exam.

Measures, as medians over repeats: DICOM decode, preprocessing, model time with onnxruntime
(the shipped ONNX file) and with PyTorch eager (same architecture; timing does not depend on the
weight values, so a freshly initialised network is used), their ratio, the full
``MammographyModel.analyze`` time (decode + model + masks/contours at source resolution) and
peak RSS. Run: ``python bench/inference_mammography.py [--rows 1024 --columns 832 --repeats 7]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds.contracts.domain import InstanceRecord, PatientRef, StudyInput  # noqa: E402
from cds.contracts.settings import Settings  # noqa: E402
from models.mammography.preprocess import read_mg  # noqa: E402
from models.mammography.runtime import exam_input, load  # noqa: E402
from synthetic.phantoms.mammography import generate_exam  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _paired_times(fa, fb, repeats: int) -> tuple[float, float, float]:
    """Median time of ``fa`` and of ``fb`` and the median of the per-pair ratios b/a.

    The two are run alternately so a burst of load from elsewhere hits both alike; with a model
    that takes ~10 ms, a median over a handful of unpaired runs moved the ratio by 1.9x-3.1x.
    """
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb), statistics.median(b / a for a, b in zip(ta, tb))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--columns", type=int, default=832)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="threads for onnxruntime and torch")
    ap.add_argument("--model-repeats", type=int, default=60,
                    help="paired onnxruntime/torch runs for the model-time ratio")
    args = ap.parse_args()

    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        truth = generate_exam(tmp_path / "exam", seed=1, patient=PatientRef(patient_id="BENCH"),
                              rows=args.rows, columns=args.columns, force_label="invasive")
        paths = truth.paths
        insts = []
        for p in paths:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            insts.append(InstanceRecord(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                                        study_instance_uid=ds.StudyInstanceUID,
                                        series_instance_uid=ds.SeriesInstanceUID, modality="MG", path=p))
        study = StudyInput(study_instance_uid=truth.study_instance_uid, modality="MG",
                           patient=PatientRef(patient_id="BENCH"), instances=insts)

        t_decode = _median_time(lambda: [read_mg(p) for p in paths], args.repeats)
        images = [read_mg(p) for p in paths]
        t_prep = _median_time(lambda: exam_input(images), args.repeats)
        x = exam_input(images)

        model = load(Settings())
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(model.identity.card.parent / "mammography.onnx"), opts,
                                    providers=["CPUExecutionProvider"])
        x = np.ascontiguousarray(x[:, : model.in_channels])
        feed = {"image": x.astype(np.float32), "tta_alpha": np.zeros(1, np.float32)}
        sess.run(None, feed)

        import torch

        from models.mammography.training.net import ExportWrapper
        from models.mammography.training.train import net_for_config

        torch.set_num_threads(args.threads)
        shipped = model.card.extra.get("training", {}).get("config", {})
        net = ExportWrapper(net_for_config(shipped)).eval()
        xt, at = torch.from_numpy(feed["image"]), torch.zeros(1)

        def eager() -> None:
            with torch.no_grad():
                net(xt, at)

        eager()
        t_ort, t_torch, ratio = _paired_times(lambda: sess.run(None, feed), eager, args.model_repeats)
        work = tmp_path / "work"
        model.analyze(study, work)
        t_analyze = _median_time(lambda: model.analyze(study, work), args.repeats)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"mammography inference, 4-view exam {args.rows}x{args.columns}, {args.threads} threads, "
          f"medians of {args.repeats}")
    print(f"  decode (pydicom, 4 images)        {t_decode * 1000:8.1f} ms")
    print(f"  preprocessing (4 images)          {t_prep * 1000:8.1f} ms")
    print(f"  model, onnxruntime (batch 4)      {t_ort * 1000:8.1f} ms   (median of {args.model_repeats}, paired)")
    print(f"  model, torch eager (batch 4)      {t_torch * 1000:8.1f} ms")
    print(f"  ratio torch eager / onnxruntime   {ratio:8.2f} x   (median of per-pair ratios)")
    print(f"  full analyze() per exam           {t_analyze * 1000:8.1f} ms")
    print(f"  peak RSS                          {rss_mb:8.1f} MB")


if __name__ == "__main__":
    main()
