#!/usr/bin/env python3
"""Run the ONNX checker on an export of `staged export` (or the cache `staged generate` made): every ONNX file
under <dir>/onnx, with full_check=True (strict shape and type inference of every node) and its external data
checked where it has some. Also prints the opsets, the inputs and outputs with their dynamic axes, and the
operators used, and fails on any node outside the standard domain.

Usage: /usr/bin/python3 examples/scripts/onnx_check.py <export-dir> [...]   (Debian: apt-get install python3-onnx)
"""
import os
import sys
from collections import Counter

import onnx


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check(path):
    # A path (not a loaded model) lets the checker find external data and models over 2 GB.
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    ops = Counter(n.op_type for n in model.graph.node)
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise SystemExit(f"{path}: operators outside the standard domain: {', '.join(foreign)}")
    external = sum(1 for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    print(f"{path}: OK (onnx {onnx.__version__} checker, full_check=True); IR {model.ir_version}, opsets {opsets}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers ({external} in external data)")
    for v in model.graph.input[:3]:
        print(f"  input  {v.name} {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)} {dims(v)}")
    if len(model.graph.input) > 3:
        v = model.graph.input[3]
        print(f"  input  {v.name} ... ({len(model.graph.input) - 3} cache inputs) "
              f"{onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)} {dims(v)}")
    for v in model.graph.output[:2]:
        print(f"  output {v.name} {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)} {dims(v)}")
    print("  operators: " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items())))


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    for d in argv:
        folder = os.path.join(d, "onnx")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".onnx")) if os.path.isdir(folder) else []
        if not files:
            raise SystemExit(f"{d}: no ONNX files under {folder}")
        for f in files:
            check(os.path.join(folder, f))


if __name__ == "__main__":
    main(sys.argv[1:])
