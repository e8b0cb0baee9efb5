"""Radiogenomics: tumour shape features vs genomic subtypes (Buda, Saha & Mazurowski 2019).

    python -m tfseg.radiogenomics --data kaggle_3m --masks manual --out rg/
    python -m tfseg.radiogenomics --data kaggle_3m --masks predictions/ --out rg_pred/

Reproduces the analysis the kaggle_3m set was published with: Buda, Saha &
Mazurowski, "Association of genomic subtypes of lower-grade gliomas with shape
features automatically extracted by a deep learning algorithm", Comput Biol
Med 109:218–225 (2019). Modules: ``shape`` (the three features), ``fisher``
(the exact test), ``masks`` (reading masks and data.csv), ``study`` (the
tables, the figure and the command line).

Features, per patient, from the largest 3-D connected component of its mask
(6-connected, `tfseg.postprocess.largest_connected_component`):

- **BEVR**, bounding-ellipsoid volume ratio: voxel count / volume of the
  minimum-volume ellipsoid enclosing every corner of every voxel. Khachiyan's
  algorithm (with Todd–Yildirim away steps) on the convex-hull vertices of the
  voxel corners, stopped at tolerance 1e-7 on both optimality conditions, then
  scaled so that the farthest vertex lies on it: the ellipsoid always
  encloses, so BEVR <= 1, and it is within ~2e-7 (relative) of the exact
  ratio. A voxel or any axis-aligned box gives 2/(π√3) ≈ 0.3676. BEVR is
  affine-invariant, so the unknown voxel spacing does not matter.
- **ASD**, angular standard deviation, and **MF**, margin fluctuation, on the
  slice of the component with the largest area (first of equals). Boundary
  (not specified by the paper; our choice): the largest 4-connected 2-D
  component of that slice, holes filled, outlined by marching squares at level
  0.5 (`skimage.measure.find_contours`) and resampled at 360 points equally
  spaced in arc length, so every stretch of boundary weighs the same. The
  centre is the centroid of the filled component.
  - ASD: for 10 sectors of 36° (the first starting at the +column direction),
    the population standard deviation of the radial distances of the boundary
    samples in it; ASD is their mean, in pixels (kaggle_3m has no pixel
    spacing). Not normalised by size, as the paper defines it; ``asd_rel``
    (ASD / mean radial distance) is reported as a sensitivity variant.
  - MF: radial distances divided by their mean; MF is the standard deviation
    of their difference to a circular moving average over 11 samples (about 3%
    of the perimeter). The paper gives no window: ``mf_w31`` (31 samples,
    about 9%) is reported as a sensitivity variant.

Statistics: each feature is split at its median over the patients with a
non-empty mask (row 0: <= median, row 1: above); for each genomic column of
data.csv (RNASeq, Methylation, miRNA, CN, COC, Oncosign cluster), patients
without a value are dropped from that test only, and the 2×k table gets a
two-sided exact Fisher–Freeman–Halton test (full enumeration, `fisher`).
Bonferroni: the paper tested "10 hypotheses" without listing them here, and
called p < 0.005 = 0.05/10 significant; we report p·10 (significant when
< 0.05, the paper's rule) and, for the full family of 3 features × 6 columns,
p·18. Sensitivity variants are not part of either family.

Patients whose mask is empty get NaN features and are left out of every test;
patients without a data.csv row likewise (both are counted in summary.json).
"""
