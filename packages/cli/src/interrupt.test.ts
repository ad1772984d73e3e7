import { Writable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { listenForInterrupt, lostSince } from "./interrupt.js";

// In-process: two signals sent to a child back to back coalesce (POSIX does not queue them), so the second one is
// emitted here after the first has been handled, as a user's second Ctrl-C comes.
const sink = () => {
  const lines: string[] = [];
  const err = new Writable({
    write(chunk: Buffer, _e, cb) {
      lines.push(...chunk.toString().trimEnd().split("\n"));
      cb();
    },
  });
  return { lines, err };
};
afterEach(() => {
  vi.restoreAllMocks();
});

describe("listenForInterrupt", () => {
  it("the first signal aborts the signal and says what happens; a second exits at once with what is lost", () => {
    const { lines, err } = sink();
    const exit = vi.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    let step = 20;
    const i = listenForInterrupt("finishing the step in progress and saving", () => lostSince(20, step, "m"), err);
    try {
      expect(i.status()).toBeNull();
      process.emit("SIGINT", "SIGINT");
      expect(i.signal.aborted).toBe(true);
      expect(i.status()).toBe(130);
      expect(exit).not.toHaveBeenCalled();
      step = 23;
      process.emit("SIGINT", "SIGINT");
      expect(exit).toHaveBeenCalledWith(130);
      expect(lines).toEqual([
        "staged: Ctrl-C: finishing the step in progress and saving (again to abort at once: nothing is lost (m keeps step 20))",
        "staged: aborted: 3 steps since the last save are lost (m keeps step 20)",
      ]);
    } finally {
      i.dispose();
    }
  });

  it("SIGTERM gives status 143, and dispose() stops listening", () => {
    const { lines, err } = sink();
    const exit = vi.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    const before = process.listenerCount("SIGTERM");
    const i = listenForInterrupt("stopping", () => "nothing", err);
    expect(process.listenerCount("SIGTERM")).toBe(before + 1);
    process.emit("SIGTERM", "SIGTERM");
    process.emit("SIGTERM", "SIGTERM");
    expect(exit).toHaveBeenCalledWith(143);
    expect(lines[0]).toBe("staged: SIGTERM: stopping (again to abort at once: nothing)");
    i.dispose();
    expect(process.listenerCount("SIGTERM")).toBe(before);
    expect(lostSince(5, 6, "d")).toBe("1 step since the last save is lost (d keeps step 5)");
  });
});
