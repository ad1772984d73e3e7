#!/usr/bin/env python3
"""Reference fixtures for @staged/trainer-ort, computed by an independent GPT-2 in plain PyTorch.

Run once (not by tests or CI): `apt-get install -y python3-torch` then
`/usr/bin/python3 packages/trainer-ort/scripts/make_fixtures.py`. Writes fixtures/gpt2-tiny{,-untied}.safetensors:
the initial weights, the batches, the loss and every gradient of the first batch, and the parameters and
AdamW moments after 3 steps (torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW, foreach=False).
The model follows HF GPT2LMHeadModel (modeling_gpt2.py): Conv1D weights [in, out], fused q|k|v, gelu_new,
causal attention scaled by 1/sqrt(head_dim), tied (or untied) output layer, loss = mean next-token CE.
Computed in float64 so the fixture is the exact function, stored as float32.
"""
import json
import math
import os
import struct

import torch

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
HP = dict(lrs=[3e-2, 2e-2, 1e-2], betas=(0.9, 0.95), eps=1e-4, weight_decay=0.1)


def param_names(cfg):
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        names += [p + n for n in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                  "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                                  "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]]
    names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    return names


def init(cfg, seed):
    d, v, ctx, f = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_inner"] or 4 * cfg["n_embd"]
    g = torch.Generator().manual_seed(seed)
    shapes = {"transformer.wte.weight": (v, d), "transformer.wpe.weight": (ctx, d),
              "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,), "lm_head.weight": (v, d)}
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "attn.c_attn.weight": (d, 3 * d),
                       p + "attn.c_attn.bias": (3 * d,), p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                       p + "ln_2.weight": (d,), p + "ln_2.bias": (d,), p + "mlp.c_fc.weight": (d, f),
                       p + "mlp.c_fc.bias": (f,), p + "mlp.c_proj.weight": (f, d), p + "mlp.c_proj.bias": (d,)})
    params = {}
    for n in param_names(cfg):
        shape = shapes[n]
        # Non-trivial norms and biases so that every gradient is exercised.
        if n.endswith("ln_1.weight") or n.endswith("ln_2.weight") or n.endswith("ln_f.weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            t = 0.05 * torch.randn(shape, generator=g)
        else:
            t = 0.2 * torch.randn(shape, generator=g)
        params[n] = t.float().double().requires_grad_()  # float32-representable start values
    return params


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def loss_fn(cfg, P, ids):
    B, T = ids.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    hd = d // H
    eps = cfg["layer_norm_epsilon"]
    ln = lambda x, w, b: torch.nn.functional.layer_norm(x, (d,), w, b, eps)
    h = P["transformer.wte.weight"][ids] + P["transformer.wpe.weight"][torch.arange(T)]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        p = lambda n: P[f"transformer.h.{i}.{n}"]
        a = ln(h, p("ln_1.weight"), p("ln_1.bias"))
        qkv = a @ p("attn.c_attn.weight") + p("attn.c_attn.bias")  # Conv1D: x W + b
        q, k, v = qkv.split(d, dim=2)
        split = lambda t: t.view(B, T, H, hd).permute(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        w = q @ k.transpose(-1, -2) / (hd ** 0.5)
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min))
        o = (torch.softmax(w, dim=-1) @ v).permute(0, 2, 1, 3).reshape(B, T, d)
        h = h + o @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        m = ln(h, p("ln_2.weight"), p("ln_2.bias"))
        h = h + gelu_new(m @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")) @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    h = ln(h, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"])
    out = P["transformer.wte.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    logits = h @ out.t()
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make(name, cfg, seed, clip):
    HP["clip"] = clip
    B, T = 2, 8
    P = init(cfg, seed)
    names = param_names(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    batches = torch.randint(0, cfg["vocab_size"], (len(HP["lrs"]), B, T), generator=g)
    tensors = {"ids": batches}
    tensors.update({f"param.{n}": P[n].float() for n in names})

    loss = loss_fn(cfg, P, batches[0])
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    tensors.update({f"grad.{n}": gr.float() for n, gr in zip(names, grads)})

    decay = [P[n] for n in names if P[n].dim() == 2]
    no_decay = [P[n] for n in names if P[n].dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=HP["lrs"][0], betas=HP["betas"], eps=HP["eps"], foreach=False)
    losses, norms = [], []
    for s, lr in enumerate(HP["lrs"]):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        l = loss_fn(cfg, P, batches[s])
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([P[n] for n in names], HP["clip"])))
        losses.append(float(l))
        opt.step()
    # The clip norm is chosen so that some steps clip and some do not.
    assert any(nm > clip for nm in norms) and any(nm <= clip for nm in norms), f"clip {clip}, norms {norms}"
    for n in names:
        st = opt.state[P[n]]
        tensors[f"step3.param.{n}"] = P[n].float()
        tensors[f"step3.exp_avg.{n}"] = st["exp_avg"].float()
        tensors[f"step3.exp_avg_sq.{n}"] = st["exp_avg_sq"].float()
    meta = {"config": json.dumps(cfg), "loss": repr(float(loss)), "losses": json.dumps(losses),
            "grad_norms": json.dumps(norms), "hyperparameters": json.dumps(HP), "torch": torch.__version__}
    write_safetensors(os.path.join(OUT, f"{name}.safetensors"), tensors, meta)
    print(name, "loss", float(loss), "losses", losses, "grad norms", norms)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    base = {"model_type": "gpt2", "n_layer": 2, "n_embd": 16, "n_head": 2, "n_inner": None, "vocab_size": 32,
            "n_positions": 16, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "tie_word_embeddings": True}
    make("gpt2-tiny", base, 1234, 3.0)
    make("gpt2-tiny-untied", {**base, "tie_word_embeddings": False, "n_inner": 24, "layer_norm_epsilon": 1e-4}, 4321, 2.0)
