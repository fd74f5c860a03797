"""Downstream benchmarks: does a corpus help a gender classifier, a face detector, a 54-point landmarker?

`thermvision-db benchmark gender|detect|landmarks`; each task writes results.json, report.md and plots.
"""
