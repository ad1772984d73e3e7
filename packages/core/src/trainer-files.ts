/**
 * The files of a Hugging Face Trainer `checkpoint-N/` directory beyond the model's (transformers' trainer.py:
 * OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME, TRAINING_ARGS_NAME, SCALER_NAME, and rng_state.pth, or
 * rng_state_<rank>.pth per process). Core reads none of them; @staged/hf-trainer does (docs/formats.md).
 */
export const TRAINER_FILES = {
  optimizer: "optimizer.pt",
  scheduler: "scheduler.pt",
  state: "trainer_state.json",
  args: "training_args.bin",
  scaler: "scaler.pt",
  rng: "rng_state.pth",
} as const;

/** The Trainer's state files: a save of another format never carries them over from a replaced checkpoint. */
export const TRAINER_STATE_FILES: readonly string[] = [TRAINER_FILES.optimizer, TRAINER_FILES.scheduler, TRAINER_FILES.state, TRAINER_FILES.scaler];

/** rng_state.pth, or rng_state_<rank>.pth of a multi-process run. */
export const TRAINER_RNG_FILE = /^rng_state(_\d+)?\.pth$/;
