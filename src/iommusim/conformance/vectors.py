"""Replay of ``riscv-iommu-vector/1`` conformance vectors (shared/conformance/riscv-iommu/
FORMAT.md): build the IOMMU from ``params``, load ``memory``, run ``steps`` and record the
model's observation in every ``expect`` / ``expect_events`` slot.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iommusim.bits.riscv.regs import MODE_NAMES
from iommusim.errors import FormatError
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import BARE_PAGE_SIZE, CacheParams, RiscvIommuParams
from iommusim.hw.riscv.transaction import AT_NAMES, Message, Request, Response
from iommusim.mem import FaultInjectingMemory, SparseMemory

__all__ = ["FORMAT", "Replay", "compare", "fill_vector", "load_vector"]

FORMAT = "riscv-iommu-vector/1"
#: A JSON object of the vector format (its shape is FORMAT.md's, checked where it is read).
JsonObj = dict[str, Any]


def _int(obj: JsonObj, key: str, where: str, default: int | None = None) -> int:
    if key not in obj:
        if default is not None:
            return default
        raise FormatError(f"{where}.{key} is missing")
    v = obj[key]
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            pass
    raise FormatError(f"{where}.{key} must be an integer or a 0x-prefixed hex string, not {v!r}")


def _bytes(obj: JsonObj, key: str, where: str) -> bytes:
    v = obj.get(key)
    if not isinstance(v, str):
        raise FormatError(f"{where}.{key} must be a hex byte string, not {v!r}")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise FormatError(f"{where}.{key} is not a valid hex byte string") from None


def load_vector(path: str | Path) -> JsonObj:
    """Read and minimally validate a vector file."""
    try:
        with open(path, encoding="utf-8") as f:
            vec = json.load(f)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(vec, dict):
        raise FormatError(f"{path}: a vector must be a JSON object")
    if vec.get("format") != FORMAT:
        raise FormatError(f"{path}: format must be {FORMAT!r}, not {vec.get('format')!r}")
    for key, typ in (("params", dict), ("memory", list), ("steps", list)):
        if not isinstance(vec.get(key), typ):
            raise FormatError(f"{path}: {key} must be a JSON {typ.__name__}")
    return vec


def params_from_json(p: JsonObj) -> RiscvIommuParams:
    """``params`` (FORMAT section 2) -> :class:`RiscvIommuParams`."""
    w = "params"
    modes = {}
    for key in ("reset_mode", "max_mode"):
        name = p.get(key)
        if name not in MODE_NAMES:
            raise FormatError(f"{w}.{key} must be one of {sorted(MODE_NAMES)}, not {name!r}")
        modes[key] = MODE_NAMES[name]
    bare = p.get("bare_page_size", {})
    if not isinstance(bare, dict):
        raise FormatError(f"{w}.bare_page_size must be an object")
    sizes = {k: _int(bare, k, f"{w}.bare_page_size") for k in bare}
    try:
        return RiscvIommuParams(
            capabilities=_int(p, "capabilities", w),
            fctl=_int(p, "fctl", w, 0),
            num_hpm=_int(p, "num_hpm", w, 0),
            hpmctr_bits=_int(p, "hpmctr_bits", w, 64) or 64,
            eventid_limit=_int(p, "eventid_limit", w, 0),
            num_vec_bits=_int(p, "num_vec_bits", w, 0),
            reset_mode=modes["reset_mode"],
            max_mode=modes["max_mode"],
            max_devid_mask=_int(p, "max_devid_mask", w, 0xFFFFFF),
            gxl_writable=bool(p.get("gxl_writable", False)),
            fctl_be_writable=bool(p.get("fctl_be_writable", False)),
            bare_page_size={**BARE_PAGE_SIZE, **sizes},
            qosid_mask=_int(p, "qosid_mask", w, 0),
        )
    except FormatError:
        raise
    except Exception as e:  # a ModelError from validation names the parameter
        raise FormatError(f"{w}: {e}") from None


def _hex(v: int) -> str:
    return f"{v:#x}"


def _message_json(m: Message) -> JsonObj:
    if m.kind == "sync":
        return {"type": "sync", "pr": int(m.pr), "pw": int(m.pw)}
    out: JsonObj = {"type": m.kind, "rid": m.rid, "dsv": int(m.dsv)}
    if m.dsv:
        out["dseg"] = m.dseg
    out["pv"] = int(m.pv)
    if m.pv:
        out["pid"] = m.pid
    out["payload"] = _hex(m.payload)
    if m.itag >= 0:
        out["itag"] = m.itag
    return out


def response_json(req: Request, resp: Response) -> JsonObj:
    """A translation's observation (FORMAT section 5.1)."""
    out: JsonObj = {"status": resp.status}
    if not resp.ok:
        return out
    if req.at == 2:
        out.update(
            r=int(resp.r),
            w=int(resp.w),
            exe=int(resp.exe),
            priv=int(resp.priv),
            u=int(resp.u),
            g=int(resp.g),
        )
        if (resp.r or resp.w) and not resp.u:
            out["ppn"] = _hex(resp.ppn)
            out["s"] = int(resp.s)
        return out
    out.update(pbmt=resp.pbmt, is_msi=int(resp.is_msi), is_mrif=int(resp.is_mrif))
    if resp.is_mrif:
        out.update(
            ppn=_hex(resp.notice_ppn), mrif_nid=resp.notice_nid, dest_mrif_addr=_hex(resp.mrif_addr)
        )
    else:
        out["pa"] = _hex(resp.pa)
    return out


def request_from_json(r: JsonObj, where: str) -> Request:
    at_name = r.get("at")
    if at_name not in AT_NAMES:
        raise FormatError(f"{where}.at must be one of {sorted(AT_NAMES)}, not {at_name!r}")
    rw = r.get("rw")
    if rw not in ("read", "write"):
        raise FormatError(f"{where}.rw must be 'read' or 'write', not {rw!r}")
    pv = bool(_int(r, "pid_valid", where, 0))
    return Request(
        device_id=_int(r, "device_id", where) & 0xFFFFFF,
        iova=_int(r, "iova", where),
        is_write=rw == "write",
        at=AT_NAMES[at_name],
        pid_valid=pv,
        process_id=_int(r, "process_id", where, 0) if pv else 0,
        priv_req=bool(_int(r, "priv_req", where, 0)) and pv,
        exec_req=bool(_int(r, "exec_req", where, 0)),
        no_write=bool(_int(r, "no_write", where, 1)),
    )


@dataclass
class Replay:
    """A vector being replayed: the model and what it has emitted so far."""

    vec: JsonObj
    ram: SparseMemory = field(default_factory=SparseMemory)
    events: list[Message] = field(default_factory=list)
    inval_reqs: list[Message] = field(default_factory=list)
    on_step: Callable[[int, JsonObj, RiscvIommu], None] | None = None
    #: Cache geometry to replay with instead of the default one (FORMAT section 7.3: the
    #: expectations hold for any spec-compliant caching).
    caches: CacheParams | None = None

    def __post_init__(self) -> None:
        self.params = params_from_json(self.vec["params"])
        if self.caches is not None:
            self.params = self.params.with_(caches=self.caches)
        for k, chunk in enumerate(self.vec["memory"]):
            w = f"memory[{k}]"
            if not isinstance(chunk, dict):
                raise FormatError(f"{w} must be an object")
            self.ram.write(_int(chunk, "addr", w), _bytes(chunk, "data", w))
        self.port_mem = FaultInjectingMemory(self.ram)
        self.iommu = RiscvIommu(self.port_mem, self.params, self._on_message)

    def _on_message(self, msg: Message) -> None:
        self.events.append(msg)
        if msg.kind == "ats_inval_req":
            self.inval_reqs.append(msg)

    def steps(self) -> Iterator[tuple[int, JsonObj]]:
        for i, step in enumerate(self.vec["steps"]):
            if not isinstance(step, dict):
                raise FormatError(f"steps[{i}] must be an object")
            yield i, step

    def run_step(self, i: int, step: JsonObj) -> None:
        """Execute one step, writing its observation into ``step`` (in place)."""
        w = f"steps[{i}]"
        op = step.get("op")
        iommu = self.iommu
        if op == "write_reg":
            iommu.write_register(
                _int(step, "offset", w), _int(step, "size", w), _int(step, "value", w)
            )
        elif op == "read_reg":
            step["expect"] = _hex(
                iommu.read_register(_int(step, "offset", w), _int(step, "size", w))
            )
        elif op == "write_mem":
            self.ram.write(_int(step, "addr", w), _bytes(step, "data", w))
        elif op == "read_mem":
            step["expect"] = self.ram.read(_int(step, "addr", w), _int(step, "size", w)).hex()
        elif op == "translate":
            req_json = step.get("req")
            if not isinstance(req_json, dict):
                raise FormatError(f"{w}.req must be an object")
            req = request_from_json(req_json, f"{w}.req")
            step["expect"] = response_json(req, iommu.translate(req))
        elif op == "process_commands":
            mx = step.get("max")
            if mx is not None and (not isinstance(mx, int) or mx < 0):
                raise FormatError(f"{w}.max must be a non-negative integer, not {mx!r}")
            iommu.process_commands(mx)
            step["expect_events"] = [_message_json(m) for m in self.events]
            self.events.clear()
        elif op == "page_request":
            msg = step.get("msg")
            if not isinstance(msg, dict):
                raise FormatError(f"{w}.msg must be an object")
            m = f"{w}.msg"
            rid = _int(msg, "rid", m)
            dsv = bool(_int(msg, "dsv", m, 0))
            dseg = _int(msg, "dseg", m, 0) if dsv else 0
            pv = bool(_int(msg, "pv", m, 0))
            before = len(self.events)
            pending = self.events[:before]
            self.events.clear()
            iommu.page_request(
                did=(dseg << 16 | rid) if dsv else rid,
                pv=pv,
                pid=_int(msg, "pid", m, 0) if pv else 0,
                priv=bool(_int(msg, "priv", m, 0)) and pv,
                exec_=bool(_int(msg, "exec", m, 0)) and pv,
                payload=_int(msg, "payload", m),
                rid=rid,
                dsv=dsv,
                dseg=dseg,
            )
            step["expect_events"] = [_message_json(e) for e in self.events]
            self.events[:] = pending
        elif op == "ats_inval_completion":
            reqs = step.get("requests")
            if not isinstance(reqs, list) or not all(isinstance(x, int) for x in reqs):
                raise FormatError(f"{w}.requests must be a list of integers")
            itags = []
            for x in reqs:
                if not 0 <= x < len(self.inval_reqs):
                    raise FormatError(
                        f"{w}.requests names invalidation request {x}, "
                        f"but only {len(self.inval_reqs)} were sent"
                    )
                itags.append(self.inval_reqs[x].itag)
            iommu.ats_inval_completion(itags, _int(step, "cc", w, 0))
        elif op == "inject_fault":
            kind = step.get("kind")
            if kind not in ("access", "corruption"):
                raise FormatError(f"{w}.kind must be 'access' or 'corruption', not {kind!r}")
            self.port_mem.inject(_int(step, "addr", w), _int(step, "size", w), kind)
        elif op == "clear_fault":
            self.port_mem.clear(_int(step, "addr", w), _int(step, "size", w))
        else:
            raise FormatError(f"{w}.op {op!r} is not a known step")
        if self.on_step is not None:
            self.on_step(i, step, iommu)


def fill_vector(vec: JsonObj) -> JsonObj:
    """Replay ``vec`` from reset; return a copy with every observation slot filled."""
    out = copy.deepcopy(vec)
    rp = Replay(out)
    for i, step in rp.steps():
        rp.run_step(i, step)
    return out


# ---------------------------------------------------------------------- comparison
def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    return int(v, 0)


def _cmp_events(obs: list[JsonObj], exp: list[JsonObj]) -> str | None:
    if len(obs) != len(exp):
        return f"{len(obs)} events, expected {len(exp)}: {obs} vs {exp}"
    for k, (o, e) in enumerate(zip(obs, exp, strict=True)):
        if o.get("type") != e.get("type"):
            return f"event {k}: type {o.get('type')} != {e.get('type')}"
        for key in set(o) | set(e):
            if key in ("type", "itag"):
                continue
            if key == "pid" and not _as_int(e.get("pv", 0)):
                continue
            if key == "dseg" and not _as_int(e.get("dsv", 0)):
                continue
            if key not in e and key not in ("priv", "exec"):
                continue
            if _as_int(o.get(key, 0)) != _as_int(e.get(key, 0)):
                return f"event {k}: {key} {o.get(key)} != {e.get(key)}"
    return None


def compare(step: JsonObj, observed: JsonObj) -> str | None:
    """Compare one filled step against the stored expectation (FORMAT section 7.2).

    Returns a one-line description of the first difference, or None.
    """
    op = step.get("op")
    if op in ("process_commands", "page_request") and "expect_events" in step:
        return _cmp_events(observed.get("expect_events", []), step["expect_events"])
    if "expect" not in step:
        return None
    exp = step["expect"]
    obs = observed.get("expect")
    if op == "read_reg":
        bits = 8 * _as_int(step.get("size", 8))
        mask = _as_int(step.get("mask", (1 << bits) - 1))
        if (_as_int(obs) ^ _as_int(exp)) & mask:
            return f"read_reg {step.get('offset')}: got {obs}, expected {exp} (mask {mask:#x})"
        return None
    if op == "read_mem":
        o, e = bytes.fromhex(obs or ""), bytes.fromhex(exp)
        m = bytes.fromhex(step["mask"]) if "mask" in step else b"\xff" * len(e)
        if len(o) != len(e) or any((a ^ b) & c for a, b, c in zip(o, e, m, strict=True)):
            return f"read_mem {step.get('addr')}: got {obs}, expected {exp}"
        return None
    if op == "translate":
        if obs is None or obs.get("status") != exp.get("status"):
            return f"translate: got {obs}, expected {exp}"
        for key, val in exp.items():
            if key == "status":
                continue
            if key not in obs or _as_int(obs[key]) != _as_int(val):
                return f"translate: {key} got {obs.get(key)}, expected {val} ({obs} vs {exp})"
    return None
