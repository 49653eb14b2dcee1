import traceback
import iommusim.sw.drivers.riscv.domain as d
from tests.sw.sva.conftest import SvaMachine
PAGE = 4096

def test_dbg() -> None:
    real = d.inval_payload
    def spy(start, size, global_=False):
        print("inval_payload", hex(start), hex(size), hex(real(start, size, global_)))
        return real(start, size, global_)
    d.inval_payload = spy
    m = SvaMachine()
    dev, ep = m.dev("acc"), m.ep("acc")
    pa = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(dev, pa, PAGE, 0)
    assert ep.dma_write(iova, b"before").ok
    h = m.sva.bind(dev, m.kernel.new_process("p"))
    assert ep.dma_read(iova, 6).data == b"before"
    assert ep.dma_write(iova, b"during").ok
    m.sva.unbind(h)
    assert ep.dma_read(iova, 6).data == b"during"
    print("ATC", ep.atc._map)
    n = len(m.system.messages)
    real_inv = ep.ats_invalidate
    def inv(msg):
        print("ats_invalidate", msg)
        real_inv(msg)
    ep.ats_invalidate = inv
    m.system._by_rid[ep.rid] = ep
    m.core.dma_unmap(dev, iova, PAGE)
    for msg in m.system.messages[n:]:
        print(msg)
    print("ATC", ep.atc._map)
