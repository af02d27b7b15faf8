"""Train the ultrasound lesion encoder on phantom images (torch; not imported at runtime).

Supervision comes from the phantom's truth: the five BI-RADS descriptors it drew (irregular
shape, not-parallel orientation, posterior shadowing, calcifications, spiculated margin) and its
latent risk. A small CNN learns to predict them from the lesion crop; its 32-d penultimate layer
is exported (ONNX) as the deep feature vector used by the recurrence model. Training uses the
*automatic* box on half of the images and the true box on the rest, so that the encoder sees the
crops it will get at runtime.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pydicom
import torch
from torch import nn

from cds.contracts.cards import ModelCard
from cds.contracts.domain import PatientRef
from models.ultrasound.deep import CROP_SIZE, FEATURE_DIM, lesion_crop
from models.ultrasound.lesion import automatic_box
from synthetic.phantoms.ultrasound import generate_ultrasound

log = logging.getLogger(__name__)

NAME = "ultrasound-lesion-encoder"
VERSION = "1.0.0"
RADIOMICS_NOTE = {
    "radiomics_implementation": "models/ultrasound/radiomics.py, written with scikit-image, scipy and "
    "PyWavelets: pyradiomics 3.x failed to build here (sdist needs numpy at build time). Checked against "
    "mirp 2.5 (IBSI-compliant) in tests/unit/models/ultrasound/test_radiomics_ibsi.py: first-order, GLCM, "
    "GLRLM, GLSZM and elongation agree to 1e-6; the 2D shape features IBSI does not define are listed there. "
    "Feature names follow pyradiomics.",
    "lesion_box": "box given by the caller, else a region drawn in an SR of the same study on that image "
                  "(models/ultrasound/sr_region.py: TID 1500 planar ROIs or any SCOORD POLYLINE/POLYGON/"
                  "CIRCLE/ELLIPSE/MULTIPOINT/POINT), else automatic (darkest compact region, "
                  "models/ultrasound/lesion.py)",
}
TARGETS = ("irregular", "not_parallel", "shadowing", "calcifications", "spiculated")


class LesionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(block(1, 16), block(16, 32), block(32, 48), block(48, 64),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Sequential(nn.Linear(64, FEATURE_DIM), nn.Tanh())
        self.heads = nn.Linear(FEATURE_DIM, len(TARGETS) + 1)  # descriptor logits + latent risk

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.proj(self.body(image))
        return f, self.heads(f)


def phantom_dataset(work: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    crops, targets = [], []
    for k in range(n):
        z = float(rng.normal(0, 1.5))
        truth = generate_ultrasound(work, seed * 100000 + k, PatientRef(patient_id="TRAIN"), latent_risk=z)
        image = pydicom.dcmread(truth.path).pixel_array
        truth.path.unlink()
        box = truth.lesion_box
        if k % 2:
            try:
                box = automatic_box(image)
            except ValueError:
                pass
        crops.append(lesion_crop(image, box))
        d = truth.descriptors
        targets.append([float(d["shape"] == "irregular"), float(d["orientation"] == "not_parallel"),
                        float(d["posterior"] == "shadowing"), float(d["calcifications"] == "yes"),
                        float(d["margin"] == "spiculated"), z])
    return np.stack(crops)[:, None], np.asarray(targets, np.float32)


def train_encoder(out_dir: Path, seed: int = 0, n_images: int = 400, epochs: int = 25,
                  progress: bool = True) -> ModelCard:
    """Train and export the encoder with its card into ``out_dir``."""
    torch.manual_seed(seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    work = out_dir / "_phantoms"
    x, y = phantom_dataset(work, n_images, seed)
    n_val = n_images // 5
    xt, yt = torch.from_numpy(x[n_val:]), torch.from_numpy(y[n_val:])
    xv, yv = torch.from_numpy(x[:n_val]), torch.from_numpy(y[:n_val])
    net = LesionEncoder()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    bce, mse = nn.BCEWithLogitsLoss(), nn.MSELoss()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            xb = xt[idx]
            if torch.rand(1, generator=gen) < 0.5:
                xb = torch.flip(xb, dims=[3])  # left-right mirror keeps every descriptor
            _, out = net(xb)
            loss = bce(out[:, :-1], yt[idx, :-1]) + 0.3 * mse(out[:, -1], yt[idx, -1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress and (epoch + 1) % 5 == 0:
            print(f"  US encoder epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    net.eval()
    with torch.no_grad():
        _, out = net(xv)
    acc = ((out[:, :-1] > 0).float() == yv[:, :-1]).float().mean(0).numpy()
    corr = float(np.corrcoef(out[:, -1].numpy(), yv[:, -1].numpy())[0, 1])
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{NAME}.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, CROP_SIZE, CROP_SIZE),), str(onnx_path), input_names=["image"],
                      output_names=["features", "descriptors"],
                      dynamic_axes={"image": {0: "n"}, "features": {0: "n"}, "descriptors": {0: "n"}},
                      opset_version=17, dynamo=False)
    for f in work.glob("*"):
        f.unlink()
    work.rmdir()
    card = ModelCard(
        name=NAME, version=VERSION,
        task="deep features (32-d) of a breast ultrasound lesion crop",
        intended_use="Feature extractor for the recurrence model's ultrasound branch; research only.",
        training_data=f"{n_images} seeded B-mode ultrasound phantoms (models/phantoms/ultrasound.py); "
                      "supervised by the phantom's drawn BI-RADS descriptors and latent risk.",
        synthetic_trained=True,
        architecture="4 conv blocks (16-32-48-64, BN, ReLU, max-pool) + global average pool + "
                     "linear 64->32 (tanh) = features; linear heads for 5 descriptors + latent risk.",
        inputs={"image": "(N, 1, 64, 64) float32 crop in [0,1]; see models/ultrasound/deep.py"},
        outputs={"features": "(N, 32)", "descriptors": list(TARGETS) + ["latent_risk"]},
        metrics={"validation_n": n_val,
                 "descriptor_accuracy": {t: round(float(a), 3) for t, a in zip(TARGETS, acc)},
                 "latent_risk_correlation": round(corr, 3)},
        extra=RADIOMICS_NOTE,
        weights_sha256={onnx_path.name: hashlib.sha256(onnx_path.read_bytes()).hexdigest()},
    )
    card.write(out_dir / f"{NAME}.card.json")
    return card
