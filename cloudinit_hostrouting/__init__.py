"""cloudinit-hostrouting: keep an InfiniBand /16 from swallowing cluster traffic.

On Azure ND-isr VMs, ib0 gets a /16 whose connected route can shadow a VNet or
Kubernetes CIDR.  This package is a cloud-init module (``host_routing``) plus the
commands its systemd units run: install more-specific static routes, then check
that every expected CIDR leaves through the default interface before gated units
(systemd-nspawn machines by default) may start.
"""

__version__ = "0.1.0"
