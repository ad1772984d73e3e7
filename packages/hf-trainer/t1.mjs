import { createDefaultRegistry, loadTrainingState, saveTrainingState } from "@staged/core";
import { hfTrainerFormat } from "@staged/hf-trainer";
const registry = createDefaultRegistry().register("checkpointFormat", hfTrainerFormat);
const s = await loadTrainingState(process.argv[2], { registry });
console.log(s.architecture, s.progress, s.schedule, { ...s.optimizer, expAvg: s.optimizer.expAvg?.size, expAvgSq: undefined });
await saveTrainingState(process.argv[3], s, { registry, overwrite: true });
await s.close();
