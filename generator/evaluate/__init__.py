"""Evaluation of a corpus: box QC, temporal stability, identity, FID/KID, side-by-side comparison."""

from generator.vision_check import block_broken_torchvision

block_broken_torchvision()  # before torchmetrics/transformers: a torchvision that cannot import is marked absent
