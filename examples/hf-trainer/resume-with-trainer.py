"""Resume real Hugging Face Trainer from a checkpoint staged grew, and check that it continues the original run.

usage: python resume-with-trainer.py <grown checkpoint> <original run's later checkpoint> [--data FILE] [--max-steps 6]

Needs transformers (≥ 4.40; the fixtures were made with 5.17) and torch. The setting is that of
fixtures/hf-trainer/make_fixtures.py: blocks of 64 bytes of --data (default /usr/share/common-licenses/GPL-3, the
fixtures' data), batch 4, AdamW lr 3e-3, weight decay 0.01, linear schedule with 2 warmup steps, seed 0, no dropout.
Trainer resumes from the grown checkpoint (its optimizer.pt, scheduler.pt, trainer_state.json and rng_state.pth):
it skips the batches already seen, so the next update's batch is the one the original run saw at that step. A
growth that keeps the model's function therefore logs, at the first step after the resume, the loss the original
run logged there (in the later checkpoint's trainer_state.json). Prints one JSON line; exits 1 if they differ by more
than 1e-4 or if Trainer does not resume at the grown checkpoint's step.

    staged grow width fixtures/hf-trainer/gpt2/checkpoint-3 /tmp/grown/checkpoint-3
    python examples/hf-trainer/resume-with-trainer.py /tmp/grown/checkpoint-3 fixtures/hf-trainer/gpt2/checkpoint-6
"""
import argparse, json, os, sys, tempfile

import torch
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("grown"), ap.add_argument("later")
ap.add_argument("--data", default="/usr/share/common-licenses/GPL-3")
ap.add_argument("--max-steps", type=int, default=6)
a = ap.parse_args()

data = torch.tensor(list(open(a.data, "rb").read()), dtype=torch.long)
T = 64


class Blocks(Dataset):
    def __len__(self): return len(data) // T

    def __getitem__(self, i):
        x = data[i * T:(i + 1) * T]
        return {"input_ids": x, "labels": x}


grown_state = json.load(open(os.path.join(a.grown, "trainer_state.json")))
start = grown_state["global_step"]
model = AutoModelForCausalLM.from_pretrained(a.grown, dtype=torch.float32)
with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(output_dir=out, max_steps=a.max_steps, save_strategy="no", per_device_train_batch_size=4,
                             learning_rate=3e-3, warmup_steps=2, lr_scheduler_type="linear", weight_decay=0.01,
                             logging_steps=1, report_to=[], seed=0, use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=Blocks())
    trainer.train(resume_from_checkpoint=a.grown)
    log = trainer.state.log_history

resumed = [e for e in log if "loss" in e and e["step"] > start]
original = {e["step"]: e for e in json.load(open(os.path.join(a.later, "trainer_state.json")))["log_history"] if "loss" in e}
if not resumed or resumed[0]["step"] != start + 1:
    print(f"FAILED: Trainer did not resume at step {start} (logged steps {[e['step'] for e in resumed]})", file=sys.stderr)
    sys.exit(1)
first = resumed[0]
want = original.get(first["step"])
result = {"resumed_at": start, "first_step": first["step"], "loss": first["loss"], "learning_rate": first.get("learning_rate"),
          "original_loss": want and want["loss"], "original_learning_rate": want and want.get("learning_rate"),
          "losses": [(e["step"], e["loss"]) for e in resumed]}
print(json.dumps(result))
if want is None or abs(first["loss"] - want["loss"]) > 1e-4:
    print("FAILED: the first loss after the resume is not the original run's there", file=sys.stderr)
    sys.exit(1)
