"""Top-level shim so cloud-init finds the module ``host_routing``.

cloud-init imports a module-list entry ``host_routing`` as ``cc_host_routing``
(or ``cloudinit.config.cc_host_routing``); a dotted name would abort the whole
stage.  The implementation lives in the ``cloudinit_hostrouting`` package.
"""

from cloudinit_hostrouting.module import handle, meta

__all__ = ["handle", "meta"]
