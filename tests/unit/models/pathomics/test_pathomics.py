"""Pathomics on generated tiles: plausible nuclear counts, sizes and densities; stable key names."""

from __future__ import annotations

import numpy as np
import pytest
from wsidicom import WsiDicom

from models.pathomics.features import MORPHOLOGY_KEYS, TOPOLOGY_KEYS, slide_features
from models.pathomics.graph import graph_measures, knn_graph


def _tiles(truth, want_tumour: bool, n: int) -> list[np.ndarray]:
    """Base tiles fully inside (or far from) the tumour mask and inside tissue."""
    mask = np.load(truth.tumour_mask_path)
    k = truth.tile // truth.mask_downsample
    out = []
    with WsiDicom.open(truth.level_paths) as wsi:
        grid = mask.shape[0] // k
        for r in range(grid):
            for c in range(grid):
                frac = mask[r * k : (r + 1) * k, c * k : (c + 1) * k].mean()
                if (want_tumour and frac == 1.0) or (not want_tumour and frac == 0.0):
                    t = np.asarray(wsi.read_tile(0, (c, r), as_array=True))[..., :3]
                    if t.astype(float).mean() < 200 and (want_tumour or t.astype(float).mean() < 150):
                        out.append(t)
                if len(out) == n:
                    return out
    return out


def test_tumour_and_lymphocyte_tiles_differ_plausibly(demo_slide):
    tumour = _tiles(demo_slide, True, 2)
    lymph = _tiles(demo_slide, False, 2)
    assert len(tumour) == 2 and len(lymph) == 2
    ft = slide_features(tumour, demo_slide.um_per_px)
    fl = slide_features(lymph, demo_slide.um_per_px)
    tile_mm2 = (256 * 0.5 / 1000) ** 2
    # a 128 um tile holds tens to a few hundred nuclei
    for f in (ft, fl):
        assert 20 <= f.n_nuclei / 2 <= 400
        assert set(f.morphology) == set(MORPHOLOGY_KEYS) and set(f.topology) == set(TOPOLOGY_KEYS)
        assert all(np.isfinite(v) for v in (*f.morphology.values(), *f.topology.values()))
        assert 3.0 <= f.topology["degree_mean"] <= 10.0  # k=5 graph, made undirected
    # tumour nuclei are larger; lymphocytes are small, round and dense
    assert ft.morphology["area_um2_p50"] > 1.5 * fl.morphology["area_um2_p50"]
    assert 15 <= fl.morphology["area_um2_p50"] <= 60
    assert fl.til_density_per_mm2 > 2 * ft.til_density_per_mm2
    assert fl.til_density_per_mm2 > 0.2 * (fl.n_nuclei / 2) / tile_mm2
    assert ft.topology["edge_length_um_mean"] > fl.topology["edge_length_um_mean"]


def test_glass_tile_has_no_nuclei():
    glass = np.full((128, 128, 3), 245, np.uint8)
    f = slide_features([glass], 0.5)
    assert f.n_nuclei == 0 and f.til_density_per_mm2 == 0.0
    assert all(v == 0.0 for v in f.morphology.values())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="tile 0: expected RGB uint8"):
        slide_features([np.zeros((8, 8), np.float32)], 0.5)
    with pytest.raises(ValueError, match="um_per_px"):
        slide_features([], 0.0)


def test_knn_graph_on_a_lattice():
    pts = np.array([(x * 10.0, y * 10.0) for x in range(6) for y in range(6)])
    g = knn_graph(pts)
    nodes, edges = graph_measures(g)
    assert g.number_of_nodes() == 36 and nodes.shape == (36, 4)
    assert nodes[:, 0].min() >= 5  # every node keeps its own 5 neighbours
    assert edges.min() == pytest.approx(10.0)
