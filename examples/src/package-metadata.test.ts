import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The published metadata of every package under packages/, so that a new package without it fails here.
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const REPOSITORY_URL = "git+https://github.com/staged-ml/staged.git";
const LICENSE = "Apache-2.0";
const NODE = ">=20";
// Workspace packages that are never published (test fixtures): private, and without a files list.
const INTERNAL = new Set(["testing"]);

type Json = Record<string, unknown>;
const readJson = (file: string): Json => JSON.parse(readFileSync(file, "utf8")) as Json;

const packages = readdirSync(join(root, "packages"), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

describe("package metadata", () => {
  it("covers the packages we know of", () => {
    expect(packages).toEqual(expect.arrayContaining(["core", "grow-width", "grow-depth", "scheduler", "trainer-ort", "run", "cli"]));
  });

  it("the workspace root names the repository and Node.js 20", () => {
    const pkg = readJson(join(root, "package.json"));
    expect(pkg.repository).toEqual({ type: "git", url: REPOSITORY_URL });
    expect(pkg.engines).toEqual({ node: NODE });
  });

  describe.each(packages)("packages/%s", (name) => {
    const dir = join(root, "packages", name);
    const file = join(dir, "package.json");

    it("has a package.json, named after its directory, published unless internal", () => {
      expect(existsSync(file)).toBe(true);
      const pkg = readJson(file);
      expect(pkg.name).toBe(`@staged/${name}`);
      expect(pkg.version).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
      expect(pkg.private).toBe(INTERNAL.has(name) ? true : undefined);
      expect(typeof pkg.description === "string" && pkg.description.trim().length > 0).toBe(true);
    });

    it("license, engines and repository", () => {
      const pkg = readJson(file);
      expect(pkg.license).toBe(LICENSE);
      expect(pkg.engines).toEqual({ node: NODE });
      expect(pkg.repository).toEqual({ type: "git", url: REPOSITORY_URL, directory: `packages/${name}` });
    });

    it("an ESM entry point whose main, types and exports agree, built from src/index.ts", () => {
      const pkg = readJson(file);
      expect(pkg.type).toBe("module");
      expect(pkg.main).toBe("./dist/index.js");
      expect(pkg.types).toBe("./dist/index.d.ts");
      expect(pkg.exports).toEqual({ ".": { types: "./dist/index.d.ts", import: "./dist/index.js" } });
      // TypeScript picks the first matching condition: "types" must come before "import".
      expect(Object.keys((pkg.exports as Record<string, Json>)["."]!)[0]).toBe("types");
      expect(existsSync(join(dir, "src", "index.ts"))).toBe(true);
    });

    it("ships dist and its README, which exists (internal packages ship nothing)", () => {
      const pkg = readJson(file);
      expect(pkg.files).toEqual(INTERNAL.has(name) ? undefined : ["dist", "README.md"]);
      expect(existsSync(join(dir, "README.md"))).toBe(true);
    });

    it("bins point into dist at a source file with a node shebang", () => {
      const bin = (readJson(file).bin ?? {}) as Record<string, string>;
      for (const [command, target] of Object.entries(bin)) {
        expect(target, command).toMatch(/^\.\/dist\/[\w/-]+\.js$/);
        const source = join(dir, target.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts"));
        expect(existsSync(source), source).toBe(true);
        expect(readFileSync(source, "utf8").startsWith("#!/usr/bin/env node\n"), source).toBe(true);
      }
    });

    it("depends on the other packages of the workspace as workspace:*", () => {
      const pkg = readJson(file);
      for (const field of ["dependencies", "devDependencies", "peerDependencies", "optionalDependencies"]) {
        for (const [dep, range] of Object.entries((pkg[field] ?? {}) as Record<string, string>)) {
          if (dep.startsWith("@staged/")) {
            expect(packages, `${field} ${dep}`).toContain(dep.slice("@staged/".length));
            expect(range, `${field} ${dep}`).toBe("workspace:*");
          }
        }
      }
    });
  });
});
