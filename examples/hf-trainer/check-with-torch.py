"""Independent check of a grown Hugging Face Trainer checkpoint with PyTorch alone (no transformers, no staged code).

usage: /usr/bin/python3 check-with-torch.py <source checkpoint-N> <grown checkpoint> [--steps 2] [--data FILE]

1. The pickles of optimizer.pt and scheduler.pt use only globals torch.load(weights_only=True) accepts (listed with
   pickletools, as torch 1.13's weights_only unpickler cannot read the floats torch 2 files hold).
2. Both models are built in plain torch from config.json + model.safetensors (GPT-2 and Llama, HF's parameter names
   and named_parameters() order), and the loss of the grown model on the data equals the source's.
3. torch.optim.AdamW is built with Trainer's two groups over the grown model (decayed: every parameter but biases and
   norms; then the rest) and loads optimizer.pt; every state tensor must have its parameter's shape (load_state_dict
   does not check). LambdaLR with the schedule trainer_state.json's logged LRs follow loads scheduler.pt.
4. It trains --steps steps as Trainer does (loss, backward, clip 1.0, optimizer.step, scheduler.step) and checks that
   each update used the LR the files say and that Adam's step count continues from the checkpoint's.
Prints one JSON line of what it measured; exits 1 on the first failed check.
"""
import argparse, io, json, math, pickletools, struct, sys, zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

ALLOWED = {
    "torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch.FloatStorage", "torch.BFloat16Storage",
    "torch.HalfStorage", "torch.DoubleStorage", "torch.LongStorage", "torch.IntStorage", "torch.ShortStorage",
    "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage", "torch._utils._rebuild_parameter",
}


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def pickle_globals(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        data = z.read(name)
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
    return found


def attention(q, k, v):
    """Causal softmax attention (torch 1.13 has no F.scaled_dot_product_attention)."""
    T = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + b])
        out[k] = torch.frombuffer(buf, dtype=dtypes[v["dtype"]]).reshape(v["shape"]).float() if b > a else torch.zeros(v["shape"])
    return out


class Conv1D(nn.Module):
    def __init__(self, nx, nf):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["n_embd"], c.get("n_inner") or 4 * c["n_embd"]
        self.heads, self.eps = c["n_head"], c.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = nn.LayerNorm(d, eps=self.eps)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = Conv1D(d, 3 * d), Conv1D(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=self.eps)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = Conv1D(d, f), Conv1D(f, d)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = attention(q, k, v).transpose(1, 2).reshape(B, T, d)
        x = x + self.attn.c_proj(y)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    """GPT2LMHeadModel's parameters under its names and in its named_parameters() order (output layer tied)."""

    def __init__(self, c):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.transformer.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.transformer.h = nn.ModuleList([GPT2Block(c) for _ in range(c["n_layer"])])
        self.transformer.ln_f = nn.LayerNorm(c["n_embd"], eps=c.get("layer_norm_epsilon", 1e-5))

    def forward(self, ids):
        t = self.transformer
        x = t.wte(ids) + t.wpe(torch.arange(ids.shape[1]))
        for b in t.h:
            x = b(x)
        return t.ln_f(x) @ t.wte.weight.T


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class LlamaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kv = c["hidden_size"], c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        hd = c.get("head_dim") or d // h
        self.h, self.kv, self.hd = h, kv, hd
        self.self_attn = nn.Module()
        a = self.self_attn
        a.q_proj, a.k_proj = nn.Linear(d, h * hd, bias=False), nn.Linear(d, kv * hd, bias=False)
        a.v_proj, a.o_proj = nn.Linear(d, kv * hd, bias=False), nn.Linear(h * hd, d, bias=False)
        self.mlp = nn.Module()
        f = c["intermediate_size"]
        self.mlp.gate_proj, self.mlp.up_proj, self.mlp.down_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)
        self.input_layernorm = RMSNorm(d, c.get("rms_norm_eps", 1e-6))
        self.post_attention_layernorm = RMSNorm(d, c.get("rms_norm_eps", 1e-6))

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        a = self.self_attn
        hx = self.input_layernorm(x)
        q = a.q_proj(hx).view(B, T, self.h, self.hd).transpose(1, 2)
        k = a.k_proj(hx).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = a.v_proj(hx).view(B, T, self.kv, self.hd).transpose(1, 2)
        rot = lambda t: torch.cat((-t[..., self.hd // 2:], t[..., :self.hd // 2]), dim=-1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(self.h // self.kv, dim=1), v.repeat_interleave(self.h // self.kv, dim=1)
        y = attention(q, k, v).transpose(1, 2).reshape(B, T, -1)
        x = x + a.o_proj(y)
        hx = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(hx)) * self.mlp.up_proj(hx))


class Llama(nn.Module):
    """LlamaForCausalLM's parameters under its names and in its named_parameters() order."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.model.layers = nn.ModuleList([LlamaBlock(c) for _ in range(c["num_hidden_layers"])])
        self.model.norm = RMSNorm(c["hidden_size"], c.get("rms_norm_eps", 1e-6))
        self.tied = c.get("tie_word_embeddings", False)
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids):
        c, T = self.c, ids.shape[1]
        hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(T).float(), inv)
        cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
        x = self.model.embed_tokens(ids)
        for b in self.model.layers:
            x = b(x, cos, sin)
        x = self.model.norm(x)
        return x @ (self.model.embed_tokens.weight if self.tied else self.lm_head.weight).T


def load_model(path):
    c = json.load(open(f"{path}/config.json"))
    model = {"gpt2": GPT2, "llama": Llama}[c["model_type"]](c)
    weights = read_safetensors(f"{path}/model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or [k for k in unexpected if k != "lm_head.weight"]:
        fail(f"{path}/model.safetensors: missing {missing}, unexpected {unexpected}")
    return model, c


def trainer_groups(model):
    """Trainer.create_optimizer's groups: decayed = not a bias and not a norm's parameter, in named_parameters() order."""
    norms = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, RMSNorm))} | \
            {f"{n}.bias" for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    named = list(model.named_parameters())
    decay = [(n, p) for n, p in named if n not in norms and "bias" not in n]
    rest = [(n, p) for n, p in named if n in norms or "bias" in n]
    return decay, rest


def lm_loss(model, blocks):
    logits = model(blocks[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source"), ap.add_argument("grown")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--data", default=None, help="a text file (bytes are the tokens; default: this script)")
    a = ap.parse_args()
    torch.manual_seed(0)
    result = {}

    for f in ("optimizer.pt", "scheduler.pt"):
        g = pickle_globals(f"{a.grown}/{f}")
        if not g <= ALLOWED:
            fail(f"{a.grown}/{f}: globals outside weights_only's allow-list: {sorted(g - ALLOWED)}")
        result[f"{f} globals"] = sorted(g)

    src, c = load_model(a.source)
    grown, gc = load_model(a.grown)
    ctx = min(c.get("n_positions") or c.get("max_position_embeddings"), 64)
    data = torch.tensor(list(open(a.data or __file__, "rb").read()), dtype=torch.long)
    n = (len(data) - 1) // ctx
    blocks = torch.stack([data[i * ctx:i * ctx + ctx + 1] for i in range(min(n, 16))]) % c["vocab_size"]
    with torch.no_grad():
        before, after = lm_loss(src, blocks), lm_loss(grown, blocks)
    result.update(loss_source=before, loss_grown=after)
    if abs(before - after) > 1e-5 * max(1, abs(before)):
        fail(f"the grown model's loss {after} differs from the source's {before}")

    sd = torch.load(f"{a.grown}/optimizer.pt", weights_only=False)
    decay, rest = trainer_groups(grown)
    g0 = sd["param_groups"][0]
    opt = torch.optim.AdamW([{"params": [p for _, p in decay], "weight_decay": g0["weight_decay"]},
                             {"params": [p for _, p in rest], "weight_decay": 0.0}], lr=g0["lr"], betas=g0["betas"], eps=g0["eps"])
    # Trainer's order: optimizer and scheduler created, then optimizer.pt loaded, then scheduler.pt.
    ts = json.load(open(f"{a.grown}/trainer_state.json"))
    # The schedule from the logged LRs, as staged found it: recorded with the last growth in log_history.
    spec = [e["staged_growth"]["schedule"] for e in ts["log_history"] if "staged_growth" in e][-1]
    w, T = spec["warmupSteps"], spec["totalSteps"]
    lam = {"linear": lambda s: s / max(1, w) if s < w else max(0.0, (T - s) / max(1, T - w)),
           "constant": lambda s: s / max(1, w) if s < w else 1.0,
           "cosine": lambda s: s / max(1, w) if s < w else max(0.0, 0.5 * (1 + math.cos(math.pi * (s - w) / max(1, T - w))))}[spec["kind"]]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    opt.load_state_dict(sd)
    sched.load_state_dict(torch.load(f"{a.grown}/scheduler.pt", weights_only=False))
    names = [n for n, _ in decay] + [n for n, _ in rest]
    params = [p for _, p in decay] + [p for _, p in rest]
    for i, p in enumerate(params):
        st = opt.state[p]
        for k in ("exp_avg", "exp_avg_sq"):
            if st[k].shape != p.shape:
                fail(f"optimizer state {i} ({names[i]}).{k} has shape {tuple(st[k].shape)}, the parameter {tuple(p.shape)}")
    steps0 = {float(opt.state[p]["step"]) for p in params}
    if len(steps0) != 1:
        fail(f"Adam step counts differ: {steps0}")
    adam_step = steps0.pop()

    if sched.last_epoch != ts["global_step"]:
        fail(f"scheduler last_epoch {sched.last_epoch} ≠ trainer_state global_step {ts['global_step']}")
    result.update(global_step=ts["global_step"], adam_step=adam_step, base_lrs=sched.base_lrs, lr=[g["lr"] for g in opt.param_groups])

    losses, lrs = [], []
    for k in range(a.steps):
        used = [g["lr"] for g in opt.param_groups]
        expect = [b * lam(sched.last_epoch) for b in sched.base_lrs]
        if any(abs(u - e) > 1e-12 + 1e-9 * abs(e) for u, e in zip(used, expect)):
            fail(f"update {k + 1} after resume uses LR {used}, the schedule at step {sched.last_epoch} gives {expect}")
        logits = grown(blocks[:4, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:4, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(grown.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(used[0])
    after_steps = {float(opt.state[p]["step"]) for p in params}
    if after_steps != {adam_step + a.steps}:
        fail(f"Adam step counts after {a.steps} steps: {after_steps}, expected {adam_step + a.steps}")
    result.update(train_losses=losses, train_lrs=lrs, ok=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
