import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { createProgress, createReporter, fmtTime, type ProgressMode } from "./progress.js";

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
    expect(objects[0]).toMatchObject({
      progress: "writing",
      done: 4e8,
      total: 1e9,
      unit: "bytes",
      seconds: expect.any(Number),
      rate: expect.any(Number),
      etaSeconds: expect.any(Number),
    });
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

  describe("the reporter train and run show their progress through", () => {
    const reporter = (mode: ProgressMode, every: { seconds: number } | { parts: number }, lastLine: "always" | "if-shown" | "never", base = 0) => {
      const { lines, stream } = sink();
      const r = createReporter<{ loss: number | null }>({
        label: "training",
        unit: "steps",
        details: { loss: null },
        mode,
        stream,
        every,
        lastLine,
        base,
        line: (v) => `${v.done}/${v.total} loss ${v.details.loss ?? "-"} ETA ${fmtTime(v.eta)}${v.final ? " end" : ""}`,
        fields: (v) => ({ loss: v.details.loss }),
      });
      return { lines, r };
    };

    it("parts: a line at the first step, at each part of the total and at the last, as updates come (within the first second too)", () => {
      const { lines, r } = reporter("lines", { parts: 4 }, "never");
      r.update(0, 8);
      for (let i = 1; i <= 8; i++) r.update(i, 8, { loss: 9 - i });
      r.stop();
      expect(lines.map((l) => l.split(" ETA")[0])).toEqual(["1/8 loss 8", "2/8 loss 7", "4/8 loss 5", "6/8 loss 3", "8/8 loss 1"]);
      expect(lines.at(-1)).toBe("8/8 loss 1 ETA 0s\n");
    });

    it("jsonl: the counts, the rate and the ETA with the work's own fields; lastLine always ends with a line even for quick work", () => {
      const { lines, r } = reporter("jsonl", { seconds: 10 }, "always", 100);
      r.update(150, 200, { loss: 2.5 });
      r.stop();
      r.stop();
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({
        progress: "training",
        done: 150,
        total: 200,
        unit: "steps",
        loss: 2.5,
        end: true,
        rate: expect.any(Number),
      });
      const quick = reporter("lines", { seconds: 10 }, "always", 100);
      quick.r.update(200, 200, { loss: 2 });
      quick.r.stop();
      expect(quick.lines).toEqual(["200/200 loss 2 ETA 0s end\n"]);
      const none = reporter("none", { parts: 1 }, "always");
      none.r.update(1, 1);
      none.r.stop();
      expect(none.lines).toEqual([]);
    });

    it("auto without a bar writes lines on a terminal too", () => {
      const lines: string[] = [];
      const r = createReporter<null>({
        label: "x",
        unit: "steps",
        details: null,
        every: { parts: 1 },
        lastLine: "never",
        stream: { write: (s: string) => lines.push(s), isTTY: true },
        line: (v) => `${v.done}`,
      });
      r.update(1, 1);
      r.stop();
      expect(lines).toEqual(["1\n"]);
    });
  });
});
