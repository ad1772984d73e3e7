export { HF_TRAINER_FORMAT, hfTrainerFormat, trainerRecords, trainerSummary, trainingProblem } from "./format.js";
export type { TrainerRecords, TrainerSummary } from "./format.js";
export { trainerGroups } from "./groups.js";
export { inferSchedule, loggedLrPoints, scheduleFits } from "./schedule.js";
export type { LrPoint } from "./schedule.js";
export {
  GROWTH_KEY,
  SCHEDULE_KEY,
  recordedSchedule,
  growthEntry,
  growthsOf,
  loggedGrowths,
  parseTrainerState,
  trainerStateSchema,
} from "./trainer-state.js";
export type { LoggedGrowth, TrainerStateJson } from "./trainer-state.js";
