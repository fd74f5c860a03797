"""Stage 3, annotation: boxes and 54 landmarks for every generated frame (propagated, or from ONNX models)."""
