import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { createProgress, fmtTime } from "./progress.js";

const sink = () => {
  const lines: string[] = [];
  return { lines, stream: { write: (s: string) => lines.push(s), isTTY: false } };
};

describe("progress on stderr", () => {
  it("shows nothing for work that ends within a second", () => {
    const { lines, stream } = sink();
    const p = createProgress("writing", "MB", 1e6, { stream });
    p.update(5e6, 1e7);
    p.stop();
    expect(lines).toEqual([]);
  });

  it("writes a line at 1 s even with no update since, then every lineEvery seconds, and a last line", async () => {
    const { lines, stream } = sink();
    const p = createProgress("writing", "MB", 1e6, { stream, lineEvery: 1 });
    p.update(0, 1e9);
    await sleep(1300);
    expect(lines).toEqual(["  writing 0.0 of 1000.0 MB, 0.0 MB/s, ETA -\n"]);
    p.update(5e8, 1e9);
    await sleep(1000);
    expect(lines[1]).toMatch(/^ {2}writing 500\.0 of 1000\.0 MB, \d+\.\d MB\/s, ETA \d+s\n$/);
    p.stop();
    p.stop();
    expect(lines.at(-1)).toMatch(/^ {2}writing 500\.0 of 1000\.0 MB in 2s, \d+\.\d MB\/s\n$/);
    expect(lines).toHaveLength(3);
  });

  it("jsonl: one object per second with counts in the base unit, rate and ETA, the last marked end", async () => {
    const { lines, stream } = sink();
    const p = createProgress("writing", "MB", 1e6, { stream, mode: "jsonl", baseUnit: "bytes" });
    p.update(4e8, 1e9);
    await sleep(1200);
    p.stop();
    const objects = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objects).toHaveLength(2);
    expect(objects[0]).toMatchObject({ progress: "writing", done: 4e8, total: 1e9, unit: "bytes", seconds: expect.any(Number), rate: expect.any(Number), etaSeconds: expect.any(Number) });
    expect(objects[0]!.end).toBeUndefined();
    expect(objects[1]).toMatchObject({ done: 4e8, end: true });
    const quiet = sink();
    const none = createProgress("writing", "MB", 1e6, { stream: quiet.stream, mode: "none" });
    none.update(1, 2);
    await sleep(1100);
    none.stop();
    expect(quiet.lines).toEqual([]);
  });

  it("formats times", () => {
    expect([fmtTime(7.4), fmtTime(185), fmtTime(3720), fmtTime(Infinity)]).toEqual(["7s", "3m05s", "1h02m", "-"]);
  });
});
