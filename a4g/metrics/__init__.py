"""Evaluation metrics: FVD (I3D, `fvd`), per-frame FID (Inception, `fid`), and IICR (`iicr`, `iicr_report`).

Submodules are imported explicitly (e.g. `from a4g.metrics.fvd import compute_fvd`) so that importing
one metric never pulls in the others' dependencies.
"""
