#!/usr/bin/env python3
"""Load the files scripts/write-check-files.mjs wrote with real torch, and report what torch says.

Not part of the test suite (it needs torch). Usage:
    node scripts/write-check-files.mjs /tmp/torch-check && python3 scripts/check-with-torch.py /tmp/torch-check

For every file: torch.load(weights_only=True), then (except for evil.pt) torch.load(weights_only=False) with the
values compared to what the writer was given, or for a written-back Trainer file to torch's load of the original
(tensors with torch.equal, and dtypes, shapes, strides, offsets and storage sharing; other values with their Python
types: an int is not a float, a tuple not a list). evil.pt is only ever loaded with weights_only=True. Exit status 1
if anything differs from what is expected.
"""
import json
import os
import sys

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
          "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
failures = []


def same(a, b, where):
    """Python values equal with their types; tensors equal with dtype, shape, stride and offset."""
    if type(a) is not type(b):
        failures.append(f"{where}: {type(a).__name__} vs {type(b).__name__}")
        return
    if isinstance(a, torch.Tensor):
        if (a.dtype, a.shape, a.stride(), a.storage_offset()) != (b.dtype, b.shape, b.stride(), b.storage_offset()) or not torch.equal(a, b):
            failures.append(f"{where}: tensors differ")
    elif isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            failures.append(f"{where}: keys {list(a.keys())[:5]} vs {list(b.keys())[:5]}")
            return
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            failures.append(f"{where}: {len(a)} vs {len(b)} items")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif a != b and not (a != a and b != b):
        failures.append(f"{where}: {a!r} vs {b!r}")


def plain(v):
    """A loaded value as JSON-like data, for comparing with the manifest."""
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
        return str(v)
    if isinstance(v, bytes):
        return list(v)
    return v


def load(path, weights_only):
    try:
        return True, torch.load(path, weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - reported, whatever torch raises
        text = " ".join(str(e).split())
        return False, text[text.find("WeightsUnpickler error"):] if "WeightsUnpickler error" in text else text[-200:]


def main(folder):
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    print(f"torch {torch.__version__}")
    for m in manifest:
        path = os.path.join(folder, m["file"])
        ok, wo = load(path, True)
        print(f"\n{m['file']}: weights_only=True -> {'loaded' if ok else 'refused: ' + wo}")
        if "same_as" in m:
            ok0, wo0 = load(m["same_as"], True)
            print(f"  the original torch wrote, weights_only=True -> {'loaded' if ok0 else 'refused: ' + wo0}")
            if ok0 != ok:
                failures.append(f"{m['file']}: weights_only=True {'loads' if ok else 'refuses'} it but {'loads' if ok0 else 'refuses'} the original")
        if m.get("evil"):
            if ok:
                failures.append(f"{m['file']}: torch loaded os.system with weights_only=True")
            continue
        loaded_wo = wo if ok else None
        ok, v = load(path, False)
        if not ok:
            failures.append(f"{m['file']}: weights_only=False failed: {v}")
            continue
        if loaded_wo is not None:
            same(loaded_wo, v, f"{m['file']} (weights_only=True vs False)")
        if "same_as" in m:
            same(v, torch.load(m["same_as"], weights_only=False), m["file"])
            print(f"  weights_only=False: equal to torch's load of {os.path.basename(os.path.dirname(m['same_as']))}/{os.path.basename(m['same_as'])}")
        for name, t in m.get("tensors", {}).items():
            x = v[name]
            want = torch.tensor([int(s) if isinstance(s, str) else s for s in t["values"]], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
            same(x, want, f"{m['file']}[{name!r}]")
        for name, want in m.get("values", {}).items():
            if plain(v[name]) != want:
                failures.append(f"{m['file']}[{name!r}]: {v[name]!r} vs {want!r}")
        if "meta" in m and plain(v["meta"]) != m["meta"]:
            failures.append(f"{m['file']}['meta']: {v['meta']!r}")
        if m.get("views"):
            a, b = v["a"], v["b"]
            if a.storage().data_ptr() != b.storage().data_ptr() or a.storage_offset() != 2 or b.stride() != (1, 3) or b.is_contiguous():
                failures.append(f"{m['file']}: views not kept")
            if a.tolist() != [[2, 3, 4], [5, 6, 7]] or b.tolist() != [[0, 3], [1, 4], [2, 5]]:
                failures.append(f"{m['file']}: view values {a.tolist()} {b.tolist()}")
        if "same_as" not in m:
            print(f"  weights_only=False: values as written")
    print()
    for f in failures:
        print("FAIL", f)
    print("all as expected" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/torch-check"))
