"""Evaluation of a corpus: box QC, temporal stability, identity, FID/KID, side-by-side comparison."""
