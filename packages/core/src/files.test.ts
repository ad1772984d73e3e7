import { describe, expect, it } from "vitest";
import { systemCode, systemReason } from "./files.js";
import { SafetensorsError } from "./safetensors/errors.js";

describe("systemCode", () => {
  it("is the code of a failed system call, and undefined for an error whose code names a kind of problem", () => {
    expect(systemCode(Object.assign(new Error("x"), { code: "ENOSPC" }))).toBe("ENOSPC");
    expect(systemCode(Object.assign(new Error("x"), { code: "ERR_FS_FILE_TOO_LARGE" }))).toBe("ERR_FS_FILE_TOO_LARGE");
    expect(systemCode(new SafetensorsError("a.safetensors", "Closed", "closed"))).toBeUndefined();
    expect(systemCode(new Error("x"))).toBeUndefined();
    expect(systemCode(null)).toBeUndefined();
    expect(systemCode("ENOSPC")).toBeUndefined();
  });

  it("keeps systemReason to the message of an error that is not a system call's", () => {
    expect(systemReason(Object.assign(new Error("x"), { code: "ENOSPC" }))).toBe("no space left on device (ENOSPC)");
    expect(systemReason(new SafetensorsError("a.safetensors", "Closed", "closed"))).toBe("a.safetensors: closed");
  });
});
