"""The two boot units' entry point: ``PYTHON -I -S /path/to/cloudinit_hostrouting/unit.py``.

Why a script and these flags, not ``PYTHON -m cloudinit_hostrouting``: the units
sit on every node's boot critical path, and a unit at N=M=10 is mostly
interpreter start.  ``-S`` skips ``site`` (scanning the site directories and
running every ``.pth`` file in them, e.g. setuptools' ``_distutils_hack``) and
a script skips ``runpy`` with ``importlib.util``: together about a third of a
unit's run (see README, Benchmarks).  ``-I`` keeps ``PYTHON*`` variables, the
user site and the working directory out of a root process's imports.

Without ``site`` the package is found from this file's own path, so the units
run exactly the copy of the package that rendered them (at first boot, the one
cloud-init imported), which needs nothing outside the standard library.
"""

import gc
import sys

if __name__ == "__main__":
    # The units build one large working set that lives until they exit (the config's
    # routes, the kernel's tables) and leave almost no cyclic garbage: the collector's
    # full passes over that set found nothing to free and were a sixth of apply-routes'
    # time at 10,000 routes.  Disabled before any import, so the imports' passes are
    # saved too; the long-running guard (``-m``) keeps the collector.
    gc.disable()
    # this file is <parent>/cloudinit_hostrouting/unit.py; the package's parent goes first
    sys.path.insert(0, __file__.rpartition("/")[0].rpartition("/")[0] or ".")
    from cloudinit_hostrouting.__main__ import run

    run()
