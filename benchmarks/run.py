#!/usr/bin/env python3
"""Benchmarks for cloudinit-hostrouting: the boot critical path and scale, against upstream.

Why this exists (issues 7 and 11): our two oneshot units sit on the boot critical path of
every GPU node, so what they cost must be measured, side by side with what upstream does, and
the numbers kept in the README.  Not part of the test run; the package never imports it.  The
parts live in ``hrbench/``, one job per module; tests/test_bench_*.py test its arithmetic.

Usage, as root, from the repo root::

    python3 benchmarks/run.py                       # everything: 5 runs, 10/100/1000 + 10,000
    python3 benchmarks/run.py --quick --runs 1      # smoke run (well under a minute)
    python3 benchmarks/run.py --runs 7 --sizes 10,100,1000 --big 10000 --big-check 1000 \\
        --json /tmp/bench.json                      # raw numbers as well
    python3 benchmarks/run.py --report-from /tmp/bench.json   # re-print a saved run

What is measured, and how:

* The package measured is a byte-compiled snapshot of ``cloudinit_hostrouting/`` and
  ``cc_host_routing.py`` taken at the start (its sha256 is printed; hrbench/package.py).
* Every measurement runs in a fresh pair of network namespaces built like an ND-isr host by
  ``tests/netns.py`` (``eth0`` 10.1.0.4/24 with the default route, ``ib0`` 10.0.200.5/16);
  building and deleting them is not timed.  Namespaces are deleted on exit, Ctrl-C and errors.
* **Ours**: whole processes exactly as the units run them,
  ``ip netns exec NS PY [flags] -m cloudinit_hostrouting apply-routes --config F`` and
  ``... check-overlap --config F --run-dir D``, with F the normalised JSON the module writes
  and the interpreter flags those of the ``ExecStart=`` the package renders.
* **Baseline** (upstream's approach, hrbench/baseline.py): bash loops of
  ``ip -4 route replace`` per route and ``ip -4 route get | awk`` per expected CIDR, under
  the same ``ip netns exec``.
* Wall time is ``time.perf_counter`` around the process; CPU time and peak RSS come from
  ``os.wait4``'s rusage of that process.  Medians over ``--runs`` runs; the ratio
  baseline/ours is computed per run pair (same run, same size, order alternating), then the
  median of those ratios is reported with its min-max range.
* Issue 11's targets are judged at the end (hrbench/targets.py), each miss with its factor.
* Which kernel backend each unit used is observed, not asked: whether its ``-X importtime``
  list contains pyroute2.  ``--unit-env VAR=VALUE`` passes a variable to the units (and the
  in-process workers), e.g. to select a backend where the package offers one.
* In-process timings (imports excluded: the worker first imports exactly the modules the
  units import), cProfile at the scale point, the render path and ``handle()`` run inside
  the units' interpreter as ``PY benchmarks/run.py --worker KIND ...`` (hrbench/workers.py).

Network safety: the only kernel changes are links, addresses and routes inside namespaces
this script creates, and the only lookups are ``route get``; no packet is sent.
"""

from __future__ import annotations

import sys

from hrbench.cli import main

if __name__ == "__main__":
    sys.exit(main(description=(__doc__ or "").split("\n\n")[0]))
