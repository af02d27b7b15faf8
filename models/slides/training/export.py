"""ONNX export of the three slide networks and the torch/onnxruntime parity check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from models.slides.onnx_nets import ENCODER_FILE, MIL_FILE, STAGE1_FILE, OnnxTileNets, to_nchw
from models.slides.training.nets import (
    ENCODER_INPUT,
    FEATURE_DIM,
    STAGE1_INPUT,
    GatedAttentionMIL,
    PatchCNN,
    TileEncoder,
    TorchTileNets,
)
from models.weights import sha256_file


def export_onnx(stage1: PatchCNN, encoder: TileEncoder, mil: GatedAttentionMIL, out_dir: Path) -> dict[str, str]:
    """Write the three ONNX graphs (dynamic batch / bag size); returns their SHA-256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = [
        (stage1, torch.rand(2, 3, STAGE1_INPUT, STAGE1_INPUT), STAGE1_FILE, ["patches"], ["logit"], {"patches": {0: "n"}, "logit": {0: "n"}}),
        (encoder, torch.rand(2, 3, ENCODER_INPUT, ENCODER_INPUT), ENCODER_FILE, ["tiles"], ["features", "logit"], {"tiles": {0: "n"}, "features": {0: "n"}, "logit": {0: "n"}}),
        (mil, torch.randn(5, FEATURE_DIM), MIL_FILE, ["features"], ["logit", "attention", "embedding"], {"features": {0: "n"}, "attention": {0: "n"}}),
    ]
    sums = {}
    for net, example, name, ins, outs, axes in specs:
        net.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(out_dir / name), input_names=ins, output_names=outs,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        sums[name] = sha256_file(out_dir / name)
    return sums


def onnx_parity(torch_nets: TorchTileNets, onnx_nets: OnnxTileNets, seed: int = 0) -> float:
    """Largest absolute difference between torch and onnxruntime outputs on random inputs."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 256, (6, STAGE1_INPUT, STAGE1_INPUT, 3), dtype=np.uint8)
    t = rng.integers(0, 256, (5, ENCODER_INPUT, ENCODER_INPUT, 3), dtype=np.uint8)
    x1 = torch.from_numpy(to_nchw(p, STAGE1_INPUT))
    x2 = torch.from_numpy(to_nchw(t, ENCODER_INPUT))
    with torch.no_grad():
        r1 = torch_nets.stage1_net(x1).numpy()
        rf, rl = (a.numpy() for a in torch_nets.encoder_net(x2))
        rm = [a.numpy() for a in torch_nets.mil_net(torch.from_numpy(rf))]
    o1 = onnx_nets.stage1_session.run(None, {"patches": x1.numpy()})[0]  # type: ignore[attr-defined]
    of, ol = onnx_nets.encoder_session.run(None, {"tiles": x2.numpy()})  # type: ignore[attr-defined]
    om = onnx_nets.mil_session.run(None, {"features": rf})  # type: ignore[attr-defined]
    diffs = [np.abs(r1 - o1).max(), np.abs(rf - of).max(), np.abs(rl - ol).max()]
    diffs += [np.abs(np.asarray(a).ravel() - np.asarray(b).ravel()).max() for a, b in zip(rm, om)]
    return float(max(diffs))
