"""Cross-modal runtime: similar pathology patches for a mammography lesion (onnxruntime, no torch).

``load(settings)`` finds ``mammo_encoder.onnx``, ``reference_bank.npz`` and ``card.json``
(``<settings.models_dir>/crossmodal`` when set, else the shipped ``weights`` folder), checks them
against the card (:func:`models.weights.load_weights`) and against each other, and returns a
:class:`CrossModalEvidence`; it returns None when a site switched the model off
(``CDS_DISABLED_MODELS=crossmodal``) or asked for no examples (``similar_pathology_k = 0``).
Enabled but absent or malformed weights raise :class:`ModelUnavailable` naming the file: a site
that asked for the explanation must learn it is missing, not find it silently dropped.

:meth:`CrossModalEvidence.similar` cuts the lesion's window of the mammography network input
with :mod:`models.crossmodal.crop` (the same geometry training used), embeds it with the
mammography branch of the alignment model and returns the bank's top-k patches by cosine
similarity. The bank's patches come from synthetic training slides; they illustrate what similar
findings looked like there and are never this patient's pathology (every writer says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cds.contracts.domain import (
    ArrayFile,
    Lesion,
    MammoImageFinding,
    ModelIdentity,
    SimilarExample,
    SimilarPathology,
)
from cds.contracts.errors import InvalidWeights, ModelUnavailable
from cds.contracts.settings import Settings
from models.crossmodal.crop import CROP, lesion_centre, lesion_crop
from models.sessions import cpu_session
from models.weights import load_weights, weights_dir

MODEL = "crossmodal"
ONNX_NAME = "mammo_encoder.onnx"
BANK_NAME = "reference_bank.npz"
CARD_NAME = "card.json"
BANK_KEYS = ("embeddings", "labels", "class_names", "patches", "ids", "description")
NORM_TOLERANCE = 1e-3  # |1 - ||e||| allowed for a bank embedding (float32 round-off is ~1e-7)
MAX_PATCH_SIDE = 64


def disabled(settings: Settings) -> bool:
    """True when the site switched the model off or wants no examples shown."""
    names = set(settings.disabled_models)
    return MODEL in names or f"models.{MODEL}.runtime" in names or settings.similar_pathology_k == 0


@dataclass(frozen=True)
class ReferenceBank:
    """The shipped bank: L2-normalised pathology embeddings with their class, patch and id."""

    embeddings: np.ndarray  # (M, D) float32
    labels: np.ndarray  # (M,) int64, indices into class_names
    class_names: list[str]
    patches: np.ndarray  # (M, h, w, 3) uint8
    ids: list[str]
    description: str

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def _bad(path: Path, what: str) -> InvalidWeights:
    return InvalidWeights(f"{MODEL} reference bank {path} is malformed: {what}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in BANK_KEYS if k not in z.files]
            if missing:
                raise _bad(path, f"lacks {', '.join(missing)} (expected {', '.join(BANK_KEYS)})")
            return {k: z[k] for k in BANK_KEYS}
    except InvalidWeights:
        raise
    except Exception as exc:  # not a zip, pickled object arrays, truncated file ...
        raise _bad(path, f"not a readable numpy .npz without pickled objects ({type(exc).__name__}: {exc})") from exc


def load_bank(path: Path) -> ReferenceBank:
    """Read and validate ``reference_bank.npz``; :class:`InvalidWeights` names what is wrong."""
    z = _read_npz(path)
    emb, labels, names, patches, ids = (z[k] for k in BANK_KEYS[:5])
    if emb.ndim != 2 or emb.dtype != np.float32 or emb.shape[0] < 1 or emb.shape[1] < 1:
        raise _bad(path, f"embeddings must be float32 (M, D) with M, D >= 1, got {emb.dtype} {emb.shape}")
    m = emb.shape[0]
    if not np.isfinite(emb).all():
        raise _bad(path, "embeddings contain NaN or infinity")
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    worst = float(np.max(np.abs(norms - 1.0)))
    if worst > NORM_TOLERANCE:
        raise _bad(path, f"embeddings are not L2-normalised (largest |norm - 1| = {worst:.3g})")
    if names.ndim != 1 or names.dtype.kind != "U" or len(names) < 1:
        raise _bad(path, f"class_names must be a 1-D string array, got {names.dtype} {names.shape}")
    if labels.shape != (m,) or labels.dtype.kind not in "iu":
        raise _bad(path, f"labels must be integers of shape ({m},), got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(names):
        raise _bad(path, f"labels must index class_names (0..{len(names) - 1}), got {labels.min()}..{labels.max()}")
    if (patches.ndim != 4 or patches.shape[0] != m or patches.shape[3] != 3 or patches.dtype != np.uint8
            or max(patches.shape[1:3]) > MAX_PATCH_SIDE):
        raise _bad(path, f"patches must be uint8 ({m}, h, w, 3) with h, w <= {MAX_PATCH_SIDE}, "
                         f"got {patches.dtype} {patches.shape}")
    if ids.shape != (m,) or ids.dtype.kind != "U" or len(set(ids.tolist())) != m:
        raise _bad(path, f"ids must be {m} distinct strings, got {ids.dtype} {ids.shape}")
    desc = z["description"]
    if desc.ndim != 0 or desc.dtype.kind != "U":
        raise _bad(path, f"description must be a string scalar, got {desc.dtype} {desc.shape}")
    return ReferenceBank(embeddings=np.ascontiguousarray(emb), labels=labels.astype(np.int64),
                         class_names=[str(n) for n in names], patches=patches,
                         ids=[str(i) for i in ids], description=str(desc))


def _session(path: Path):  # noqa: ANN202 (onnxruntime.InferenceSession, imported lazily)
    try:
        return cpu_session(path)
    except ImportError as exc:
        raise ModelUnavailable(f"{MODEL} model needs onnxruntime: {exc}") from exc
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InvalidWeights(f"{MODEL} encoder {path} is not a loadable ONNX model: {exc}") from exc


def _check_encoder(session, path: Path, bank: ReferenceBank) -> None:  # noqa: ANN001
    """The encoder reads ``crop`` (N, 1, CROP, CROP) and gives ``embedding`` (N, D) with the
    bank's D: run once on a blank crop to see the shapes it really produces."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if "crop" not in inputs or "embedding" not in outputs:
        raise InvalidWeights(f"{MODEL} encoder {path} must take input 'crop' and give output 'embedding' "
                             f"(has inputs {sorted(inputs)}, outputs {sorted(outputs)})")
    try:
        (emb,) = session.run(["embedding"], {"crop": np.zeros((2, 1, CROP, CROP), np.float32)})
    except Exception as exc:
        raise InvalidWeights(f"{MODEL} encoder {path} does not run on a (2, 1, {CROP}, {CROP}) crop: {exc}") from exc
    if emb.ndim != 2 or emb.shape[0] != 2:
        raise InvalidWeights(f"{MODEL} encoder {path} gives embedding of shape {emb.shape} for 2 crops, "
                             "expected (2, D)")
    if emb.shape[1] != bank.dim:
        raise InvalidWeights(f"{MODEL} encoder {path} gives {emb.shape[1]}-dimensional embeddings but "
                             f"the reference bank's are {bank.dim}-dimensional")


def load(settings: Settings) -> CrossModalEvidence | None:
    """The alignment model's evidence finder, None when disabled; :class:`ModelUnavailable`
    (or its :class:`InvalidWeights`) naming the file when enabled and missing or malformed."""
    if disabled(settings):
        return None
    folder = weights_dir(settings, MODEL)
    weights = load_weights(folder, CARD_NAME, model=MODEL, files=(ONNX_NAME, BANK_NAME))
    bank = load_bank(weights.path(BANK_NAME))
    session = _session(weights.path(ONNX_NAME))
    _check_encoder(session, weights.path(ONNX_NAME), bank)
    identity = weights.card.identity(weights.card_path)
    return CrossModalEvidence(session, bank, identity, settings.similar_pathology_k)


class CrossModalEvidence:
    """Top-k reference pathology patches for mammography lesions."""

    def __init__(self, session, bank: ReferenceBank, identity: ModelIdentity, k: int) -> None:  # noqa: ANN001
        self._session = session
        self.bank = bank
        self.identity = identity
        self.k = max(0, min(int(k), len(bank.ids)))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings (N, D) of lesion crops (N, 1, CROP, CROP)."""
        (emb,) = self._session.run(["embedding"], {"crop": np.ascontiguousarray(crops, np.float32)})
        emb = np.asarray(emb, np.float64)
        # the export normalises already; doing it again keeps the score an exact cosine
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def nearest(self, embedding: np.ndarray) -> list[tuple[int, float]]:
        """(bank row, cosine) of the k most similar bank patches, most similar first."""
        sims = self.bank.embeddings.astype(np.float64) @ np.asarray(embedding, np.float64)
        order = np.argsort(-sims, kind="stable")[: self.k]
        return [(int(i), float(np.clip(sims[i], -1.0, 1.0))) for i in order]

    def similar(self, net_image: np.ndarray, finding: MammoImageFinding, lesion: Lesion, work_dir: Path,
                laterality: str) -> SimilarPathology:
        """The top-k bank patches for one lesion of one image.

        ``net_image`` is the image's mammography network input (chest wall left, 256x208);
        ``laterality`` the side it was mirrored for ("R" mirrors), as ``prepare_image`` used.
        Each patch is saved under ``mammography/<sop>/similar/<lesion n>_<rank>.npy``.
        """
        n = next((i for i, les in enumerate(finding.lesions, start=1) if les.tracking_uid == lesion.tracking_uid),
                 len(finding.lesions) + 1)
        centre = lesion_centre(lesion.box, laterality, finding.rows, finding.columns)
        crop = lesion_crop(net_image, centre)
        emb = self.embed(crop[None, None])[0]
        examples = []
        for rank, (row, sim) in enumerate(self.nearest(emb), start=1):
            rel = f"mammography/{finding.sop_instance_uid}/similar/{n}_{rank}.npy"
            examples.append(SimilarExample(
                bank_id=self.bank.ids[row], label=self.bank.class_names[int(self.bank.labels[row])],
                similarity=sim, image=ArrayFile.save(Path(work_dir), rel, self.bank.patches[row])))
        return SimilarPathology(sop_instance_uid=finding.sop_instance_uid, lesion_tracking_uid=lesion.tracking_uid,
                                examples=examples, model=self.identity, bank=self.bank.description)
