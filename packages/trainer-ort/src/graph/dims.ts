/**
 * Dimensions of graph values: a size, or a symbolic size (inference graphs with dynamic axes, @staged/export): the
 * name of a dynamic axis (`batch_size`), or a product of names with a size factor first (`2*batch_size*sequence_length`).
 * A sum (Concat along a dynamic axis) is one opaque name, `(a+b)`. Products are kept canonical (factors sorted), so
 * two symbolic dimensions are equal exactly when their strings are.
 */
export type Dim = number | string;

/** Whether every dimension is a size. */
export const isStatic = (dims: readonly Dim[]): dims is readonly number[] => dims.every((d) => typeof d === "number");

interface Monomial {
  coef: number;
  atoms: string[];
}

function parse(d: Dim): Monomial {
  if (typeof d === "number") return { coef: d, atoms: [] };
  let coef = 1;
  const atoms: string[] = [];
  let depth = 0,
    start = 0;
  const piece = (s: string) => {
    if (/^\d+$/.test(s)) coef *= Number(s);
    else atoms.push(s);
  };
  for (let i = 0; i < d.length; i++) {
    const c = d[i];
    if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "*" && depth === 0) {
      piece(d.slice(start, i));
      start = i + 1;
    }
  }
  piece(d.slice(start));
  return { coef, atoms };
}

function format(m: Monomial): Dim {
  if (m.atoms.length === 0 || m.coef === 0) return m.coef;
  const atoms = [...m.atoms].sort();
  return (m.coef === 1 ? atoms : [String(m.coef), ...atoms]).join("*");
}

/** a · b. */
export function mulDims(a: Dim, b: Dim): Dim {
  if (typeof a === "number" && typeof b === "number") return a * b;
  const x = parse(a),
    y = parse(b);
  return format({ coef: x.coef * y.coef, atoms: [...x.atoms, ...y.atoms] });
}

/** The product of dimensions. */
export const productOf = (dims: readonly Dim[]): Dim => dims.reduce<Dim>((p, d) => mulDims(p, d), 1);

/** a / b when it is a whole dimension (b's names among a's, the size factor divisible), else null. */
export function divDims(a: Dim, b: Dim): Dim | null {
  if (typeof a === "number" && typeof b === "number") return b !== 0 && a % b === 0 ? a / b : null;
  const x = parse(a),
    y = parse(b);
  if (y.coef === 0 || x.coef % y.coef !== 0) return null;
  const atoms = [...x.atoms];
  for (const s of y.atoms) {
    const i = atoms.indexOf(s);
    if (i < 0) return null;
    atoms.splice(i, 1);
  }
  return format({ coef: x.coef / y.coef, atoms });
}

/** a + b (a new opaque name when either is symbolic). */
export function addDims(a: Dim, b: Dim): Dim {
  if (typeof a === "number" && typeof b === "number") return a + b;
  if (a === 0) return b;
  if (b === 0) return a;
  const atom = (d: Dim) => (typeof d === "string" && /[*+]/.test(d) && !/^\(.*\)$/.test(d) ? `(${d})` : String(d));
  return `(${atom(a)}+${atom(b)})`;
}
