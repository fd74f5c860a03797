"""Tiny ONNX graphs with the annotation models' exact I/O, whose outputs are values the caller chooses.

Each graph computes `output = constant + 0 * sum(input)`: the input is really consumed (onnxruntime checks its
shape and type), and the output is known in advance. Tests and the offline demo place a face where they want it
and check the detector's letterbox and the landmark crops end to end. Built with `onnx.helper`, opset 17; nothing
is downloaded.

    write_yolo_detector(p, [[32, 32, 20, 10, 0.9]], input_size=(64, 64))       # one face, input pixels
    write_landmarker54(p, points_yx)                                            # (54, 2) in [0, 1] of the crop
    write_landmarker203(p, points_xy)                                           # (203, 2) in [0, 1] of the crop
    write_bad_model(p, input_shape=(1, 3, 64), output_shapes=[(1, 4, 6)])       # for contract errors
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OPSET = 17


def _save(path: str | os.PathLike, input_name: str, input_shape: Sequence[int | str],
          outputs: Sequence[tuple[str, np.ndarray]]) -> Path:
    """One float input, outputs[i] = constant_i + 0 * ReduceSum(input); written to a temp name, then renamed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceSum", [input_name], ["_sum"], keepdims=0),
        helper.make_node("Constant", [], ["_zero"], value=numpy_helper.from_array(np.zeros((), np.float32), "_zero")),
        helper.make_node("Mul", ["_sum", "_zero"], ["_nothing"]),
    ]
    graph_outputs = []
    for name, value in outputs:
        value = np.asarray(value, dtype=np.float32)
        const = f"_{name}_value"
        nodes.append(helper.make_node("Constant", [], [const], value=numpy_helper.from_array(value, const)))
        nodes.append(helper.make_node("Add", [const, "_nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                          list(input_shape))], graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="thermvision-db")
    model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def write_yolo_detector(path: str | os.PathLike, boxes_cxcywh_scores: Sequence[Sequence[float]],
                        input_size: tuple[int, int] = (64, 64), kind: str = "yolov5",
                        points5: Sequence[Sequence[Sequence[float]]] | None = None, num_classes: int = 1) -> Path:
    """A detector whose output rows are the given faces.

    boxes_cxcywh_scores: rows [cx, cy, w, h, score] in letterboxed input pixels; the score goes to `obj` and the
    class score is 1, so the decoded score equals it. kind "yolov5": output (1, N, 5 + num_classes) with face as
    class 0; "yolo5face": output (1, N, 16) = [cx, cy, w, h, obj, x1, y1, ..., x5, y5, cls], `points5` (N, 5, 2)
    in input pixels (zeros when omitted). input_size is (H, W).
    """
    rows = np.asarray(boxes_cxcywh_scores, dtype=np.float32).reshape(-1, 5)
    n = len(rows)
    if kind == "yolov5":
        cls = np.zeros((n, num_classes), np.float32)
        cls[:, 0] = 1
        out = np.concatenate([rows, cls], 1)
    elif kind == "yolo5face":
        pts = np.zeros((n, 10), np.float32) if points5 is None else np.asarray(points5, np.float32).reshape(n, 10)
        out = np.concatenate([rows, pts, np.ones((n, 1), np.float32)], 1)
    else:
        raise ValueError(f"kind must be 'yolov5' or 'yolo5face', got {kind!r}")
    h, w = input_size
    return _save(path, "images", (1, 3, h, w), [("output0", out[None])])


def write_landmarker54(path: str | os.PathLike, points_yx_normalised: np.ndarray, input_size: int = 256,
                       output_shape: str = "flat") -> Path:
    """SF-TL54-style model: input (1, 1, S, S) gray; output (1, 108) ("flat") or (1, 54, 2) ("pairs") of (y, x)."""
    pts = np.asarray(points_yx_normalised, dtype=np.float32).reshape(54, 2)
    value = pts.reshape(1, 108) if output_shape == "flat" else pts[None]
    return _save(path, "input", (1, 1, input_size, input_size), [("landmarks", value)])


def write_landmarker203(path: str | os.PathLike, points_xy_normalised: np.ndarray) -> Path:
    """LivePortrait landmark.onnx-style: input (1, 3, 224, 224) RGB; three outputs, the third (1, 406) = 203 (x, y)."""
    pts = np.asarray(points_xy_normalised, dtype=np.float32).reshape(1, 406)
    return _save(path, "input", (1, 3, 224, 224),
                 [("out0", np.zeros((1, 214), np.float32)), ("out1", np.zeros((1, 2), np.float32)), ("out2", pts)])


def write_bad_model(path: str | os.PathLike, input_shape: Sequence[int | str],
                    output_shapes: Sequence[Sequence[int]], input_name: str = "input") -> Path:
    """Any input shape and any number of zero outputs of the given shapes (contract-error tests)."""
    return _save(path, input_name, input_shape,
                 [(f"out{i}", np.zeros(tuple(s), np.float32)) for i, s in enumerate(output_shapes)])
