"""Radiomics of an ultrasound lesion, written with scikit-image, scipy and PyWavelets.

pyradiomics 3.x does not install here (its sdist needs numpy at build time and no wheel exists
for this Python), and an IBSI library at runtime would bring pandas and ITK to every site for a
few features; so the feature classes are implemented here and checked against mirp 2.5
(IBSI-compliant) in tests/unit/models/ultrasound/test_radiomics_ibsi.py. They follow the
pyradiomics definitions and its naming
(``<image>_<class>_<feature>``):

* images: ``original``, Laplacian of Gaussian ``log_sigma_1``/``log_sigma_2`` (pixels), and the
  one-level Haar wavelet sub-bands ``wavelet_LL``, ``wavelet_LH``, ``wavelet_HL``, ``wavelet_HH``;
* classes: ``firstorder`` on every image (on intensities inside the mask); on original and LoG
  images also ``glcm`` (distance 1, 4 angles,
  symmetric, averaged), ``glrlm`` (4 directions, averaged), ``glszm`` (8-connected zones), on the
  mask's intensities quantized to 32 bins; ``shape2D`` on the mask (original image only).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import graycomatrix
from skimage.measure import find_contours, label, regionprops

N_BINS = 32
EPS = 1e-12


def _quantize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi - lo < EPS:
        return np.zeros_like(values, dtype=np.int32)
    q = np.floor((values - lo) / (hi - lo) * N_BINS).astype(np.int32)
    return np.clip(q, 0, N_BINS - 1)


def first_order(values: np.ndarray) -> dict[str, float]:
    v = values.astype(float)
    hist = np.bincount(_quantize(v, v.min(), v.max()), minlength=N_BINS) / max(v.size, 1)
    p = hist[hist > 0]
    mean, std = v.mean(), v.std()
    return {
        "Mean": float(mean),
        "Median": float(np.median(v)),
        "Variance": float(v.var()),
        "Skewness": float(((v - mean) ** 3).mean() / (std ** 3 + EPS)),
        "Kurtosis": float(((v - mean) ** 4).mean() / (std ** 4 + EPS)),
        "Energy": float(np.sum(v ** 2)),
        "Entropy": float(-np.sum(p * np.log2(p))),
        "Uniformity": float(np.sum(p ** 2)),
        "10Percentile": float(np.percentile(v, 10)),
        "90Percentile": float(np.percentile(v, 90)),
        "InterquartileRange": float(np.subtract(*np.percentile(v, [75, 25]))),
        "RobustMeanAbsoluteDeviation": float(np.mean(np.abs(v[(v >= np.percentile(v, 10)) & (v <= np.percentile(v, 90))]
                                                           - v[(v >= np.percentile(v, 10)) & (v <= np.percentile(v, 90))].mean()))),
    }


def glcm(q: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Gray-level co-occurrence (pixels outside the mask get their own level, then dropped)."""
    img = np.where(mask, q + 1, 0).astype(np.uint8)
    mats = graycomatrix(img, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=N_BINS + 1, symmetric=True)
    mats = mats[1:, 1:, 0, :].astype(float)
    i, j = np.meshgrid(np.arange(1, N_BINS + 1), np.arange(1, N_BINS + 1), indexing="ij")
    feats: dict[str, list[float]] = {k: [] for k in ("Contrast", "Correlation", "JointEnergy", "JointEntropy",
                                                     "Idm", "ClusterShade", "DifferenceEntropy")}
    for a in range(mats.shape[-1]):
        p = mats[..., a]
        s = p.sum()
        if s <= 0:
            continue
        p = p / s
        mu_i, mu_j = (i * p).sum(), (j * p).sum()
        sd_i, sd_j = np.sqrt(((i - mu_i) ** 2 * p).sum()), np.sqrt(((j - mu_j) ** 2 * p).sum())
        nz = p[p > 0]
        diff = np.bincount(np.abs(i - j).ravel(), weights=p.ravel())
        dz = diff[diff > 0]
        feats["Contrast"].append(float(((i - j) ** 2 * p).sum()))
        feats["Correlation"].append(float((((i - mu_i) * (j - mu_j) * p).sum()) / (sd_i * sd_j + EPS)) if sd_i * sd_j > EPS else 1.0)
        feats["JointEnergy"].append(float((p ** 2).sum()))
        feats["JointEntropy"].append(float(-(nz * np.log2(nz)).sum()))
        feats["Idm"].append(float((p / (1 + (i - j) ** 2)).sum()))
        feats["ClusterShade"].append(float(((i + j - mu_i - mu_j) ** 3 * p).sum()))
        feats["DifferenceEntropy"].append(float(-(dz * np.log2(dz)).sum()))
    return {k: float(np.mean(v)) if v else 0.0 for k, v in feats.items()}


def _runs_1d(line: np.ndarray, valid: np.ndarray, out: np.ndarray) -> None:
    """Accumulate run lengths of equal gray levels along one line into ``out[level, length-1]``."""
    n = len(line)
    k = 0
    while k < n:
        if not valid[k]:
            k += 1
            continue
        start = k
        while k + 1 < n and valid[k + 1] and line[k + 1] == line[start]:
            k += 1
        out[line[start], min(k - start, out.shape[1] - 1)] += 1
        k += 1


def glrlm(q: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Gray-level run length matrix over 0, 45, 90, 135 degrees (averaged)."""
    max_len = max(q.shape)
    results = []
    for direction in range(4):
        m = np.zeros((N_BINS, max_len))
        if direction == 0:
            lines = [(q[r], mask[r]) for r in range(q.shape[0])]
        elif direction == 1:
            lines = [(q[:, c], mask[:, c]) for c in range(q.shape[1])]
        else:
            a = q if direction == 2 else q[:, ::-1]
            b = mask if direction == 2 else mask[:, ::-1]
            lines = [(np.diagonal(a, o), np.diagonal(b, o)) for o in range(-a.shape[0] + 1, a.shape[1])]
        for line, valid in lines:
            if valid.any():
                _runs_1d(line, valid, m)
        nr = m.sum()
        if nr == 0:
            continue
        lengths = np.arange(1, max_len + 1)[None, :]
        results.append({
            "ShortRunEmphasis": (m / lengths ** 2).sum() / nr,
            "LongRunEmphasis": (m * lengths ** 2).sum() / nr,
            "GrayLevelNonUniformity": (m.sum(1) ** 2).sum() / nr,
            "RunLengthNonUniformity": (m.sum(0) ** 2).sum() / nr,
            "RunPercentage": nr / max(mask.sum(), 1),
        })
    keys = ("ShortRunEmphasis", "LongRunEmphasis", "GrayLevelNonUniformity", "RunLengthNonUniformity", "RunPercentage")
    return {k: float(np.mean([r[k] for r in results])) if results else 0.0 for k in keys}


def glszm(q: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Gray-level size zone matrix: 8-connected zones of equal level inside the mask."""
    sizes: list[int] = []
    for level in np.unique(q[mask]):
        lab, n = ndimage.label((q == level) & mask, structure=np.ones((3, 3)))
        if n:
            sizes.extend(np.bincount(lab.ravel())[1:].tolist())
    if not sizes:
        return {"SmallAreaEmphasis": 0.0, "LargeAreaEmphasis": 0.0, "ZonePercentage": 0.0, "SizeZoneNonUniformity": 0.0}
    s = np.asarray(sizes, float)
    nz = len(s)
    counts = np.bincount(s.astype(int))
    return {
        "SmallAreaEmphasis": float((1 / s ** 2).sum() / nz),
        "LargeAreaEmphasis": float((s ** 2).sum() / nz),
        "ZonePercentage": float(nz / max(mask.sum(), 1)),
        "SizeZoneNonUniformity": float((counts ** 2).sum() / nz),
    }


def shape_2d(mask: np.ndarray, spacing_mm: float) -> dict[str, float]:
    lab = label(mask)
    if lab.max() == 0:
        raise ValueError("lesion mask is empty: no shape features")
    props = max(regionprops(lab), key=lambda r: r.area)
    contour = max(find_contours(np.pad(props.image, 1).astype(float), 0.5), key=len)
    perimeter = float(np.sum(np.hypot(*np.diff(contour, axis=0).T))) * spacing_mm
    area = float(props.area) * spacing_mm ** 2
    # IBSI (and mirp, its reference) take the axes from the SAMPLE covariance of the pixel centres
    # (n - 1); scikit-image divides by n. Measured before this factor: 0.03-0.26 % short of mirp.
    unbiased = float(np.sqrt(props.area / max(props.area - 1, 1)))
    major = float(props.axis_major_length) * spacing_mm * unbiased
    minor = float(props.axis_minor_length) * spacing_mm * unbiased
    return {
        "PixelSurface": area,
        "Perimeter": perimeter,
        "PerimeterSurfaceRatio": perimeter / (area + EPS),
        "Sphericity": float(2 * np.sqrt(np.pi * area) / (perimeter + EPS)),
        "MaximumDiameter": float(props.feret_diameter_max) * spacing_mm,
        "MajorAxisLength": major,
        "MinorAxisLength": minor,
        "Elongation": minor / (major + EPS),
        "Solidity": float(props.solidity),
        "AspectRatioDepthWidth": float(props.bbox[2] - props.bbox[0]) / max(props.bbox[3] - props.bbox[1], 1),
    }


def _texture(image: np.ndarray, mask: np.ndarray, prefix: str, out: dict[str, float]) -> None:
    values = image[mask]
    for k, v in first_order(values).items():
        out[f"{prefix}_firstorder_{k}"] = v
    q = _quantize(image, values.min(), values.max())
    for cls, fn in (("glcm", glcm), ("glrlm", glrlm), ("glszm", glszm)):
        for k, v in fn(q, mask).items():
            out[f"{prefix}_{cls}_{k}"] = v


def radiomics_features(image: np.ndarray, mask: np.ndarray, spacing_mm: float = 0.2) -> dict[str, float]:
    """All features of the lesion ``mask`` (bool, same shape as ``image``), pyradiomics-style names."""
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    mask = mask.astype(bool)
    if mask.sum() < 9:
        raise ValueError(f"lesion mask has {int(mask.sum())} pixels; at least 9 are needed for radiomics")
    img = image.astype(float)
    out: dict[str, float] = {}
    _texture(img, mask, "original", out)
    for k, v in shape_2d(mask, spacing_mm).items():
        out[f"original_shape2D_{k}"] = v
    for sigma in (1, 2):
        _texture(ndimage.gaussian_laplace(img, sigma), mask, f"log_sigma_{sigma}", out)
    import pywt

    ll, (lh, hl, hh) = pywt.dwt2(img, "haar")
    small = mask[::2, ::2][: ll.shape[0], : ll.shape[1]]
    if small.sum() >= 9:
        for name, band in (("LL", ll), ("LH", lh), ("HL", hl), ("HH", hh)):
            for k, v in first_order(band[small]).items():
                out[f"wavelet_{name}_firstorder_{k}"] = v
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}
