/**
 * The globals a pickle may name: exactly those torch.load(weights_only=True) accepts by default, as data in one place.
 *
 * Source: `_get_allowed_globals`, `_tensor_rebuild_functions` and `_blocklisted_modules` of
 * torch/_weights_only_unpickler.py in https://github.com/pytorch/pytorch (main branch, the torch 2.x line the
 * fixtures' torch 2.11 belongs to), with the sets it builds at run time written out: `torch.storage._dtype_to_storage_type_map`
 * and `_new_dtypes` (torch/storage.py), the legacy storage classes of torch/__init__.py and torch/cuda/__init__.py
 * (`torch._storage_classes`), the legacy tensor types of torch/csrc/utils/tensor_types.cpp (`all_declared_types`:
 * CPU, CUDA, sparse CPU and sparse CUDA, no sparse bool), and the Python 2 renames of torch/_utils.py
 * (`IMPORT_MAPPING`, `NAME_MAPPING`, applied to a GLOBAL before it is looked up). Globals users add with
 * torch.serialization.add_safe_globals are not accepted: a file that needs them is refused, as torch refuses it by
 * default. See the package README, "The allow-list", for how torch 1.13's list differs.
 *
 * Accepting a name only lets the pickle refer to it: nothing is ever imported, called or executed here. The reader
 * interprets a few of these (tensors, storages, OrderedDict, Counter, bytes) and keeps every other one as an inert
 * `PyObject` record that the writer can write back.
 */

/** Modules torch refuses whatever else is allowed (`_blocklisted_modules`). */
export const BLOCKED_MODULES: readonly string[] = ["sys", "os", "posix", "nt"];

/** Python 2 module names a protocol-2 pickle may use, renamed before the lookup (torch/_utils.py `IMPORT_MAPPING`). */
export const IMPORT_MAPPING: Readonly<Record<string, string>> = {
  __builtin__: "builtins",
  copy_reg: "copyreg",
  Queue: "queue",
  repr: "reprlib",
  _abcoll: "collections.abc",
  UserDict: "collections",
  UserList: "collections",
  UserString: "collections",
  whichdb: "dbm",
  StringIO: "io",
  cStringIO: "io",
};

/** Python 2 (module, name) pairs renamed before the lookup (torch/_utils.py `NAME_MAPPING`), keyed "module name". */
export const NAME_MAPPING: Readonly<Record<string, readonly [string, string]>> = {
  "__builtin__ xrange": ["builtins", "range"],
  "__builtin__ reduce": ["functools", "reduce"],
  "__builtin__ intern": ["sys", "intern"],
  "__builtin__ unichr": ["builtins", "chr"],
  "__builtin__ unicode": ["builtins", "str"],
  "__builtin__ long": ["builtins", "int"],
  "itertools izip": ["builtins", "zip"],
  "itertools imap": ["builtins", "map"],
  "itertools ifilter": ["builtins", "filter"],
  "itertools ifilterfalse": ["itertools", "filterfalse"],
  "itertools izip_longest": ["itertools", "zip_longest"],
  "UserDict IterableUserDict": ["collections", "UserDict"],
  "UserList UserList": ["collections", "UserList"],
  "UserString UserString": ["collections", "UserString"],
  "__builtin__ basestring": ["builtins", "str"],
  "exceptions StandardError": ["builtins", "Exception"],
  "UserDict UserDict": ["collections", "UserDict"],
};

/** Legacy storage class name → torch dtype name (torch/storage.py `_dtype_to_storage_type_map`, inverted). */
export const STORAGE_DTYPES: Readonly<Record<string, string>> = {
  DoubleStorage: "float64",
  FloatStorage: "float32",
  HalfStorage: "float16",
  LongStorage: "int64",
  IntStorage: "int32",
  ShortStorage: "int16",
  CharStorage: "int8",
  ByteStorage: "uint8",
  BoolStorage: "bool",
  BFloat16Storage: "bfloat16",
  ComplexDoubleStorage: "complex128",
  ComplexFloatStorage: "complex64",
  QInt8Storage: "qint8",
  QInt32Storage: "qint32",
  QUInt8Storage: "quint8",
  QUInt4x2Storage: "quint4x2",
  QUInt2x4Storage: "quint2x4",
};

/** dtypes saved as an UntypedStorage plus a dtype global (`_rebuild_tensor_v3`; torch/storage.py `_new_dtypes`). */
export const NEW_DTYPES: readonly string[] = [
  "float8_e5m2",
  "float8_e4m3fn",
  "float8_e5m2fnuz",
  "float8_e4m3fnuz",
  "float8_e8m0fnu",
  "bits8",
  "bits16",
  "bits1x8",
  "bits2x4",
  "bits4x2",
  "complex32",
  "uint16",
  "uint32",
  "uint64",
];

/** The CUDA legacy storage classes (torch/cuda/__init__.py adds them to torch._storage_classes). */
const CUDA_STORAGES = [
  "DoubleStorage",
  "FloatStorage",
  "LongStorage",
  "IntStorage",
  "ShortStorage",
  "CharStorage",
  "ByteStorage",
  "HalfStorage",
  "BoolStorage",
  "BFloat16Storage",
  "ComplexDoubleStorage",
  "ComplexFloatStorage",
];

/** Legacy tensor type scalar names (tensor_types.cpp `all_declared_types`). */
const TENSOR_TYPES = ["Byte", "Char", "Double", "Float", "Int", "Long", "Short", "Half", "Bool", "BFloat16"];

/** The rebuild functions (`_tensor_rebuild_functions`), all in torch._utils. */
const REBUILD_FUNCTIONS = [
  "_rebuild_parameter",
  "_rebuild_parameter_with_state",
  "_rebuild_qtensor",
  "_rebuild_tensor",
  "_rebuild_tensor_v2",
  "_rebuild_tensor_v3",
  "_rebuild_sparse_tensor",
  "_rebuild_meta_tensor_no_storage",
  "_rebuild_wrapper_subclass",
  "_rebuild_device_tensor_from_numpy",
  "_rebuild_device_tensor_from_cpu_tensor",
];

const QSCHEMES = ["per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric", "per_channel_affine_float_qparams"];

function buildAllowList(): ReadonlySet<string> {
  const s = new Set<string>([
    "collections.OrderedDict",
    "collections.Counter",
    "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.set",
    "builtins.complex",
    "torch._tensor._rebuild_from_type_v2",
    // TypedStorage and UntypedStorage are allowed as they are (the others through a StorageType wrapper).
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
  ]);
  // dtypes: str(torch.float32) == "torch.float32", so by canonical name (torch.float is torch.float32).
  for (const d of [...Object.values(STORAGE_DTYPES), ...NEW_DTYPES]) s.add(`torch.${d}`);
  for (let x = 1; x < 8; x++) {
    s.add(`torch.uint${x}`);
    s.add(`torch.int${x}`);
  }
  for (const t of TENSOR_TYPES) {
    s.add(`torch.${t}Tensor`);
    s.add(`torch.cuda.${t}Tensor`);
    if (t !== "Bool") {
      s.add(`torch.sparse.${t}Tensor`);
      s.add(`torch.cuda.sparse.${t}Tensor`);
    }
  }
  for (const c of Object.keys(STORAGE_DTYPES)) s.add(`torch.${c}`);
  for (const c of CUDA_STORAGES) s.add(`torch.cuda.${c}`);
  for (const q of QSCHEMES) s.add(`torch.${q}`);
  for (const f of REBUILD_FUNCTIONS) s.add(`torch._utils.${f}`);
  return s;
}

/** Every global torch.load(weights_only=True) accepts by default, by dotted name ("torch._utils._rebuild_tensor_v2"). */
export const WEIGHTS_ONLY_GLOBALS: ReadonlySet<string> = buildAllowList();

/** The dotted name torch looks a GLOBAL `module name` up by: Python 2 names renamed as torch renames them. */
export function globalName(module: string, name: string): { module: string; dotted: string } {
  const key = `${module} ${name}`;
  const renamed = Object.hasOwn(NAME_MAPPING, key) ? NAME_MAPPING[key] : undefined;
  if (renamed) return { module: renamed[0], dotted: `${renamed[0]}.${renamed[1]}` };
  const m = (Object.hasOwn(IMPORT_MAPPING, module) ? IMPORT_MAPPING[module] : undefined) ?? module;
  return { module: m, dotted: `${m}.${name}` };
}

/** Whether torch.load(weights_only=True) accepts GLOBAL `module name` (after the renames; a blocked module never). */
export function isAllowedGlobal(module: string, name: string): boolean {
  const g = globalName(module, name);
  return !BLOCKED_MODULES.includes(g.module) && WEIGHTS_ONLY_GLOBALS.has(g.dotted);
}
