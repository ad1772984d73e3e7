import { InvalidArgumentError } from "commander";

/** Strict option parsers: "2.5", "2x" and "" are errors, not 2. Commander reports them in one line. */
export function integer(name: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min)
      throw new InvalidArgumentError(`--${name} must be an integer ≥ ${min}.`);
    return n;
  };
}

/** A finite number ≥ 0, or > 0 when `range` is "positive". */
export const number =
  (name: string, range: "non-negative" | "positive" = "non-negative") =>
  (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || (range === "positive" ? n <= 0 : n < 0)) {
      throw new InvalidArgumentError(`--${name} must be a ${range} number.`);
    }
    return n;
  };

/** A probability in [0, 1), e.g. a dropout rate. */
export const probability =
  (name: string) =>
  (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !(n >= 0 && n < 1)) throw new InvalidArgumentError(`--${name} must be a number in [0, 1).`);
    return n;
  };

export const intList =
  (name: string) =>
  (value: string): number[] =>
    value.split(",").map((v) => integer(name)(v));
