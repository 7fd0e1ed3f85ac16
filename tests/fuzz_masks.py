"""Mutants of valid mask and weights files, and one limited load of each: the fuzzer's two halves.

Used by ``tests/test_fuzz.py`` (Hypothesis drives the ``random.Random`` every mutator draws from, so
failures shrink) and by ``tests/fuzz_campaign.py`` (``make fuzz``: a long seeded campaign).

A mutant starts from a valid file (the shipped tickets and weights of ``pretrained_masks/fmnist-cpu``,
the small generated tickets of ``tests/bad_masks``) and changes the header JSON (types, values,
nesting, keys, duplicate keys, numbers at the edges, unicode), the tensor table (offsets, shapes,
dtypes, overlaps, gaps) or the payload bytes (bit flips, truncation, extension). Most mutants are
"resealed" (their digests recomputed, as anyone editing a file can) so that they reach the checks
behind the digests.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import random
import resource
import signal
import struct
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEEDS = {                                  # name -> (file, what loads it)
    "good": (REPO / "tests" / "bad_masks" / "good.rst.safetensors", "mask"),
    "good_global": (REPO / "tests" / "bad_masks" / "good_global.rst.safetensors", "mask"),
    "shipped": (REPO / "pretrained_masks" / "fmnist-cpu" / "tickets.rst.safetensors", "mask"),
    "shipped_weights": (REPO / "pretrained_masks" / "fmnist-cpu" / "dense_at.weights.safetensors", "weights"),
}
SECONDS, MEMORY = 5.0, 2**30
DTYPES = ("BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "I64", "U64", "F64",
          "F8_E4M3", "u8", "F31", "", "F32 ")
_BIG = 2**63


def edge_value(rng: random.Random):
    """A JSON value at the edges: numbers, strings, unicode, types, nesting."""
    pick = rng.randrange(14)
    if pick == 0:
        return rng.choice([0, -1, 1, 2, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53, 2**53 + 1, _BIG - 1, _BIG,
                           2**64, -_BIG, 10**400, -10**30])
    if pick == 1:
        return rng.choice([0.0, -0.0, 0.5, 1.0, 1.0000001, -1e-320, 5e-324, 1e308, -1e308, float("nan"),
                           float("inf"), float("-inf"), 1e-7])
    if pick == 2:
        return rng.choice(["", "x" * rng.choice([1, 64, 201, 10_000]), "\u0000", "\ud800", "é🙂", "\u202e",
                           "../../etc/passwd", "t0/mask/", "NaN", "0" * 64, "f" * 63])
    if pick == 3:
        return rng.choice([True, False, None])
    if pick == 4:
        return []
    if pick == 5:
        return {}
    if pick == 6:
        depth = rng.choice([2, 31, 33, 200, 3000])
        v = 0
        for _ in range(depth):
            v = [v] if rng.random() < 0.5 else {"k": v}
        return v
    if pick == 7:
        return [rng.randrange(-3, 300) for _ in range(rng.choice([1, 2, 9, 100_000]))]
    if pick == 8:
        return {f"k{i}": i for i in range(rng.choice([1, 3, 1000]))}
    if pick == 9:
        return rng.randrange(-2**70, 2**70)
    if pick == 10:
        return rng.uniform(-2, 2)
    if pick == 11:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 40)))
    if pick == 12:
        return [edge_value(rng) for _ in range(rng.randrange(1, 4))]
    return {str(edge_value(rng))[:20]: edge_value(rng) for _ in range(rng.randrange(1, 3))}


# --------------------------------------------------------------------------------------------
# files <-> (header, payload)
# --------------------------------------------------------------------------------------------


def split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header_text: str | bytes, payload: bytes) -> bytes:
    raw = header_text.encode("utf-8", "surrogatepass") if isinstance(header_text, str) else header_text
    return struct.pack("<Q", len(raw)) + raw + payload


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def reseal(header: dict, payload: bytes) -> dict:
    """Recompute the metadata digest and the payload digest, as an editor of the file can."""
    from safetensors.torch import load

    from rst.network.masks import _payload_digest
    block = header.get("__metadata__")
    if not isinstance(block, dict) or not isinstance(block.get("rst"), str):
        return header
    try:
        meta = json.loads(block["rst"])
        tensors = load(join(json.dumps(header), payload))
        if isinstance(meta, dict):
            meta["payload_sha256"] = _payload_digest(tensors)
            block["rst"] = json.dumps(meta)
    except Exception:                 # noqa: BLE001 - a structure safetensors refuses: keep the old digest
        pass
    block["rst_sha256"] = hashlib.sha256(block["rst"].encode("utf-8", "surrogatepass")).hexdigest()
    return header


def _nodes(obj, path=()):
    """Every (path, value) of a JSON value, breadth-limited."""
    out, todo = [], [(path, obj)]
    while todo and len(out) < 5000:
        p, v = todo.pop()
        out.append((p, v))
        if isinstance(v, dict):
            todo += [(p + (k,), w) for k, w in v.items()]
        elif isinstance(v, list):
            todo += [(p + (i,), w) for i, w in enumerate(v[:50])]
    return out


def _set(obj, path, value):
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _mutate_json(rng: random.Random, obj):
    """One edit of a JSON value: replace a node, delete or add a key, wrap or retype a node."""
    path, value = rng.choice(_nodes(obj))
    op = rng.randrange(5)
    if op == 0 or not path:
        return _set(obj, path, edge_value(rng))
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if op == 1:
        del parent[path[-1]]
    elif op == 2 and isinstance(value, dict):
        value[rng.choice(["format", "seed", "shape", "dtype", "data_offsets", "tickets", "rst", "x", "é"])] = edge_value(rng)
    elif op == 3:
        parent[path[-1]] = [value] if rng.random() < 0.5 else {"v": value}
    else:
        parent[path[-1]] = str(value)[:100] if not isinstance(value, str) else _retype(rng, value)
    return obj


def _retype(rng, text: str):
    return rng.choice([len(text), [text], {text[:10]: text}, text.upper(), text[::-1], text + "\u0000"])


def _with_duplicate_key(rng: random.Random, obj: dict) -> str:
    """JSON text of ``obj`` with one of its keys given twice (the second value differing)."""
    items = list(obj.items())
    if not items:
        return _dumps(obj)
    key, _ = rng.choice(items)
    extra = (key, edge_value(rng))
    items.insert(rng.randrange(len(items) + 1), extra)
    return "{" + ",".join(f"{_dumps(k)}:{_dumps(v)}" for k, v in items) + "}"


# --------------------------------------------------------------------------------------------
# mutators: (rng, file bytes) -> mutant bytes
# --------------------------------------------------------------------------------------------


def mutate_metadata(rng: random.Random, data: bytes) -> bytes:
    """The 'rst' metadata JSON: a node replaced, deleted, added, wrapped or retyped; or a duplicate key."""
    header, payload = split(data)
    block = header["__metadata__"]
    meta = json.loads(block["rst"])
    if rng.random() < 0.15:
        block["rst"] = _with_duplicate_key(rng, rng.choice([n for _, n in _nodes(meta) if isinstance(n, dict) and n]))
        block["rst"] = block["rst"] if rng.random() < 0.5 else _dumps(meta)[:-1] + "," + block["rst"][1:]
    else:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            meta = _mutate_json(rng, meta)
        block["rst"] = _dumps(meta)
    if rng.random() < 0.85:
        block["rst_sha256"] = hashlib.sha256(block["rst"].encode("utf-8", "surrogatepass")).hexdigest()
    return join(_dumps(header), payload)


def mutate_header(rng: random.Random, data: bytes) -> bytes:
    """The safetensors header JSON: any node, the metadata block, or a duplicate tensor key."""
    header, payload = split(data)
    if rng.random() < 0.2:
        return join(_with_duplicate_key(rng, header), payload)
    for _ in range(rng.choice([1, 1, 2])):
        header = _mutate_json(rng, header)
    if isinstance(header, dict) and rng.random() < 0.7:
        header = reseal(header, payload)
    return join(_dumps(header), payload)


def mutate_table(rng: random.Random, data: bytes) -> bytes:
    """The tensor table: offsets moved (overlaps, gaps), shapes and dtypes changed, entries swapped."""
    header, payload = split(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    op = rng.randrange(6)
    if op == 0:
        i = rng.randrange(2)
        entry["data_offsets"][i] += rng.choice([-8, -4, -1, 1, 4, 8, rng.randrange(-10**6, 10**6)])
    elif op == 1:
        entry["data_offsets"][rng.randrange(2)] = edge_value(rng) if rng.random() < 0.5 else rng.choice(
            [0, -1, len(payload), len(payload) + 1, _BIG, 2**64 - 1])
    elif op == 2:
        other = header[rng.choice(names)]
        entry["data_offsets"], other["data_offsets"] = other["data_offsets"], entry["data_offsets"]
    elif op == 3:
        shape = entry["shape"]
        choice = rng.randrange(4)
        if choice == 0 and shape:
            shape[rng.randrange(len(shape))] = rng.choice([0, -1, 1, 2**31, 2**48 + 1, 2**64, 3])
        elif choice == 1:
            shape.append(rng.choice([1, 2, 0]))
        elif choice == 2 and shape:
            shape.pop()
        else:
            entry["shape"] = edge_value(rng)
    elif op == 4:
        entry["dtype"] = rng.choice(DTYPES)
        if rng.random() < 0.5 and isinstance(entry.get("shape"), list) and entry["shape"]:   # keep the byte size
            entry["shape"][-1] = max(0, entry["shape"][-1] // 4)
    else:
        del header[name]
    if rng.random() < 0.7:
        header = reseal(header, payload)
    return join(_dumps(header), payload)


def mutate_payload(rng: random.Random, data: bytes) -> bytes:
    """The tensor bytes: bit flips, values written (NaN, negative, 0xFF), truncation, extension."""
    header, payload = split(data)
    payload = bytearray(payload)
    op = rng.randrange(4)
    if op == 0 and payload:
        for _ in range(rng.choice([1, 1, 2, 8, 64])):
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
    elif op == 1 and payload:
        at = rng.randrange(len(payload)) & ~3
        payload[at:at + 4] = rng.choice([struct.pack("<f", float("nan")), struct.pack("<f", -1.0),
                                         struct.pack("<f", float("inf")), b"\xff\xff\xff\xff", b"\0\0\0\0"])
    elif op == 2:
        payload = payload[:rng.randrange(len(payload) + 1)]
    else:
        payload += bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 8, 4096])))
    payload = bytes(payload)
    if rng.random() < 0.7:
        header = reseal(header, payload)
    return join(_dumps(header), payload)


def mutate_raw(rng: random.Random, data: bytes) -> bytes:
    """The file as bytes: flips anywhere (the length prefix too), truncation, extension, splices."""
    data = bytearray(data)
    op = rng.randrange(4)
    if op == 0:
        for _ in range(rng.choice([1, 2, 16])):
            at = rng.randrange(min(len(data), 16)) if rng.random() < 0.3 else rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
    elif op == 1:
        data = data[:rng.randrange(len(data))]
    elif op == 2:
        data += bytes(rng.randrange(256) for _ in range(rng.choice([1, 8, 1000])))
    else:
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        data[a:b] = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    return bytes(data)


MUTATORS = {"metadata": mutate_metadata, "header": mutate_header, "table": mutate_table,
            "payload": mutate_payload, "raw": mutate_raw}


def seed_bytes() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, (path, _) in SEEDS.items()}


def mutant(rng: random.Random, seeds: dict[str, bytes]) -> tuple[str, str, bytes]:
    """(seed name, mutator name, bytes) of one mutant; 1-3 mutations stacked."""
    name = rng.choice(sorted(seeds))
    data = seeds[name]
    used = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        which = rng.choice(sorted(MUTATORS))
        try:
            data = MUTATORS[which](rng, data)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error, RecursionError):
            break                                   # the previous mutation made it unsplittable: keep that one
        used.append(which)
    return name, "+".join(used) or "none", data


# --------------------------------------------------------------------------------------------
# one limited load
# --------------------------------------------------------------------------------------------

OK = ("loaded", "loaded with warning", "refused")
_CLASSES = (("truncated", "truncated"), ("padded", "truncated"), ("too short", "truncated"),
            ("sha-256", "digest"), ("not a safetensors", "not safetensors"), ("header", "header"),
            ("nested", "nesting"), ("dtype", "dtype"), ("shape", "shape"), ("overlaps", "offsets"),
            ("data_offsets", "offsets"), ("batchnorm", "BatchNorm statistics"), ("contradict", "masks vs metadata"),
            ("version", "version"), ("format", "format"), ("network", "network"), ("ticket", "tickets"),
            ("weights", "weights"), ("seed", "network"), ("width", "network"))


def refusal_class(message: str) -> str:
    low = message.lower()
    return next((cls for word, cls in _CLASSES if word in low), "other")


class Timeout(BaseException):
    """The CPU-time limit of one case passed."""


def _on_alarm(*_):
    raise Timeout()


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_heap_bytes() -> int:
    """Bytes glibc's malloc holds free in its heaps (``mallinfo2().fordblks``, all arenas); 0 elsewhere.

    A case can take these without new address space, so they come on top of ``run_case``'s limit: a
    process that has called ``rst.runtime.allocator.keep_freed_memory`` (the CLI does, in-process in the
    tests) keeps its peak heap, and a test that wants to exceed the limit must ask for more than this."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return 0
    return int(libc.mallinfo2().fordblks)


def load_case(data: bytes, kind: str):
    from rst.network.masks import load_tickets, load_weights
    if kind == "weights":
        return load_weights(data)
    return load_tickets(data).model(0)


def run_case(data: bytes, kind: str, seconds: float = SECONDS, memory: int = MEMORY) -> dict:
    """Load ``data`` under ``seconds`` of CPU time and ``memory`` bytes of new address space (main thread).

    ``outcome``: loaded / loaded with warning / refused (a one-line MaskFileError) / crash (any other
    exception, or a refusal over one line) / timeout / memory."""
    from rst.network.masks import MaskFileError, MaskFileWarning
    old = signal.signal(signal.SIGPROF, _on_alarm)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    rec = {"kind": kind, "message": ""}
    t, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + memory, hard))
            # repeating: a Timeout raised where Python swallows exceptions (a __del__, a GC callback:
            # "Exception ignored in ...") is raised again 50 ms of CPU later instead of never
            signal.setitimer(signal.ITIMER_PROF, seconds, min(seconds, 0.05))
            try:
                load_case(data, kind)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            named = [w for w in caught if issubclass(w.category, MaskFileWarning)]
            rec["outcome"] = "loaded with warning" if named else "loaded"
        except MaskFileError as e:
            rec["message"] = str(e)
            one_line = type(e) is MaskFileError and "\n" not in rec["message"] and 0 < len(rec["message"]) < 400
            rec["outcome"] = "refused" if one_line else "crash"
            rec["class"] = refusal_class(rec["message"])
        except Timeout:
            rec["outcome"] = "timeout"
        except MemoryError:
            rec["outcome"] = "memory"
        except BaseException as e:      # noqa: BLE001 - what the fuzzer looks for
            if isinstance(e, KeyboardInterrupt):
                raise
            rec["outcome"], rec["message"] = "crash", f"{type(e).__name__}: {e}"[:300]
        finally:
            signal.signal(signal.SIGPROF, old)
    rec["seconds"], rec["cpu_seconds"] = time.perf_counter() - t, time.process_time() - cpu
    if rec["outcome"] in OK and rec["cpu_seconds"] >= seconds:
        rec["outcome"] = "timeout"
    return rec
