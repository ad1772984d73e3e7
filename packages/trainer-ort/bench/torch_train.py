#!/usr/bin/env python3
"""The PyTorch side of train-bench.mjs: a plain-torch training loop with the trainer's semantics, for
- arch "gpt2" (HF GPT2LMHeadModel: Conv1D x·W + b, tanh GELU, causal softmax attention scaled by 1/sqrt(head
  size), tied output layer, LayerNorm eps 1e-5),
- arch "llama" (HF LlamaForCausalLM, modeling_llama.py: RMSNorm, rotary embeddings with rotate_half, grouped-query
  attention through repeat_kv, SwiGLU MLP, torch Linear layers without biases, untied or tied output layer),
with the mean next-token cross-entropy over the B·(T−1) predictions, torch.nn.utils.clip_grad_norm_(1.0) and
torch.optim.AdamW (2-D weights decay, 1-D ones do not), on the CPU with `threads` threads (torch.set_num_threads).

Each step samples B blocks of T tokens at random offsets of a token file (little-endian uint16, as written
by train-bench.mjs), like the trainer's random sampler. Argument: a JSON object
{layers, d, heads, T, B, vocab, threads, warmup, steps, data}; prints one JSON line with the seconds of the
timed steps and tokens/s over them. Llama adds {kvHeads, ffn, eps, theta, tied}."""
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

c = json.loads(sys.argv[1])
torch.set_num_threads(c["threads"])
torch.manual_seed(0)
L, d, H, T, B, V = c["layers"], c["d"], c["heads"], c["T"], c["B"], c["vocab"]
hd, ffn = d // H, 4 * d
tokens = torch.from_numpy(np.fromfile(c["data"], dtype="<u2").astype(np.int64))
gen = torch.Generator().manual_seed(0)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.c_attn_w = torch.nn.Parameter(torch.randn(d, 3 * d) * 0.02)
        self.c_attn_b = torch.nn.Parameter(torch.zeros(3 * d))
        self.c_proj_w = torch.nn.Parameter(torch.randn(d, d) * 0.02 / math.sqrt(2 * L))
        self.c_proj_b = torch.nn.Parameter(torch.zeros(d))
        self.ln_2 = torch.nn.LayerNorm(d, eps=1e-5)
        self.c_fc_w = torch.nn.Parameter(torch.randn(d, ffn) * 0.02)
        self.c_fc_b = torch.nn.Parameter(torch.zeros(ffn))
        self.m_proj_w = torch.nn.Parameter(torch.randn(ffn, d) * 0.02 / math.sqrt(2 * L))
        self.m_proj_b = torch.nn.Parameter(torch.zeros(d))
        self.register_buffer("causal", torch.tril(torch.ones(T, T, dtype=torch.bool)), persistent=False)

    def forward(self, h):  # h: [B*T, d]
        a = self.ln_1(h)
        q, k, v = torch.addmm(self.c_attn_b, a, self.c_attn_w).view(B, T, 3 * d).split(d, dim=2)
        q, k, v = (t.reshape(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
        w = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        w = w.masked_fill(~self.causal, torch.finfo(torch.float32).min)
        o = (torch.softmax(w, dim=-1) @ v).transpose(1, 2).reshape(B * T, d)
        h = h + torch.addmm(self.c_proj_b, o, self.c_proj_w)
        f = F.gelu(torch.addmm(self.c_fc_b, self.ln_2(h), self.c_fc_w), approximate="tanh")
        return h + torch.addmm(self.m_proj_b, f, self.m_proj_w)


class GPT2(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Parameter(torch.randn(V, d) * 0.02)
        self.wpe = torch.nn.Parameter(torch.randn(T, d) * 0.02)
        self.h = torch.nn.ModuleList(Block() for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(d, eps=1e-5)

    def forward(self, ids):
        h = (self.wte[ids] + self.wpe[:T]).view(B * T, d)
        for block in self.h:
            h = block(h)
        h = self.ln_f(h).view(B, T, d)
        logits = h[:, :-1].reshape(-1, d) @ self.wte.t()
        return F.cross_entropy(logits, ids[:, 1:].reshape(-1))


class LlamaBlock(torch.nn.Module):
    def __init__(self, kv, ffn, eps, cos, sin):
        super().__init__()
        self.kv, self.eps = kv, eps
        self.input_layernorm = torch.nn.Parameter(torch.ones(d))
        self.q_proj = torch.nn.Linear(d, H * hd, bias=False)
        self.k_proj = torch.nn.Linear(d, kv * hd, bias=False)
        self.v_proj = torch.nn.Linear(d, kv * hd, bias=False)
        self.o_proj = torch.nn.Linear(H * hd, d, bias=False)
        self.post_attention_layernorm = torch.nn.Parameter(torch.ones(d))
        self.gate_proj = torch.nn.Linear(d, ffn, bias=False)
        self.up_proj = torch.nn.Linear(d, ffn, bias=False)
        self.down_proj = torch.nn.Linear(ffn, d, bias=False)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.gate_proj, self.up_proj, self.down_proj):
            torch.nn.init.normal_(lin.weight, std=0.02)
        self.register_buffer("causal", torch.tril(torch.ones(T, T, dtype=torch.bool)), persistent=False)
        self.cos, self.sin = cos, sin

    def rms(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x):
        half = hd // 2
        return x * self.cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * self.sin

    def forward(self, h):  # h: [B*T, d]
        a = self.rms(h, self.input_layernorm)
        q = self.q_proj(a).view(B, T, H, hd).transpose(1, 2)
        k = self.k_proj(a).view(B, T, self.kv, hd).transpose(1, 2)
        v = self.v_proj(a).view(B, T, self.kv, hd).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        rep = H // self.kv
        if rep > 1:  # repeat_kv
            k = k[:, :, None].expand(B, self.kv, rep, T, hd).reshape(B, H, T, hd)
            v = v[:, :, None].expand(B, self.kv, rep, T, hd).reshape(B, H, T, hd)
        w = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        w = w.masked_fill(~self.causal, torch.finfo(torch.float32).min)
        o = (torch.softmax(w, dim=-1) @ v).transpose(1, 2).reshape(B * T, H * hd)
        h = h + self.o_proj(o)
        m = self.rms(h, self.post_attention_layernorm)
        return h + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class Llama(torch.nn.Module):
    def __init__(self):
        super().__init__()
        inv_freq = 1.0 / (c["theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        angles = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        self.embed_tokens = torch.nn.Parameter(torch.randn(V, d) * 0.02)
        self.layers = torch.nn.ModuleList(LlamaBlock(c["kvHeads"], c["ffn"], c["eps"], cos, sin) for _ in range(L))
        self.norm = torch.nn.Parameter(torch.ones(d))
        self.lm_head = None if c["tied"] else torch.nn.Parameter(torch.randn(V, d) * 0.02)
        self.eps = c["eps"]

    def forward(self, ids):
        h = self.embed_tokens[ids].view(B * T, d)
        for block in self.layers:
            h = block(h)
        h = self.norm * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps))
        h = h.view(B, T, d)
        out = self.embed_tokens if self.lm_head is None else self.lm_head
        logits = h[:, :-1].reshape(-1, d) @ out.t()
        return F.cross_entropy(logits, ids[:, 1:].reshape(-1))


model = Llama() if c.get("arch", "gpt2") == "llama" else GPT2()
params = list(model.parameters())
opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.01},
                         {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}],
                        # foreach=False (single-tensor, torch 1.13's default): its step measured faster here than
                        # foreach=True (L4 d256: 6.4 vs 8.4-15 ms, L6 d384: 27-30 vs 46-51 ms), so the ratio
                        # is not flattered by a slower torch optimizer.
                        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=False)


def step():
    starts = torch.randint(0, len(tokens) - T + 1, (B,), generator=gen)
    ids = torch.stack([tokens[s:s + T] for s in starts.tolist()])
    opt.zero_grad(set_to_none=True)
    loss = model(ids)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return float(loss)


for _ in range(c["warmup"]):
    step()
losses = []
t0 = time.perf_counter()
for _ in range(c["steps"]):
    losses.append(step())
sec = time.perf_counter() - t0
print(json.dumps({"seconds": sec, "tokensPerSecond": c["steps"] * B * T / sec, "lastLoss": losses[-1],
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
