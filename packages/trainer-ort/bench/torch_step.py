#!/usr/bin/env python3
"""The PyTorch side of step-bench.mjs: the same GPT-2 training step (HF semantics: Conv1D addmm, tanh GELU,
causal softmax attention, tied output, mean next-token CE, clip_grad_norm_, AdamW) on the CPU.
Argument: a JSON object {layers, d, heads, T, B, vocab, threads, steps}; prints one JSON line."""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

c = json.loads(sys.argv[1])
torch.set_num_threads(c["threads"])
torch.manual_seed(0)
L, d, H, T, B, V = c["layers"], c["d"], c["heads"], c["T"], c["B"], c["vocab"]
hd, ffn = d // H, 4 * d


def p(*shape, std=0.02):
    return (torch.randn(*shape) * std).requires_grad_()


P = {"wte": p(V, d), "wpe": p(T, d), "lnf_w": torch.ones(d, requires_grad=True), "lnf_b": torch.zeros(d, requires_grad=True)}
for i in range(L):
    P.update({f"{i}.ln1_w": torch.ones(d, requires_grad=True), f"{i}.ln1_b": torch.zeros(d, requires_grad=True),
              f"{i}.attn_w": p(d, 3 * d), f"{i}.attn_b": torch.zeros(3 * d, requires_grad=True),
              f"{i}.proj_w": p(d, d), f"{i}.proj_b": torch.zeros(d, requires_grad=True),
              f"{i}.ln2_w": torch.ones(d, requires_grad=True), f"{i}.ln2_b": torch.zeros(d, requires_grad=True),
              f"{i}.fc_w": p(d, ffn), f"{i}.fc_b": torch.zeros(ffn, requires_grad=True),
              f"{i}.mproj_w": p(ffn, d), f"{i}.mproj_b": torch.zeros(d, requires_grad=True)})
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
mask_value = torch.tensor(torch.finfo(torch.float32).min)


def loss_fn(ids):
    h = (P["wte"][ids] + P["wpe"][:T]).view(B * T, d)
    for i in range(L):
        a = F.layer_norm(h, (d,), P[f"{i}.ln1_w"], P[f"{i}.ln1_b"], 1e-5)
        q, k, v = torch.addmm(P[f"{i}.attn_b"], a, P[f"{i}.attn_w"]).view(B, T, 3 * d).split(d, dim=2)
        q, k, v = (t.reshape(B, T, H, hd).permute(0, 2, 1, 3) for t in (q, k, v))
        w = torch.where(causal, q @ k.transpose(-1, -2) / math.sqrt(hd), mask_value)
        o = (torch.softmax(w, dim=-1) @ v).permute(0, 2, 1, 3).reshape(B * T, d)
        h = h + torch.addmm(P[f"{i}.proj_b"], o, P[f"{i}.proj_w"])
        m = F.layer_norm(h, (d,), P[f"{i}.ln2_w"], P[f"{i}.ln2_b"], 1e-5)
        f = F.gelu(torch.addmm(P[f"{i}.fc_b"], m, P[f"{i}.fc_w"]), approximate="tanh")
        h = h + torch.addmm(P[f"{i}.mproj_b"], f, P[f"{i}.mproj_w"])
    h = F.layer_norm(h, (d,), P["lnf_w"], P["lnf_b"], 1e-5).view(B, T, d)
    logits = h[:, :-1].reshape(-1, d) @ P["wte"].t()
    return F.cross_entropy(logits, ids[:, 1:].reshape(-1))


params = list(P.values())
opt = torch.optim.AdamW([{"params": [t for t in params if t.dim() == 2], "weight_decay": 0.1},
                         {"params": [t for t in params if t.dim() != 2], "weight_decay": 0.0}], lr=1e-3)


def step():
    ids = torch.randint(0, V, (B, T))
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(ids)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return float(loss)


for _ in range(2):
    step()
times = []
for _ in range(c["steps"]):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
sec = sorted(times)[len(times) // 2]
print(json.dumps({"sec": sec, "tokensPerSec": B * T / sec, "torch": torch.__version__}))
