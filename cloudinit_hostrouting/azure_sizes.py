"""Which Azure VM sizes have SR-IOV InfiniBand with IPoIB: the size table.

On those sizes the guest agent gives the IPoIB links addresses in a /16 whose
connected routes can shadow cluster CIDRs; on every other size there is no
such /16, so azure-suggest answers in one line.  Pure data and one function.
"""

from __future__ import annotations

import re

# The ND sizes Azure lists with InfiniBand, exactly.  ND96isr_MI300X_v5 is not
# listed as InfiniBand, so an "isr" in the name alone is not enough.
IB_ND_SIZES = frozenset(s.lower() for s in (
    "ND96isr_H100_v5", "ND96isr_H200_v5", "ND96asr_v4", "ND96amsr_A100_v4",
))
# HB, HC and HX sizes whose capability letters include "r" (RDMA), with an
# optional constrained-core count: HB120rs_v3, HB120-96rs_v3, HC44rs, HX176rs.
IB_HPC_SIZE = re.compile(r"^h[bcx]\d+(?:-\d+)?[a-z]*r[a-z]*(?:_v\d+)?$")


def is_infiniband_size(vm_size: str) -> bool:
    """True if Azure documents ``vm_size`` as SR-IOV InfiniBand with IPoIB.

    The rule, after dropping case and a ``Standard_`` prefix:

    * the ND sizes in ``IB_ND_SIZES``, exactly;
    * the HPC families HB, HC and HX when the capability letters include
      ``r`` (RDMA), e.g. HB60rs, HB120rs_v2/v3, HB120-96rs_v3, HB176rs_v4,
      HC44rs, HX176rs.

    The older RDMA sizes H16r, H16mr and NC24r are not SR-IOV (no IPoIB /16),
    so they are deliberately outside both rules.
    """
    name = vm_size.strip().lower()
    if name.startswith("standard_"):
        name = name[len("standard_"):]
    return name in IB_ND_SIZES or bool(IB_HPC_SIZE.match(name))
