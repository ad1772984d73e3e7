"""PyTorch's side of examples/bench/device-bench.mjs: tokens/s of a Hugging Face model's training step (AdamW) on the
same config, batch and context, or the matmul peak. One JSON line on stdout; progress on stderr.

    python3 device-bench-torch.py '<json spec>'

spec: {"arch": "gpt2"|"llama", "config": {...config.json...}, "batch", "context", "steps", "warmup", "lr",
       "device": "cuda"|"cpu", "dtype": "fp32"|"bf16", "threads"}  or  {"peak": true, "n": 4096, "device", "threads"}
fp32 runs with TF32 off (the float32 reference), bf16 with torch.autocast. Not part of the test suite.
"""

import json
import sys
import time


def log(msg):
    print(f"[device-bench-torch] {msg}", file=sys.stderr, flush=True)


def out(obj):
    print(json.dumps(obj), flush=True)


def sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak(torch, device, n):
    chain = 8
    res = {}
    for name, dtype in (("fp32Tflops", torch.float32), ("fp16Tflops", torch.float16)):
        if device == "cpu" and dtype == torch.float16:
            continue
        a = torch.randn(n, n, device=device, dtype=dtype) / n**0.5
        best = float("inf")
        for _ in range(4):
            sync(torch, device)
            t0 = time.perf_counter()
            x = a
            for _ in range(chain):
                x = x @ a
            sync(torch, device)
            best = min(best, time.perf_counter() - t0)
        res[name] = chain * 2 * n**3 / best / 1e12
    return res


def main():
    spec = json.loads(sys.argv[1])
    try:
        import torch
    except ImportError as e:
        return out({"skipped": f"no torch ({e})"})
    device = spec.get("device", "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        return out({"skipped": "torch sees no CUDA device"})
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if spec.get("peak"):
        return out(peak(torch, device, spec.get("n", 4096)))
    try:
        import transformers
    except ImportError as e:
        return out({"skipped": f"no transformers ({e})"})
    cfg = dict(spec["config"])
    arch = spec["arch"]
    if arch == "gpt2":
        # The trainer's GPT-2 has no dropout unless the config asks: the same here.
        cfg.setdefault("resid_pdrop", 0.0)
        cfg.setdefault("embd_pdrop", 0.0)
        cfg.setdefault("attn_pdrop", 0.0)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))
    elif arch == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    else:
        return out({"skipped": f"unknown architecture {arch}"})
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    B, T, steps, warmup = spec["batch"], spec["context"], spec["steps"], spec["warmup"]
    vocab = cfg["vocab_size"]
    gen = torch.Generator().manual_seed(0)
    bf16 = spec.get("dtype") == "bf16"
    timed, seconds, losses = 0, 0.0, []
    for s in range(steps):
        ids = torch.randint(0, vocab, (B, T), generator=gen).to(device)
        sync(torch, device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(torch, device)
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if s >= min(warmup, steps - 1):
            timed += 1
            seconds += dt
        log(f"{arch} {spec.get('dtype')} step {s + 1}/{steps}: loss {losses[-1]:.4f}, {B * T / dt:.0f} tok/s")
    out(
        {
            "tokensPerSecond": timed * B * T / seconds,
            "losses": losses,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        }
    )


if __name__ == "__main__":
    main()
