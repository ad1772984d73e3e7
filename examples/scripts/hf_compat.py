#!/usr/bin/env python3
"""Load a staged checkpoint the way transformers' GPT2LMHeadModel.from_pretrained reads it, into an independent
plain-PyTorch GPT-2 (packages/trainer-ort/scripts/make_fixtures.py), and print its loss on a token file.

transformers itself cannot be installed here (no PyPI), so this checks what it would: config.json read with
GPT2Config's defaults, model.safetensors or the sharded index, `{"format": "pt"}` metadata, every parameter
under GPT2LMHeadModel's name with its exact shape, no unknown tensors, a tied or stored lm_head.
Compare the printed loss with `staged eval <dir> --data <file.bin> --context T --max-blocks K --json`.

Usage: /usr/bin/python3 examples/scripts/hf_compat.py <checkpoint-dir> <tokens.bin> <T> <K>   (needs python3-torch)
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "packages", "trainer-ort", "scripts"))
from make_fixtures import loss_fn, param_names  # noqa: E402

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
GPT2_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                     layer_norm_epsilon=1e-5, tie_word_embeddings=True, activation_function="gelu_new")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    assert meta.get("format") == "pt", f"{path}: transformers needs metadata format 'pt', got {meta}"
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def load_weights(ckpt):
    index = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(index):
        weights = {}
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            weights.update(read_safetensors(os.path.join(ckpt, shard)))
        return weights
    return read_safetensors(os.path.join(ckpt, "model.safetensors"))


def main(ckpt, tokens_file, T, K):
    raw = json.load(open(os.path.join(ckpt, "config.json")))
    assert raw.get("model_type") == "gpt2" and raw.get("architectures") == ["GPT2LMHeadModel"], raw
    cfg = {**GPT2_DEFAULTS, **raw}
    assert cfg["activation_function"] in ("gelu_new", "gelu_pytorch_tanh"), cfg["activation_function"]
    weights = load_weights(ckpt)
    d, f = cfg["n_embd"], cfg["n_inner"] or 4 * cfg["n_embd"]
    expected = {"transformer.wte.weight": (cfg["vocab_size"], d), "transformer.wpe.weight": (cfg["n_positions"], d)}
    for name in param_names(cfg):
        if name not in expected:
            suffix = name.split(".", 3)[-1] if ".h." in name else name
            expected[name] = {"attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,), "attn.c_proj.weight": (d, d),
                              "mlp.c_fc.weight": (d, f), "mlp.c_fc.bias": (f,), "mlp.c_proj.weight": (f, d),
                              "lm_head.weight": (cfg["vocab_size"], d)}.get(suffix, (d,))
    unexpected = set(weights) - set(expected) - {"lm_head.weight"}
    assert not unexpected, f"tensors GPT2LMHeadModel does not have: {sorted(unexpected)[:5]}"
    for name, shape in expected.items():
        assert name in weights, f"missing {name}"
        assert tuple(weights[name].shape) == shape, f"{name}: {tuple(weights[name].shape)} != {shape}"
    P = {n: weights[n].to(torch.float64) for n in expected}
    ids = torch.frombuffer(bytearray(open(tokens_file, "rb").read()), dtype=torch.int16).to(torch.int64) & 0xFFFF
    blocks = ids[: K * T].reshape(K, T)
    with torch.no_grad():
        loss = loss_fn(cfg, P, blocks)
    print(json.dumps({"loss": float(loss), "blocks": K, "context": T, "parameters": sum(p.numel() for p in P.values())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
