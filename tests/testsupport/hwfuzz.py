"""A mutation fuzzer over the conformance vectors for the RISC-V IOMMU hardware model (issue 10,
items 3 and 5; DESIGN rule 3: "Hardware faults are data, never exceptions").

Each input is one of the public ``riscv-iommu-vector/1`` vectors (:data:`VECTORS`) with a few
random mutations, replayed from reset through :class:`iommusim.conformance.vectors.Replay`
without comparing any expectation. Mutations keep the vector well formed, so what is exercised
is the hardware:

* memory: bits flipped or set, bytes, fields and whole doublewords replaced in the initial
  image and in ``write_mem`` data -- device contexts, DDT/PDT entries, PTEs, MSI PTEs and the
  command-queue entries software writes all live there -- or whole chunks of random bytes;
* register writes: values (bit flips, random, negative, wider than the access), offsets (any,
  misaligned, reserved, custom, outside the page) and sizes (0..16 and negative); register
  reads likewise;
* requests: ``device_id``, ``pid_valid``/``process_id`` (also wider than 20 bits),
  ``priv_req``, ``exec_req``, ``no_write``, ``at``, ``rw`` and ``iova`` (also beyond 64 bits);
  page-request messages, ``process_commands`` limits, injected faults;
* inserted steps: copies of other steps and random new ones, plus direct calls the vectors do
  not make -- :meth:`RiscvIommu.translate_pa`, :meth:`~RiscvIommu.device_write` (MSIs into
  MRIFs), :meth:`~RiscvIommu.tick`, :meth:`~RiscvIommu.ats_inval_completion` with arbitrary
  tags, a debug translation (``tr_req_ctl.Go``) -- and deleted steps.

An input is a *finding* when any exception escapes. A :class:`~iommusim.errors.FormatError`
raised by the vector reader itself (its frame in ``conformance/vectors.py``) would mean the
mutator produced a malformed vector: it is counted as ``malformed`` (a fuzzer bug, which the
brief test asserts never happens), never silently dropped, and a FormatError from anywhere else
is a finding like any other exception.

Every input is reproducible from ``(seed, iteration)`` alone: :func:`mutated_vector` rebuilds
it. ``fuzz(seconds=..., iterations=..., seed=...)`` runs the loop; ``PYTHONPATH=tests python -m
testsupport.hwfuzz --seconds N --seed S`` runs it for N seconds, prints ``hw fuzz: N inputs, K
findings`` and each finding, and exits 1 when K > 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from iommusim.bits.riscv.regs import OFF_TR_REQ_CTL, OFF_TR_REQ_IOVA
from iommusim.conformance.vectors import Replay, params_from_json
from iommusim.errors import FormatError
from iommusim.hw.riscv.params import CacheParams
from iommusim.hw.riscv.transaction import Request
from testsupport.vectors import VECTORS

__all__ = ["Finding", "FuzzStats", "fuzz", "main", "mutated_vector", "run_input"]

JsonObj = dict[str, Any]
M64 = (1 << 64) - 1
_AT = ("untranslated", "translated", "ats")
#: Register access sizes tried: the spec's 4 and 8 most of the time, then everything else.
_SIZES = (4, 8, 4, 8, 4, 8, 0, 1, 2, 3, 5, 6, 7, 16, -1, -8)
#: Registers with side effects, written more often than their share of the page: fctl, ddtp,
#: cqb, cqt, fqb, fqh, pqb, pqh, the queue CSRs, ipsr, iocountinh, iohpmcycles, iohpmevt1,
#: tr_req_ctl, icvec, msi_vec_ctl_0.
_KEY_REGS = (8, 16, 24, 36, 40, 48, 56, 64, 72, 76, 80, 84, 92, 96, 352, 608, 760, 780)


@dataclass(frozen=True, slots=True)
class Finding:
    """One input that raised: rebuild it with ``mutated_vector(seed, iteration)``."""

    seed: int
    iteration: int
    vector: str
    step: int
    op: str
    error: str  # the last line of the traceback: "KeyError: 5"
    where: str  # the innermost frame: "translate.py:312 in g_stage"

    def __str__(self) -> str:
        return (
            f"seed {self.seed} iteration {self.iteration} ({self.vector}, step {self.step} "
            f"{self.op}): {self.error} at {self.where}"
        )


@dataclass(slots=True)
class FuzzStats:
    """What a run did: inputs replayed, steps executed, findings and malformed inputs."""

    seed: int
    inputs: int = 0
    steps: int = 0
    malformed: int = 0
    findings: list[Finding] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# the corpus


@cache
def _corpus() -> tuple[tuple[str, str], ...]:
    """(name, JSON text) of every public vector, sorted by name (parsed once per input)."""
    out = []
    for path in sorted(VECTORS.glob("*/*.json")):
        out.append((path.stem, path.read_text(encoding="utf-8")))
    if not out:
        raise FileNotFoundError(f"no conformance vectors under {VECTORS}")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# value mutators


def _word(rng: random.Random, old: int, bits: int = 64) -> int:
    """A mutated ``bits``-bit value: a bit flipped or set, a byte or field replaced, random."""
    mask = (1 << bits) - 1
    k = rng.randrange(9)
    if k <= 2:
        return old ^ 1 << rng.randrange(bits)
    if k == 3:
        return old | 1 << rng.randrange(bits)
    if k == 4:
        sh = 8 * rng.randrange(bits // 8)
        return old & ~(0xFF << sh) | rng.randrange(256) << sh
    if k == 5:  # low flag / mode bits (V, R/W/X, tc fields, opcodes, LOG2SZ)
        return old & ~0x3FF | rng.randrange(1 << 10)
    if k == 6 and bits == 64:  # top nibble: iosatp/iohgatp/pdtp MODE, PBMT, N
        return old & ~(0xF << 60) | rng.randrange(16) << 60
    if k == 7:
        return rng.choice((0, mask, old & ~1, old | 1))
    return rng.getrandbits(bits)


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Mutate one naturally aligned doubleword (or the tail) of ``data``."""
    if not data:
        return data
    buf = bytearray(data)
    if rng.random() < 0.1:  # a burst of random bytes
        start = rng.randrange(len(buf))
        end = min(len(buf), start + rng.randrange(1, 65))
        buf[start:end] = rng.randbytes(end - start)
        return bytes(buf)
    at = rng.randrange(0, len(buf), 8) if len(buf) >= 8 else 0
    chunk = buf[at : at + 8]
    n = len(chunk)
    old = int.from_bytes(chunk, "little")
    buf[at : at + n] = (_word(rng, old, 64) & ((1 << 8 * n) - 1)).to_bytes(n, "little")
    return bytes(buf)


def _int(v: Any) -> int:
    return v if isinstance(v, int) else int(v, 0)


def _hexv(v: int) -> str:
    return f"{v:#x}" if v >= 0 else f"-{-v:#x}"


# ---------------------------------------------------------------------------------------------
# step mutators


def _mutate_reg(rng: random.Random, step: JsonObj) -> None:
    k = rng.randrange(10)
    size = _int(step.get("size", 4))
    if k <= 4 and step["op"] == "write_reg":
        bits = 64 if size == 8 else 32
        step["value"] = _hexv(_word(rng, _int(step["value"]) & ((1 << bits) - 1), bits))
    elif k == 5 and step["op"] == "write_reg":  # wider than the access, or negative
        step["value"] = _hexv(rng.choice((rng.getrandbits(80), -rng.randrange(1, 1 << 64))))
    elif k <= 7:
        step["offset"] = rng.choice(
            (
                rng.randrange(0, 4096, 4),
                rng.randrange(0, 4096),
                _int(step["offset"]) + rng.choice((-4, -1, 1, 2, 4)),
                rng.choice((12, 688, 700, 744, 4092, 4096, 8192, -4, 1 << 40)),
            )
        )
    else:
        step["size"] = rng.choice(_SIZES)


def _mutate_request(rng: random.Random, req: JsonObj) -> None:
    key = rng.choice(
        ("device_id", "pid_valid", "process_id", "priv_req", "exec_req", "no_write", "at", "rw")
        + ("iova",) * 4
    )
    if key == "device_id":
        req[key] = rng.choice((_word(rng, _int(req.get(key, 0)), 24), rng.getrandbits(24)))
    elif key == "process_id":
        req[key] = rng.choice((_word(rng, _int(req.get(key, 0)), 20), rng.getrandbits(24)))
        req["pid_valid"] = 1
    elif key == "iova":
        old = _int(req.get(key, 0))
        req[key] = _hexv(
            rng.choice((_word(rng, old), _word(rng, old), old ^ 0xFFF, rng.getrandbits(72)))
        )
    elif key == "at":
        req[key] = rng.choice(_AT)
    elif key == "rw":
        req[key] = rng.choice(("read", "write"))
    else:
        req[key] = 1 - _int(req.get(key, 0))


def _mutate_msg(rng: random.Random, msg: JsonObj) -> None:
    key = rng.choice(("rid", "dsv", "dseg", "pv", "pid", "priv", "exec", "payload", "payload"))
    if key == "payload":
        msg[key] = _hexv(_word(rng, _int(msg.get(key, 0))))
    elif key in ("rid", "dseg", "pid"):
        bits = {"rid": 16, "dseg": 8, "pid": 20}[key]
        msg[key] = _word(rng, _int(msg.get(key, 0)), 24 if key == "pid" else bits) & ((1 << 24) - 1)
    else:
        msg[key] = 1 - _int(msg.get(key, 0))


def _random_step(rng: random.Random, vec: JsonObj) -> JsonObj:
    """A new step: another step's copy, or a random register access, request, command run,
    page request, fault injection -- or one of the fuzzer's direct calls (``_``-ops)."""
    steps = vec["steps"]
    k = rng.randrange(12)
    if k <= 2 and steps:
        return copy.deepcopy(rng.choice(steps))
    if k == 3:
        return {
            "op": "write_reg",
            "offset": rng.choice((rng.randrange(0, 1024, 4), rng.choice(_KEY_REGS))),
            "size": rng.choice(_SIZES),
            # Small values reach the low control fields (fctl, mode, enable, Go bits).
            "value": _hexv(rng.getrandbits(rng.choice((3, 12, 64)))),
        }
    if k == 4:
        return {"op": "read_reg", "offset": rng.randrange(-8, 4104), "size": rng.choice(_SIZES)}
    if k == 5:
        req = {
            "device_id": rng.getrandbits(rng.choice((8, 24))),
            "pid_valid": rng.randrange(2),
            "process_id": rng.getrandbits(20),
            "priv_req": rng.randrange(2),
            "exec_req": rng.randrange(2),
            "no_write": rng.randrange(2),
            "at": rng.choice(_AT),
            "iova": _hexv(rng.getrandbits(rng.choice((16, 32, 48, 64)))),
            "length": 4,
            "rw": rng.choice(("read", "write")),
        }
        return {"op": "translate", "req": req}
    if k == 6:
        return {"op": "process_commands", "max": rng.randrange(8)}
    if k == 7:
        msg = {
            "rid": rng.getrandbits(16),
            "dsv": rng.randrange(2),
            "dseg": rng.getrandbits(8),
            "pv": rng.randrange(2),
            "pid": rng.getrandbits(20),
            "priv": rng.randrange(2),
            "exec": rng.randrange(2),
            "payload": _hexv(rng.getrandbits(64)),
        }
        return {"op": "page_request", "msg": msg}
    if k == 8:
        chunks = vec["memory"]
        base = _int(rng.choice(chunks)["addr"]) if chunks else rng.getrandbits(40)
        return {
            "op": "inject_fault",
            "addr": _hexv(base + rng.randrange(0, 4096, 8)),
            "size": rng.choice((8, 16, 32, 64, 4096)),
            "kind": rng.choice(("access", "corruption")),
        }
    if k == 9:
        return {
            "op": "_translate_pa",
            "device_id": rng.getrandbits(24),
            "iova": rng.getrandbits(64),
            "write": rng.randrange(2),
            "pid": rng.choice((-1, -1, rng.getrandbits(20))),
            "priv": rng.randrange(2),
        }
    if k == 10:
        if rng.randrange(2):
            return {"op": "_tick", "cycles": rng.choice((0, 1, rng.getrandbits(20), M64))}
        return {
            "op": "_device_write",
            "device_id": rng.getrandbits(24),
            "iova": rng.getrandbits(rng.choice((16, 48, 64))),
            "translated": rng.randrange(2),
            "pid": rng.choice((-1, rng.getrandbits(20))),
            "data": rng.getrandbits(rng.choice((11, 32, 64))),
            "size": rng.choice((4, 4, 1, 2, 8)),
        }
    if k == 11 and rng.randrange(2):
        return {"op": "_debug", "iova": rng.getrandbits(64), "ctl": rng.getrandbits(64) | 1}
    return {
        "op": "_inval_completion",
        "itags": [rng.randrange(-2, 40) for _ in range(rng.randrange(4))],
        "cc": rng.randrange(9),
    }


_EIGHT_BYTE = frozenset((16, 24, 40, 56, 96, 352, 608, 760))


def _insert_key_write(rng: random.Random, vec: JsonObj) -> None:
    """A well-formed write to a register with side effects, anywhere in the vector: mode
    changes between requests (fctl.GXL/BE under cached contexts, ddtp, queue enables)."""
    off = rng.choice(_KEY_REGS)
    step = {
        "op": "write_reg",
        "offset": off,
        "size": 8 if off in _EIGHT_BYTE else 4,
        "value": _hexv(rng.getrandbits(rng.choice((3, 4, 12, 64)))),
    }
    vec["steps"].insert(rng.randrange(len(vec["steps"]) + 1), step)


def _mutate_step(rng: random.Random, vec: JsonObj) -> None:
    steps = vec["steps"]
    if not steps:
        steps.append(_random_step(rng, vec))
        return
    step = rng.choice(steps)
    op = step.get("op")
    if op in ("write_reg", "read_reg"):
        _mutate_reg(rng, step)
    elif op == "write_mem":
        step["data"] = _mutate_bytes(rng, bytes.fromhex(step["data"])).hex()
    elif op == "translate":
        _mutate_request(rng, step["req"])
    elif op == "page_request":
        _mutate_msg(rng, step["msg"])
    elif op == "process_commands":
        step["max"] = rng.choice((0, 1, 2, 5, 64))
    elif op in ("inject_fault", "clear_fault"):
        step["addr"] = _hexv(_int(step["addr"]) ^ 8 << rng.randrange(12))
        if rng.randrange(2):
            step["size"] = rng.choice((1, 8, 16, 64))
    else:  # read_mem, ats_inval_completion, the fuzzer's ops: insert something instead
        steps.insert(rng.randrange(len(steps) + 1), _random_step(rng, vec))


def _mutate_memory(rng: random.Random, vec: JsonObj) -> None:
    chunks = vec["memory"]
    if not chunks or rng.random() < 0.05:
        # A fresh chunk of random bytes in some page a structure points at or near.
        base = _int(rng.choice(chunks)["addr"]) if chunks else 0x1000 * rng.getrandbits(28)
        addr = (base & ~0xFFF) + 0x1000 * rng.randrange(-2, 3)
        if addr >= 0 and not any(
            _int(c["addr"]) < addr + 4096 and addr < _int(c["addr"]) + len(c["data"]) // 2
            for c in chunks
        ):
            chunks.append({"addr": _hexv(addr), "data": rng.randbytes(4096).hex()})
        return
    chunk = rng.choice(chunks)
    data = bytes.fromhex(chunk["data"])
    if rng.random() < 0.03:
        chunk["data"] = rng.randbytes(len(data)).hex()
    else:
        chunk["data"] = _mutate_bytes(rng, data).hex()


def _mutate_params(rng: random.Random, vec: JsonObj) -> None:
    """Flip a ``capabilities`` or ``fctl`` bit, keeping only parameters the model accepts."""
    p = vec["params"]
    key = rng.choice(("capabilities", "capabilities", "fctl", "gxl_writable", "fctl_be_writable"))
    old = p.get(key, False)
    if key in ("gxl_writable", "fctl_be_writable"):
        p[key] = not old
    else:
        p[key] = _hexv(_int(old) ^ 1 << rng.randrange(40 if key == "capabilities" else 3))
    try:
        params_from_json(p)
    except FormatError:
        p[key] = old


_MUTATORS: tuple[tuple[Callable[[random.Random, JsonObj], None], int], ...] = (
    (_mutate_memory, 8),
    (_mutate_step, 8),
    (
        lambda rng, vec: vec["steps"].insert(
            rng.randrange(len(vec["steps"]) + 1), _random_step(rng, vec)
        ),
        4,
    ),
    (
        lambda rng, vec: (
            vec["steps"].pop(rng.randrange(len(vec["steps"]))) if vec["steps"] else None
        ),
        1,
    ),
    (_mutate_params, 1),
    (_insert_key_write, 3),
)
_WEIGHTS = [w for _m, w in _MUTATORS]


def mutated_vector(seed: int, iteration: int) -> JsonObj:
    """The input of ``iteration`` in the run with ``seed`` (deterministic, order-independent)."""
    rng = random.Random(f"hwfuzz:{seed}:{iteration}")
    corpus = _corpus()
    _name, text = corpus[rng.randrange(len(corpus))]
    vec: JsonObj = json.loads(text)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8, 16))):
        mut = rng.choices(_MUTATORS, _WEIGHTS)[0][0]
        mut(rng, vec)
    if rng.random() < 0.3:  # (ddtc, pdtc, iotlb entries, replacement): see run_input
        vec["_caches"] = [rng.choice((0, 1, 2)) for _ in range(3)] + [rng.choice(("lru", "fifo"))]
    return vec


# ---------------------------------------------------------------------------------------------
# running one input


def _direct(rp: Replay, step: JsonObj) -> None:
    """The fuzzer's own steps: hardware entry points the vector format does not reach."""
    iommu = rp.iommu
    op = step["op"]
    if op == "_translate_pa":
        iommu.translate_pa(
            step["device_id"], step["iova"], bool(step["write"]), step["pid"], bool(step["priv"])
        )
    elif op == "_tick":
        iommu.tick(step["cycles"])
    elif op == "_debug":
        iommu.write_register(OFF_TR_REQ_IOVA, 8, step["iova"])
        iommu.write_register(OFF_TR_REQ_CTL, 8, step["ctl"])
    elif op == "_device_write":
        pid = step["pid"]
        req = Request(
            device_id=step["device_id"],
            iova=step["iova"],
            is_write=True,
            at=1 if step["translated"] else 0,
            pid_valid=pid >= 0,
            process_id=max(pid, 0),
        )
        iommu.device_write(req, step["data"], step["size"])
    elif op == "_inval_completion":
        iommu.ats_inval_completion(list(step["itags"]), step["cc"])
    else:
        raise FormatError(f"fuzzer op {op!r} is not known")


def _reader_format_error(exc: BaseException) -> bool:
    """A FormatError raised by the vector reader itself (not by anything it called)."""
    if not isinstance(exc, FormatError):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and Path(last.tb_frame.f_code.co_filename).name == "vectors.py"


def run_input(vec: JsonObj) -> tuple[int, BaseException | None, int, str]:
    """Replay ``vec`` (no expectations compared). Returns (steps run, the exception or None,
    the failing step's index, its op)."""
    i = -1
    op = "setup"
    n = 0
    try:
        # Tiny or no caches: evictions re-read structures software changed without an
        # invalidation, so stale and fresh entries meet (riscv-iommu: "Caching in-memory
        # data structures" -- any geometry must give a fault, never an exception).
        geometry = vec.get("_caches")
        rp = Replay(vec, caches=None if geometry is None else CacheParams(*geometry))
        for i, step in rp.steps():
            op = str(step.get("op"))
            if op.startswith("_"):
                _direct(rp, step)
            elif op == "ats_inval_completion":
                # Mutated commands may not have sent the invalidation a completion names:
                # complete the ones that exist (the replayer would reject the vector).
                sent = rp.inval_reqs
                tags = [sent[x].itag for x in step["requests"] if 0 <= x < len(sent)]
                rp.iommu.ats_inval_completion(tags, _int(step.get("cc", 0)))
            else:
                rp.run_step(i, step)
            n += 1
    except Exception as e:  # any escape is what the fuzzer looks for
        return n, e, i, op
    return n, None, i, op


def _describe(exc: BaseException) -> tuple[str, str]:
    lines = traceback.format_exception_only(type(exc), exc)
    error = lines[-1].strip()
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    if frames:
        f = frames[-1]
        where = f"{Path(f.filename).name}:{f.lineno} in {f.name}"
    return error, where


def fuzz(seconds: float | None = None, iterations: int | None = None, seed: int = 0) -> FuzzStats:
    """Run mutated vectors until ``seconds`` pass or ``iterations`` inputs ran (whichever is
    first; with neither, 1000 inputs). Findings with the same error at the same place are
    reported once (the first input that hit it)."""
    if seconds is None and iterations is None:
        iterations = 1000
    stats = FuzzStats(seed)
    seen: set[tuple[str, str]] = set()
    deadline = None if seconds is None else time.monotonic() + seconds
    it = 0
    while (iterations is None or it < iterations) and (
        deadline is None or time.monotonic() < deadline
    ):
        vec = mutated_vector(seed, it)
        n, exc, step, op = run_input(vec)
        stats.inputs += 1
        stats.steps += n
        if exc is not None:
            if _reader_format_error(exc):
                stats.malformed += 1
            else:
                error, where = _describe(exc)
                if (error.split(":")[0], where) not in seen:
                    seen.add((error.split(":")[0], where))
                    stats.findings.append(
                        Finding(seed, it, str(vec.get("name")), step, op, error, where)
                    )
        it += 1
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testsupport.hwfuzz", description=__doc__)
    ap.add_argument("--seconds", type=float, default=None, help="run for this long")
    ap.add_argument("--iterations", type=int, default=None, help="run this many inputs")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    ap.add_argument("--replay", type=int, metavar="ITERATION", help="replay one input and raise")
    args = ap.parse_args(argv)
    if args.replay is not None:
        vec = mutated_vector(args.seed, args.replay)
        _n, exc, step, op = run_input(vec)
        print(f"{vec.get('name')}: step {step} {op}")
        if exc is not None:
            raise exc
        return 0
    stats = fuzz(args.seconds, args.iterations, args.seed)
    print(f"hw fuzz: {stats.inputs} inputs, {len(stats.findings)} findings")
    if stats.malformed:
        print(f"  (fuzzer bug: {stats.malformed} malformed inputs)")
    for f in stats.findings:
        print(f"  {f}")
    return 1 if stats.findings or stats.malformed else 0


if __name__ == "__main__":
    sys.exit(main())
