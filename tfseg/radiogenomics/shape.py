"""Shape features of one tumour mask: BEVR (3-D) and ASD, MF (2-D, on the largest slice).

Every choice the paper leaves open is a field of :class:`ShapeSettings` and is
explained in the package docstring (``tfseg/radiogenomics/__init__.py``).
Coordinates are voxel indices (slice, row, column); kaggle_3m ships no voxel
spacing, so ASD is in pixels and BEVR and MF are dimensionless.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

# The 8 corners of a unit voxel centred on its index.
_CORNERS = np.array([[dz, dy, dx] for dz in (-0.5, 0.5) for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)])


@dataclass(frozen=True)
class ShapeSettings:
    """The free parameters of the three features (defaults = the published run).

    Args:
        khachiyan_tol: stop Khachiyan's algorithm when every point's Mahalanobis
            value is within ``(d+1)(1 ± tol)`` (both optimality conditions);
            BEVR is then within about ``2·tol`` (relative) of the exact ratio
            (if the iteration limit comes first, a fit within ``MAX_BEVR_GAP`` is
            accepted, and a looser one is an error).
        boundary_points: samples, equally spaced in arc length, of the outer
            boundary of the largest slice; ASD and MF are computed on them.
        sectors: equal angular sectors around the centroid for ASD (10 × 36°).
        mf_window: circular moving-average window (samples, odd) that MF
            subtracts: 11 of 360 samples, about 3% of the perimeter.
        mf_window_alt: a second window, reported as the sensitivity feature
            ``mf_w<alt>``.
    """

    khachiyan_tol: float = 1e-7
    boundary_points: int = 360
    sectors: int = 10
    mf_window: int = 11
    mf_window_alt: int = 31

    def __post_init__(self):
        for name in ("mf_window", "mf_window_alt"):
            window = getattr(self, name)
            if window < 1 or window % 2 == 0 or window >= self.boundary_points:
                raise ValueError(f"{name}={window}: the smoothing window must be an odd number of samples "
                                 f"below boundary_points={self.boundary_points}")
        if not 0 < self.khachiyan_tol < 1:
            raise ValueError(f"khachiyan_tol={self.khachiyan_tol} must lie in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------
# BEVR: volume / minimum-volume enclosing ellipsoid (3-D)
# ----------------------------------------------------------------------------

def voxel_hull_vertices(mask: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of the corners of every foreground voxel: (S, H, W) bool -> (V, 3) float.

    The hull of a run of voxels along a row is the hull of its two end voxels,
    so only the first and last voxel of each (slice, row) line contribute corners.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(f"voxel_hull_vertices() needs a non-empty (S, H, W) mask, got shape {mask.shape}")
    rows = mask.any(axis=2)
    z, y = np.nonzero(rows)
    first = np.argmax(mask, axis=2)[z, y]
    last = mask.shape[2] - 1 - np.argmax(mask[..., ::-1], axis=2)[z, y]
    ends = np.concatenate([np.stack([z, y, first], axis=1), np.stack([z, y, last], axis=1)]).astype(float)
    corners = np.unique((ends[:, None, :] + _CORNERS[None]).reshape(-1, 3), axis=0)
    return corners[ConvexHull(corners).vertices]


class Ellipsoid(NamedTuple):
    """``{x : (x - centre)ᵀ A (x - centre) <= 1}``, as fitted by `minimum_volume_ellipsoid`."""

    centre: np.ndarray  # (d,)
    a: np.ndarray  # (d, d) shape matrix
    iterations: int
    gap: float  # the optimality gap reached: <= tol when the algorithm converged

    def converged(self, tol: float) -> bool:
        return self.gap <= tol


def minimum_volume_ellipsoid(points: np.ndarray, tol: float = 1e-7, max_iter: int = 200_000) -> Ellipsoid:
    """Minimum-volume enclosing ellipsoid of (n, d) points (Khachiyan's algorithm with away steps).

    Khachiyan's barycentric coordinate ascent, with the "away" (drop) steps of
    Todd & Yildirim (2007, Discrete Appl. Math. 155:1731), which converge
    linearly instead of sublinearly. The result is scaled so that the farthest
    point lies exactly on it: it always encloses every point, and its volume is
    at least the optimum (so a volume ratio can only be underestimated, by
    about ``2·gap`` relative).

    Stops when the gap (how far the worst- or best-covered point is from the
    optimality condition, relative) is at most ``tol`` or after ``max_iter``
    iterations; either way it returns the enclosing ellipsoid of the last
    iterate with the gap it reached, and the caller decides whether that is
    close enough (`Ellipsoid.converged`).
    """
    points = np.asarray(points, dtype=float)
    n, d = points.shape
    if n < d + 1:
        raise ValueError(f"minimum_volume_ellipsoid() needs at least {d + 1} points in {d}-D, got {n}")
    if max_iter < 1:
        raise ValueError(f"minimum_volume_ellipsoid() needs max_iter >= 1, got {max_iter}")
    # Affine invariance: centre and scale the points for conditioning, undo at the end.
    shift = points.mean(axis=0)
    scale = np.abs(points - shift).max()
    p = (points - shift) / scale
    q = np.vstack([p.T, np.ones(n)])  # lifted to (d+1, n)
    u = np.full(n, 1.0 / n)
    for iteration in range(1, max_iter + 1):
        m = np.einsum("in,in->n", q, np.linalg.solve((q * u) @ q.T, q))
        j = int(np.argmax(m))
        support = np.flatnonzero(u > 0)
        k = int(support[np.argmin(m[support])])
        up, down = m[j] / (d + 1) - 1.0, 1.0 - m[k] / (d + 1)
        gap = max(up, down)
        if gap <= tol or iteration == max_iter:  # stop before moving, so the gap is the returned iterate's
            break
        if up >= down:  # move weight towards the worst-covered point
            beta = (m[j] - (d + 1)) / ((d + 1) * (m[j] - 1.0))
            u *= 1.0 - beta
            u[j] += beta
        else:  # move weight away from the best-covered support point
            drop = u[k] / (1.0 - u[k])
            beta = min((d + 1 - m[k]) / ((d + 1) * (m[k] - 1.0)), drop)
            u *= 1.0 + beta
            u[k] = 0.0 if beta == drop else u[k] - beta
    centre = p.T @ u
    covariance = (p.T * u) @ p - np.outer(centre, centre)
    a = np.linalg.inv(covariance) / d
    offsets = p - centre
    a /= np.einsum("ni,ij,nj->n", offsets, a, offsets).max()  # the farthest point on the surface
    return Ellipsoid(centre * scale + shift, a / scale**2, iteration, float(gap))


def ellipsoid_volume(a: np.ndarray) -> float:
    """Volume of ``{x : xᵀ A x <= 1}`` for a (d, d) positive-definite A."""
    d = a.shape[0]
    unit_ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
    return unit_ball / math.sqrt(np.linalg.det(a))


def bevr(mask: np.ndarray, tol: float = 1e-7) -> float:
    """Bounding-ellipsoid volume ratio of a (S, H, W) mask: voxel count / enclosing-ellipsoid volume.

    The ellipsoid encloses every corner of every voxel, so the ratio is <= 1; a
    single voxel or any axis-aligned box of voxels gives 2/(π√3) ≈ 0.3676.
    Invariant to scaling any axis (affine), hence to the unknown voxel spacing.
    Khachiyan's algorithm stops at ``tol`` or after its iteration limit; the ellipsoid it returns
    encloses every point either way (it is scaled to), so a result whose gap is still at most
    ``MAX_BEVR_GAP`` (volume within about 2e-5 relative of the minimum, far below any BEVR difference the
    study tests) is used. That happened once, on a predicted mask of the 5-fold CV.
    """
    mask = np.asarray(mask, dtype=bool)
    fit = minimum_volume_ellipsoid(voxel_hull_vertices(mask), tol=tol)
    accepted = max(tol, MAX_BEVR_GAP)
    if not fit.converged(accepted):
        raise ValueError(f"bevr(): the enclosing ellipsoid of a {int(mask.sum())}-voxel mask reached an "
                         f"optimality gap of {fit.gap:.1e} in {fit.iterations} iterations, above the {accepted:.0e} "
                         f"bevr() accepts (MAX_BEVR_GAP); its BEVR would be unreliable")
    return float(mask.sum()) / ellipsoid_volume(fit.a)


MAX_BEVR_GAP = 1e-5  # the loosest ellipsoid fit bevr() accepts when Khachiyan's algorithm stops before tol


# ----------------------------------------------------------------------------
# ASD and MF: the outer boundary of the largest slice (2-D)
# ----------------------------------------------------------------------------

def largest_slice(mask: np.ndarray) -> int:
    """Index of the slice with the most foreground pixels (the first of equals)."""
    mask = np.asarray(mask, dtype=bool)
    return int(np.argmax(mask.reshape(len(mask), -1).sum(axis=1)))


def boundary(region: np.ndarray, n_points: int = 360):
    """Outer boundary of a 2-D region, resampled: (H, W) bool -> ((n, 2) points, (2,) centroid).

    The region is reduced to its largest 4-connected component with holes
    filled; its outline is the marching-squares contour at level 0.5
    (`skimage.measure.find_contours`, pixel centres at integer coordinates),
    resampled at ``n_points`` positions equally spaced in arc length. The
    centroid is that of the filled component's pixels. Points are (row, column).
    """
    from skimage import measure

    region = np.asarray(region, dtype=bool)
    if region.ndim != 2 or not region.any():
        raise ValueError(f"boundary() needs a non-empty (H, W) region, got shape {region.shape}")
    labels, count = ndimage.label(region)
    if count > 1:
        region = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    region = ndimage.binary_fill_holes(region)
    centroid = np.array(ndimage.center_of_mass(region))
    contours = measure.find_contours(np.pad(region, 1).astype(float), 0.5)
    contour = max(contours, key=len) - 1.0  # undo the padding; closed: first point == last point
    steps = np.hypot(*np.diff(contour, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.arange(n_points) * arc[-1] / n_points
    points = np.stack([np.interp(at, arc, contour[:, 0]), np.interp(at, arc, contour[:, 1])], axis=1)
    return points, centroid


def angular_standard_deviation(points: np.ndarray, centroid: np.ndarray, sectors: int = 10) -> float:
    """ASD: mean over equal angular sectors around the centroid of the std of the boundary's radial distance.

    Population standard deviation (ddof=0) per sector; sectors with fewer than
    two boundary samples (possible only when the centroid lies outside the
    region) are left out of the mean. Pixels, not normalised.
    """
    offsets = points - centroid
    radius = np.hypot(offsets[:, 0], offsets[:, 1])
    angle = np.mod(np.arctan2(offsets[:, 0], offsets[:, 1]), 2 * np.pi)
    sector = np.minimum((angle / (2 * np.pi / sectors)).astype(int), sectors - 1)
    stds = [radius[sector == s].std() for s in range(sectors) if np.count_nonzero(sector == s) >= 2]
    return float(np.mean(stds)) if stds else math.nan


def margin_fluctuation(points: np.ndarray, centroid: np.ndarray, window: int = 11) -> float:
    """MF: std of (radial distance / its mean) minus its circular moving average over ``window`` samples."""
    radius = np.hypot(*(points - centroid).T)
    radius = radius / radius.mean()
    half = window // 2
    padded = np.concatenate([radius[-half:], radius, radius[:half]]) if half else radius
    smooth = np.convolve(padded, np.full(window, 1.0 / window), mode="valid")
    return float(np.std(radius - smooth))


# ----------------------------------------------------------------------------
# One patient
# ----------------------------------------------------------------------------

def feature_names(settings: ShapeSettings) -> tuple[str, ...]:
    """Columns :func:`shape_features` fills: the three features, then the sensitivity variants."""
    return ("bevr", "asd", "mf", f"mf_w{settings.mf_window_alt}", "asd_rel")


def shape_features(mask: np.ndarray, settings: ShapeSettings = ShapeSettings()) -> dict:
    """All features of one patient's (S, H, W) mask (any dtype, foreground where > 0).

    Computed on the largest 3-D connected component (6-connected, as the
    protocol's DSC). Returns floats ``bevr``, ``asd``, ``mf``, ``mf_w<alt>``
    (MF with the second window) and ``asd_rel`` (ASD divided by the mean radial
    distance), ints ``voxels`` (component), ``mask_voxels`` (whole mask) and
    ``slice`` (index of the largest slice, -1 when empty). An empty mask gives
    NaN features.
    """
    from tfseg.postprocess import largest_connected_component  # the protocol's definition (no keras)

    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"shape_features() expects one (S, H, W) volume, got shape {mask.shape}")
    out = dict.fromkeys(feature_names(settings), math.nan)
    out.update(voxels=0, mask_voxels=int(mask.sum()), slice=-1)
    if not mask.any():
        return out
    tumour = largest_connected_component(mask)
    index = largest_slice(tumour)
    points, centroid = boundary(tumour[index], settings.boundary_points)
    asd = angular_standard_deviation(points, centroid, settings.sectors)
    out.update(
        bevr=bevr(tumour, settings.khachiyan_tol),
        asd=asd,
        mf=margin_fluctuation(points, centroid, settings.mf_window),
        asd_rel=asd / float(np.hypot(*(points - centroid).T).mean()),
        voxels=int(tumour.sum()),
        slice=index,
    )
    out[f"mf_w{settings.mf_window_alt}"] = margin_fluctuation(points, centroid, settings.mf_window_alt)
    return out
