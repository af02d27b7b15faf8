"""Per-slide pathomics summary (the typed result the recurrence model reads by name).

Computed on the stage-2 (high-magnification) tiles only. Per-nucleus morphology and per-node /
per-edge graph measures are pooled over all tiles and summarised by mean, std and the 10th, 50th
and 90th percentiles. Key names are ``<feature>_<stat>`` with the features listed in
:data:`MORPHOLOGY_KEYS` / :data:`TOPOLOGY_KEYS`; they are a contract with the recurrence model, so
change them only with a version bump. A summary with no nuclei to measure is 0.0 (with
``n_nuclei`` = 0 telling why).

Lymphocytes (for the TIL density) are small, round, dark nuclei: area 10-50 um^2, circularity
>= 0.75 and haematoxylin density above the tile's nuclear median; density is per mm^2 of tissue
(non-glass) area of the tiles.
"""

from __future__ import annotations

import numpy as np

from cds.contracts.domain import PathomicsFeatures
from models.pathomics.graph import TOPOLOGY_NODE_FEATURES, graph_measures, knn_graph
from models.pathomics.morphology import MORPHOLOGY_FEATURES, nucleus_table
from models.pathomics.segmentation import segment_nuclei

STATS: tuple[str, ...] = ("mean", "std", "p10", "p50", "p90")
TOPOLOGY_FEATURES: tuple[str, ...] = (*TOPOLOGY_NODE_FEATURES, "edge_length_um")
MORPHOLOGY_KEYS: tuple[str, ...] = tuple(f"{f}_{s}" for f in MORPHOLOGY_FEATURES for s in STATS)
TOPOLOGY_KEYS: tuple[str, ...] = tuple(f"{f}_{s}" for f in TOPOLOGY_FEATURES for s in STATS) + (
    "nuclei_density_per_mm2",
    "lymphocyte_fraction",
)
LYMPHOCYTE_AREA_UM2 = (10.0, 50.0)
LYMPHOCYTE_MIN_CIRCULARITY = 0.75
GLASS_GREY = 0.86  # mean RGB/255 above this is glass, not tissue


def _summary(values: np.ndarray, name: str) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {f"{name}_{s}": 0.0 for s in STATS}
    q10, q50, q90 = np.percentile(v, [10, 50, 90])
    return {
        f"{name}_mean": float(v.mean()),
        f"{name}_std": float(v.std()),
        f"{name}_p10": float(q10),
        f"{name}_p50": float(q50),
        f"{name}_p90": float(q90),
    }


def slide_features(tiles: list[np.ndarray], um_per_px: float) -> PathomicsFeatures:
    """Segment, measure and summarise the nuclei of the given RGB uint8 tiles (pixel size in um)."""
    if um_per_px <= 0:
        raise ValueError(f"um_per_px must be positive, got {um_per_px}")
    tables, node_rows, edge_rows = [], [], []
    n_lym = 0
    tissue_mm2 = 0.0
    for i, tile in enumerate(tiles):
        tile = np.asarray(tile)
        if tile.ndim != 3 or tile.shape[2] < 3 or tile.dtype != np.uint8:
            raise ValueError(f"tile {i}: expected RGB uint8 (H, W, 3), got {tile.dtype} {tile.shape}")
        grey = tile[..., :3].astype(np.float32).mean(axis=2) / 255.0
        tissue_mm2 += float((grey < GLASS_GREY).sum()) * (um_per_px / 1000.0) ** 2
        labels, hema = segment_nuclei(tile, um_per_px)
        table, cent = nucleus_table(labels, tile, hema, um_per_px, seed=i)
        if len(table) == 0:
            continue
        tables.append(table)
        area = table[:, MORPHOLOGY_FEATURES.index("area_um2")]
        circ = table[:, MORPHOLOGY_FEATURES.index("circularity")]
        hm = table[:, MORPHOLOGY_FEATURES.index("hematoxylin_mean")]
        lym = (area >= LYMPHOCYTE_AREA_UM2[0]) & (area <= LYMPHOCYTE_AREA_UM2[1]) & (circ >= LYMPHOCYTE_MIN_CIRCULARITY) & (hm >= np.median(hm))
        n_lym += int(lym.sum())
        nodes, edges = graph_measures(knn_graph(cent), seed=i)
        node_rows.append(nodes)
        edge_rows.append(edges)
    table = np.vstack(tables) if tables else np.zeros((0, len(MORPHOLOGY_FEATURES)))
    nodes = np.vstack(node_rows) if node_rows else np.zeros((0, len(TOPOLOGY_NODE_FEATURES)))
    edges = np.concatenate(edge_rows) if edge_rows else np.zeros(0)
    morphology: dict[str, float] = {}
    for j, name in enumerate(MORPHOLOGY_FEATURES):
        morphology.update(_summary(table[:, j], name))
    topology: dict[str, float] = {}
    for j, name in enumerate(TOPOLOGY_NODE_FEATURES):
        topology.update(_summary(nodes[:, j], name))
    topology.update(_summary(edges, "edge_length_um"))
    n = len(table)
    topology["nuclei_density_per_mm2"] = float(n / tissue_mm2) if tissue_mm2 > 0 else 0.0
    topology["lymphocyte_fraction"] = float(n_lym / n) if n else 0.0
    return PathomicsFeatures(
        n_nuclei=n,
        til_density_per_mm2=float(n_lym / tissue_mm2) if tissue_mm2 > 0 else 0.0,
        morphology=morphology,
        topology=topology,
    )
