"""Cross-modal runtime against fixture artifacts whose nearest patch is known in advance.

The fixture encoder (synthetic/fixture_crossmodal.py) is a fixed pooling + projection with a numpy
twin, so the bank can hold the exact embedding of the lesion's crop at a chosen row: that row must
come back first, with its class, its patch and a cosine of 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cds.contracts.domain import ArrayFile, Calibrated, Lesion, MammoImageFinding
from cds.contracts.errors import InvalidWeights, ModelUnavailable
from cds.contracts.settings import Settings
from models.crossmodal.crop import lesion_centre, lesion_crop
from models.crossmodal.runtime import load
from models.mammography.preprocess import INPUT_SHAPE
from synthetic.fixture_crossmodal import (
    CLASS_NAMES,
    bank_arrays,
    reference_embedding,
    write_bank,
    write_card,
    write_crossmodal_fixture,
)

ROWS, COLS = 1024, 832  # source pixels: 4x the network input
SOP = "2.25.777"


def _net_image(centre_rc: tuple[float, float]) -> np.ndarray:
    """A network input with one bright blob at ``centre_rc`` on a gradient background."""
    yy, xx = np.mgrid[0:INPUT_SHAPE[0], 0:INPUT_SHAPE[1]]
    img = 0.2 + 0.3 * xx / INPUT_SHAPE[1]
    img += np.exp(-((yy - centre_rc[0]) ** 2 + (xx - centre_rc[1]) ** 2) / (2 * 6.0**2))
    return img.astype(np.float32)


def _finding(tmp: Path, boxes: list[tuple[float, float, float, float]], laterality: str = "L") -> MammoImageFinding:
    mask = ArrayFile.save(tmp, "m.npy", np.zeros((2, 2), np.uint8))
    lesions = [Lesion(tracking_id=f"lesion-{n}", tracking_uid=f"2.25.{900 + n}", box=b,
                      polygon=[(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[1])], mask=mask, score=0.8)
               for n, b in enumerate(boxes, start=1)]
    return MammoImageFinding(sop_instance_uid=SOP, sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                             series_instance_uid="2.25.778", laterality=laterality, view="CC", rows=ROWS,
                             columns=COLS, class_probabilities={"normal": 0.1, "benign": 0.2, "in_situ": 0.3,
                                                                "invasive": 0.4},
                             malignancy=Calibrated(probability=0.7, threshold=0.5), lesions=lesions)


def _crop_of(net: np.ndarray, box, laterality: str) -> np.ndarray:
    return lesion_crop(net, lesion_centre(box, laterality, ROWS, COLS))


BOX = (380.0, 500.0, 460.0, 580.0)  # source (x0, y0, x1, y1); centre (540, 420) -> net (135, 105)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A net image with the blob under BOX (left breast); the bank holds that lesion's crop at row
    2 (invasive), crops of the blob elsewhere at rows 0-1, then 5 random unit vectors."""
    root = tmp_path_factory.mktemp("cm")
    net = _net_image((135.0, 105.0))
    target = _crop_of(net, BOX, "L")
    decoys = [_crop_of(_net_image(c), BOX, "L") for c in ((110.0, 90.0), (150.0, 125.0))]
    fx = write_crossmodal_fixture(root / "crossmodal", anchors=np.stack([*decoys, target]),
                                  anchor_labels=[0, 1, 3], extra=5)
    return root, net, fx


def test_nearest_patch_is_the_lesions_own_crop_with_its_class(scene, tmp_path):
    root, net, fx = scene
    ev = load(Settings(models_dir=root))
    assert ev is not None and ev.identity.name == "crossmodal-alignment" and ev.k == 3
    finding = _finding(tmp_path, [BOX])
    sp = ev.similar(net, finding, finding.lesions[0], tmp_path, "L")
    assert (sp.sop_instance_uid, sp.lesion_tracking_uid) == (SOP, "2.25.901")
    assert sp.bank == "8 fixture patches, seed 0" and sp.model.name == "crossmodal-alignment"
    assert [e.bank_id for e in sp.examples][0] == "bank-0002"
    assert sp.examples[0].label == CLASS_NAMES[3] == "invasive carcinoma"
    assert sp.examples[0].similarity == pytest.approx(1.0, abs=1e-5)
    # the scores are the cosines of the numpy twin, ranked
    q = reference_embedding(_crop_of(net, BOX, "L")[None])[0].astype(np.float64)
    bank = np.load(root / "crossmodal" / "reference_bank.npz")["embeddings"].astype(np.float64)
    expected = np.sort(bank @ q)[::-1][:3]
    np.testing.assert_allclose([e.similarity for e in sp.examples], expected, atol=1e-5)
    assert sp.examples[1].similarity < sp.examples[0].similarity
    # each patch is saved where the brief says, and is the bank's patch (red channel = bank row)
    for rank, e in enumerate(sp.examples, start=1):
        assert e.image.path == f"mammography/{SOP}/similar/1_{rank}.npy"
        patch = e.image.load(tmp_path)
        assert patch.dtype == np.uint8 and patch.shape == (16, 16, 3)
        assert int(patch[0, 0, 0]) == int(e.bank_id.split("-")[1])


def test_right_breast_is_cropped_mirrored_like_prepare_image(tmp_path):
    """A right image's network input is mirrored (chest wall left): a lesion at source column x
    sits at network column W - x * W / columns. The bank holds the window there (row 0) and the
    unmirrored window (row 1); the runtime must pick row 0 for "R" and row 1 for "L"."""
    box = (100.0, 500.0, 180.0, 580.0)  # source centre (row 540, col 140) -> net (135, 35)
    net = _net_image((135.0, INPUT_SHAPE[1] - 35.0))  # the right breast's blob, mirrored: col 173
    mirrored_window = net[111:159, 149:197]  # hand-computed: rows 135 +- 24, cols 173 +- 24
    plain_window = net[111:159, 11:59]
    write_crossmodal_fixture(tmp_path / "m" / "crossmodal", anchors=np.stack([mirrored_window, plain_window]),
                             anchor_labels=[2, 0], extra=3)
    ev = load(Settings(models_dir=tmp_path / "m"))
    finding = _finding(tmp_path, [box], laterality="R")
    right = ev.similar(net, finding, finding.lesions[0], tmp_path, "R")
    assert right.examples[0].bank_id == "bank-0000" and right.examples[0].label == "carcinoma in situ"
    assert right.examples[0].similarity == pytest.approx(1.0, abs=1e-5)
    left = ev.similar(net, finding, finding.lesions[0], tmp_path, "L")
    assert left.examples[0].bank_id == "bank-0001" and left.examples[0].similarity == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("k", "expected"), [(1, 1), (2, 2), (10, 8)])
def test_k_is_respected_and_capped_at_the_bank_size(scene, tmp_path, k, expected):
    root, net, _ = scene
    ev = load(Settings(models_dir=root, similar_pathology_k=k))
    finding = _finding(tmp_path, [BOX, (100.0, 100.0, 140.0, 150.0)])
    sp = ev.similar(net, finding, finding.lesions[1], tmp_path, "L")
    assert len(sp.examples) == expected
    assert len({e.bank_id for e in sp.examples}) == expected
    assert sp.examples[-1].image.path == f"mammography/{SOP}/similar/2_{expected}.npy"


@pytest.mark.parametrize("settings", [{"disabled_models": ["crossmodal"]}, {"similar_pathology_k": 0},
                                      {"disabled_models": ["models.crossmodal.runtime"]}])
def test_disabled_gives_none_even_without_weights(tmp_path, settings):
    assert load(Settings(models_dir=tmp_path, **settings)) is None


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(ModelUnavailable, match="mammo_encoder.onnx"):
        load(Settings(models_dir=tmp_path))


def test_missing_bank_names_the_bank(scene, tmp_path):
    root, _, _ = scene
    folder = tmp_path / "crossmodal"
    folder.mkdir()
    for name in ("mammo_encoder.onnx", "card.json"):
        (folder / name).write_bytes((root / "crossmodal" / name).read_bytes())
    with pytest.raises(ModelUnavailable, match="reference_bank.npz missing") as err:
        load(Settings(models_dir=tmp_path))
    assert "mammo_encoder.onnx" not in str(err.value)


def _broken(scene, tmp_path, **changes) -> Settings:
    """A copy of the fixture whose bank has ``changes`` (None deletes a key); card re-hashed."""
    root, _, _ = scene
    folder = tmp_path / "crossmodal"
    folder.mkdir()
    (folder / "mammo_encoder.onnx").write_bytes((root / "crossmodal" / "mammo_encoder.onnx").read_bytes())
    with np.load(root / "crossmodal" / "reference_bank.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    write_bank(folder / "reference_bank.npz", arrays)
    write_card(folder)
    return Settings(models_dir=tmp_path)


def test_a_valid_copy_loads(scene, tmp_path):
    """The copy helper itself yields a loadable model, so the failures below come from the change."""
    assert load(_broken(scene, tmp_path)) is not None


@pytest.mark.parametrize(("change", "message"), [
    ("unnormalised", "not L2-normalised"),
    ("dim", "6-dimensional"),
    ("patches", "patches must be uint8"),
    ("labels", "labels must index class_names"),
    ("missing_ids", "lacks ids"),
    ("duplicate_ids", "distinct strings"),
])
def test_malformed_bank_is_refused_naming_the_file(scene, tmp_path, change, message):
    root, _, _ = scene
    emb = np.load(root / "crossmodal" / "reference_bank.npz")["embeddings"]
    changes = {
        "unnormalised": {"embeddings": emb * 1.5},
        "dim": bank_arrays(emb[:, :6] / np.linalg.norm(emb[:, :6], axis=1, keepdims=True), np.zeros(len(emb))),
        "patches": {"patches": np.zeros((len(emb), 16, 16), np.uint8)},
        "labels": {"labels": np.full(len(emb), 7, np.int64)},
        "missing_ids": {"ids": None},
        "duplicate_ids": {"ids": np.array(["bank-0000"] * len(emb))},
    }[change]
    with pytest.raises(InvalidWeights, match=message) as err:
        load(_broken(scene, tmp_path, **changes))
    assert "reference_bank.npz" in str(err.value) or "mammo_encoder.onnx" in str(err.value)
    if change == "dim":
        assert "mammo_encoder.onnx" in str(err.value) and "8-dimensional" in str(err.value)


def test_corrupt_encoder_and_checksum_mismatch_name_the_file(scene, tmp_path):
    settings = _broken(scene, tmp_path)
    folder = tmp_path / "crossmodal"
    (folder / "mammo_encoder.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(InvalidWeights, match="mammo_encoder.onnx.*do not match"):
        load(settings)
    write_card(folder)
    with pytest.raises(InvalidWeights, match="mammo_encoder.onnx is not a loadable ONNX"):
        load(settings)
