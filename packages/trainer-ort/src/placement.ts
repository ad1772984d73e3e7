import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Device, EngineOptions } from "./engine.js";

/** The provider onnxruntime names for each device (the names its placement log uses). */
export const PROVIDER_NAMES: Readonly<Record<Device, string>> = {
  cpu: "CPUExecutionProvider",
  cuda: "CUDAExecutionProvider",
  webgpu: "WebGpuExecutionProvider",
};

/** One provider's share of a session's nodes: all of them ("All nodes placed on"), or the ones listed. */
export interface ProviderPlacement {
  provider: string;
  count: number;
  /** The nodes by operator and name, where onnxruntime lists them (a split graph); empty when it placed them all. */
  nodes: { op: string; name: string }[];
}

/**
 * The node placements in onnxruntime's verbose log, one entry per session in the order they were created: its
 * "Node placements" block (VerifyEachNodeIsAssignedToAnEp), where each provider's line " Node(s) placed on [EP]. Number
 * of nodes: N" is followed by a line "   Op (name)" per node, or one line " All nodes placed on [EP]. Number of nodes: N".
 */
export function parsePlacement(log: string): ProviderPlacement[][] {
  const sessions: ProviderPlacement[][] = [];
  let current: ProviderPlacement | null = null;
  for (const line of log.split("\n")) {
    if (/VerifyEachNodeIsAssignedToAnEp\] Node placements\s*$/.test(line)) {
      sessions.push([]);
      current = null;
      continue;
    }
    const head = /(All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
    if (head) {
      if (sessions.length === 0) sessions.push([]);
      current = { provider: head[2]!, count: Number(head[3]), nodes: [] };
      sessions.at(-1)!.push(current);
      continue;
    }
    const node = /VerifyEachNodeIsAssignedToAnEp\]\s{3,}(\S+) \((.*)\)\s*$/.exec(line);
    if (node && current) current.nodes.push({ op: node[1]!, name: node[2]! });
  }
  return sessions;
}

/** The nodes of each session that are not on `device`'s provider (by provider), empty where every node is. */
export function placementFallbacks(sessions: readonly ProviderPlacement[][], device: Device): ProviderPlacement[] {
  return sessions.flat().filter((p) => p.provider !== PROVIDER_NAMES[device]);
}

/**
 * Where onnxruntime places the nodes of the training step's sessions (the step, the update) for a model on a
 * device: a child process creates the engine (freshly initialized weights) with verbose logging and its stderr is
 * parsed (parsePlacement). Rejects with the child's last stderr line when the engine cannot be made.
 */
export async function stepPlacement(
  architecture: string,
  config: Record<string, unknown>,
  options: Pick<EngineOptions, "batch" | "context" | "device" | "threads" | "microBatch" | "precision">,
): Promise<ProviderPlacement[][]> {
  // Beside this module in dist; from the sources (vitest), the built one (tests run after the build).
  const beside = fileURLToPath(new URL("./placement-child.js", import.meta.url));
  const child = existsSync(beside) ? beside : fileURLToPath(new URL("../dist/placement-child.js", import.meta.url));
  const p = spawn(process.execPath, [child, JSON.stringify({ architecture, config, options })], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  p.stderr.setEncoding("utf8").on("data", (d: string) => {
    log += d;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    p.on("error", reject);
    p.on("close", resolve);
  });
  if (code !== 0) {
    const last =
      log
        .trim()
        .split("\n")
        .filter((l) => !l.includes("onnxruntime:"))
        .at(-1) ?? `exit ${code}`;
    throw new Error(`stepPlacement: the engine could not be made: ${last}`);
  }
  return parsePlacement(log);
}
