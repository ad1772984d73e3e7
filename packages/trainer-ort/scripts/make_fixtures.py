#!/usr/bin/env python3
"""Reference fixtures for @staged/trainer-ort, computed by independent models in plain PyTorch (no transformers).

Run once (not by tests or CI): `apt-get install -y python3-torch` then
`/usr/bin/python3 packages/trainer-ort/scripts/make_fixtures.py [name ...]` (default: every fixture). Writes
fixtures/<name>.safetensors: the initial weights, the batches, the loss and every gradient of the first batch,
and the parameters and AdamW moments after 3 steps (torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW,
foreach=False).

- gpt2-tiny, gpt2-tiny-untied follow HF GPT2LMHeadModel (modeling_gpt2.py): Conv1D weights [in, out], fused
  q|k|v, gelu_new, causal attention scaled by 1/sqrt(head_dim), tied (or untied) output layer.
- llama-tiny (grouped-query attention, 4 query heads on 2 key/value heads, untied), llama-tiny-tied (tied,
  one key/value head per query head) and qwen2-tiny (biases on q, k, v; 4 query heads on 1 key/value head)
  follow HF LlamaForCausalLM / Qwen2ForCausalLM (modeling_llama.py, modeling_qwen2.py): torch Linear weights
  [out, in], RMSNorm, rotary embeddings with rotate_half (tables in float32, as HF computes them), repeat_kv,
  SwiGLU MLP (silu(gate) * up -> down).

- gpt2-tiny-dropout (embd_pdrop 0.1, attn_pdrop 0.2, resid_pdrop 0.3) and llama-tiny-dropout (attention_dropout
  0.25): the loss and every gradient of one batch with fixed dropout masks (stored as mask.<site>: 0 or 1/(1 - p),
  named and shaped as the training graph's `dropout.<site>` inputs), applied where HF's modeling_gpt2.py /
  modeling_llama.py apply dropout: GPT-2 on wte + wpe (embed), on the attention probabilities (h<i>.attn_probs),
  on the attention's and the MLP's c_proj outputs before the residual adds (h<i>.attn_out, h<i>.mlp_out);
  Llama on the attention probabilities only.

The loss is the mean next-token cross-entropy. Computed in float64 so the fixture is the exact function,
stored as float32. The configs without dropout say so (GPT-2's HF default is 0.1).
"""
import json
import math
import os
import struct
import sys

import torch

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
HP = dict(lrs=[3e-2, 2e-2, 1e-2], betas=(0.9, 0.95), eps=1e-4, weight_decay=0.1)
# Chosen so that some of the 3 steps clip and some do not (asserted in make).
CLIP_LLAMA, CLIP_TIED, CLIP_QWEN2 = 3.0, 4.0, 3.1


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


def dropper(masks):
    """x * masks[site] (viewed as x's shape) where the fixture has a mask for the site, else x."""
    return lambda x, site: x * masks[site].view(x.shape) if masks and site in masks else x


def loss_fn(cfg, P, ids, masks=None):
    drop = dropper(masks)
    B, T = ids.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    hd = d // H
    eps = cfg["layer_norm_epsilon"]
    ln = lambda x, w, b: torch.nn.functional.layer_norm(x, (d,), w, b, eps)
    h = drop(P["transformer.wte.weight"][ids] + P["transformer.wpe.weight"][torch.arange(T)], "embed")
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
        o = (drop(torch.softmax(w, dim=-1), f"h{i}.attn_probs") @ v).permute(0, 2, 1, 3).reshape(B, T, d)
        h = h + drop(o @ p("attn.c_proj.weight") + p("attn.c_proj.bias"), f"h{i}.attn_out")
        m = ln(h, p("ln_2.weight"), p("ln_2.bias"))
        h = h + drop(gelu_new(m @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")) @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias"), f"h{i}.mlp_out")
    h = ln(h, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"])
    out = P["transformer.wte.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    logits = h @ out.t()
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def llama_dims(cfg):
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or H
    return d, H, kv, cfg.get("head_dim") or d // H, cfg["intermediate_size"]


def llama_qkv_bias(cfg):
    # Qwen2 always has q/k/v biases; Llama and Mistral per attention_bias (off in these fixtures).
    return cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)


def llama_shapes(cfg):
    d, H, kv, hd, f = llama_dims(cfg)
    v = cfg["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (d,)
        for part, n in (("q", H * hd), ("k", kv * hd), ("v", kv * hd)):
            shapes[p + f"self_attn.{part}_proj.weight"] = (n, d)  # torch Linear [out, in]
            if llama_qkv_bias(cfg):
                shapes[p + f"self_attn.{part}_proj.bias"] = (n,)
        shapes[p + "self_attn.o_proj.weight"] = (d, H * hd)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        shapes[p + "mlp.gate_proj.weight"] = (f, d)
        shapes[p + "mlp.up_proj.weight"] = (f, d)
        shapes[p + "mlp.down_proj.weight"] = (d, f)
    shapes["model.norm.weight"] = (d,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, d)
    return shapes


def llama_init(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for n, shape in llama_shapes(cfg).items():
        # Non-trivial norms and biases so that every gradient is exercised.
        if n.endswith("norm.weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            t = 0.05 * torch.randn(shape, generator=g)
        else:
            t = 0.2 * torch.randn(shape, generator=g)
        params[n] = t.float().double().requires_grad_()
    return params


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotary_tables(T, hd, theta):
    # HF LlamaRotaryEmbedding (rope_type "default") computes inv_freq, the angles and cos/sin in float32.
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(torch.float32) / hd))
    angles = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().double(), emb.sin().double()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, n_rep):
    B, kv, T, hd = x.shape
    return x[:, :, None, :, :].expand(B, kv, n_rep, T, hd).reshape(B, kv * n_rep, T, hd)


def llama_loss(cfg, P, ids, masks=None):
    drop = dropper(masks)
    B, T = ids.shape
    d, H, kv, hd, _ = llama_dims(cfg)
    eps = cfg["rms_norm_eps"]
    cos, sin = rotary_tables(T, hd, cfg["rope_theta"])
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    linear = lambda x, name: x @ P[name + ".weight"].t() + (P[name + ".bias"] if name + ".bias" in P else 0)
    h = P["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(h, P[p + "input_layernorm.weight"], eps)
        q = linear(a, p + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
        k = linear(a, p + "self_attn.k_proj").view(B, T, kv, hd).transpose(1, 2)
        v = linear(a, p + "self_attn.v_proj").view(B, T, kv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // kv), repeat_kv(v, H // kv)
        w = (q @ k.transpose(2, 3)) * hd ** -0.5
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min))
        o = (drop(torch.softmax(w, dim=-1), f"h{i}.attn_probs") @ v).transpose(1, 2).reshape(B, T, H * hd)
        h = h + linear(o, p + "self_attn.o_proj")
        m = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        gate = linear(m, p + "mlp.gate_proj")
        h = h + linear(gate * torch.sigmoid(gate) * linear(m, p + "mlp.up_proj"), p + "mlp.down_proj")
    h = rms_norm(h, P["model.norm.weight"], eps)
    out = P["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    logits = h @ out.t()
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


MODELS = {
    "gpt2": (param_names, init, loss_fn),
    "llama": (lambda cfg: list(llama_shapes(cfg)), llama_init, llama_loss),
}
MODELS["qwen2"] = MODELS["llama"]


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
    names_of, init_of, loss_of = MODELS[cfg["model_type"]]
    HP["clip"] = clip
    B, T = 2, 8
    P = init_of(cfg, seed)
    names = names_of(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    batches = torch.randint(0, cfg["vocab_size"], (len(HP["lrs"]), B, T), generator=g)
    tensors = {"ids": batches}
    tensors.update({f"param.{n}": P[n].float() for n in names})

    loss = loss_of(cfg, P, batches[0])
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
        l = loss_of(cfg, P, batches[s])
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


def dropout_sites(cfg, B, T):
    """The training graph's dropout sites of p > 0 in its order, with their probability and shape."""
    if cfg["model_type"] == "gpt2":
        d, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
        rates = {"embed": cfg["embd_pdrop"], "attn_probs": cfg["attn_pdrop"], "attn_out": cfg["resid_pdrop"], "mlp_out": cfg["resid_pdrop"]}
        sites = [("embed", (B * T, d))] + [(f"h{i}.{s}", shape) for i in range(L)
                                           for s, shape in (("attn_probs", (B, H, T, T)), ("attn_out", (B * T, d)), ("mlp_out", (B * T, d)))]
    else:
        H, L = cfg["num_attention_heads"], cfg["num_hidden_layers"]
        rates = {"attn_probs": cfg["attention_dropout"]}
        sites = [(f"h{i}.attn_probs", (B, H, T, T)) for i in range(L)]
    return [(name, rates[name.split(".")[-1]], shape) for name, shape in sites if rates[name.split(".")[-1]] > 0]


def make_dropout(name, cfg, seed):
    """The loss and every gradient of one batch with fixed inverted-dropout masks (mask.<site>)."""
    names_of, init_of, loss_of = MODELS[cfg["model_type"]]
    B, T = 2, 8
    P = init_of(cfg, seed)
    names = names_of(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, cfg["vocab_size"], (1, B, T), generator=g)
    masks = {}
    for site, p, shape in dropout_sites(cfg, B, T):
        keep = torch.rand(shape, generator=g) >= p
        masks[site] = (keep.double() / (1 - p)).float().double()  # the float32 values the graph is fed
    loss = loss_of(cfg, P, ids[0], masks)
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    tensors = {"ids": ids}
    tensors.update({f"param.{n}": P[n].float() for n in names})
    tensors.update({f"mask.{s}": m.float() for s, m in masks.items()})
    tensors.update({f"grad.{n}": gr.float() for n, gr in zip(names, grads)})
    # Without the masks, for the check that they change the function.
    meta = {"config": json.dumps(cfg), "loss": repr(float(loss)), "loss_without_dropout": repr(float(loss_of(cfg, P, ids[0]))),
            "hyperparameters": json.dumps(HP), "torch": torch.__version__}
    write_safetensors(os.path.join(OUT, f"{name}.safetensors"), tensors, meta)
    print(name, "loss", float(loss), "masks", {s: list(m.shape) for s, m in masks.items()})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    base = {"model_type": "gpt2", "n_layer": 2, "n_embd": 16, "n_head": 2, "n_inner": None, "vocab_size": 32,
            "n_positions": 16, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "tie_word_embeddings": True, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0}
    # HF config.json fields of the Llama family (configuration_llama.py, configuration_qwen2.py).
    llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16, "intermediate_size": 24,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32,
             "max_position_embeddings": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
             "tie_word_embeddings": False}
    fixtures = {
        "gpt2-tiny": lambda: make("gpt2-tiny", base, 1234, 3.0),
        "gpt2-tiny-untied": lambda: make("gpt2-tiny-untied", {**base, "tie_word_embeddings": False, "n_inner": 24,
                                                              "layer_norm_epsilon": 1e-4}, 4321, 2.0),
        "llama-tiny": lambda: make("llama-tiny", llama, 2024, CLIP_LLAMA),
        "llama-tiny-tied": lambda: make("llama-tiny-tied", {**llama, "num_attention_heads": 2, "num_key_value_heads": 2,
                                                            "intermediate_size": 32, "rms_norm_eps": 1e-5,
                                                            "rope_theta": 1000.0, "tie_word_embeddings": True}, 2025, CLIP_TIED),
        "qwen2-tiny": lambda: make("qwen2-tiny", {**llama, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                                  "num_key_value_heads": 1, "rope_theta": 1000000.0,
                                                  "use_sliding_window": False}, 2026, CLIP_QWEN2),
        "gpt2-tiny-dropout": lambda: make_dropout("gpt2-tiny-dropout", {**base, "embd_pdrop": 0.1, "attn_pdrop": 0.2,
                                                                        "resid_pdrop": 0.3}, 1234),
        "llama-tiny-dropout": lambda: make_dropout("llama-tiny-dropout", {**llama, "attention_dropout": 0.25}, 2024),
    }
    for name in sys.argv[1:] or list(fixtures):
        if name not in fixtures:
            sys.exit(f"unknown fixture {name} (known: {', '.join(fixtures)})")
        fixtures[name]()
