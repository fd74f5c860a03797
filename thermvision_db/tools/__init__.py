"""Tools on loaded data: exports (COCO, YOLO, Parquet), PyTorch helpers, label names, pictures, label QC."""
