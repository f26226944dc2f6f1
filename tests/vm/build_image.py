#!/usr/bin/env python3
"""Standalone driver for the first-boot VM harness (no pytest needed).

    # build the bookworm image (the .deb from the working tree), boot scenario
    # "fixed", print where the evidence and serial log are:
    python3 tests/vm/build_image.py --suite bookworm --scenario fixed
    # the pip-installed image, or the race variant:
    python3 tests/vm/build_image.py --suite bookworm --scenario pip_fixed
    python3 tests/vm/build_image.py --suite bookworm --scenario race_fixed

    # only (re)build the cached base tar(s):
    python3 tests/vm/build_image.py --suite bookworm --suite trixie --base-only

    # only build the image (prints the paths of disk, kernel, initrd):
    python3 tests/vm/build_image.py --suite trixie

Scenarios: see tests/vm/scenarios.py. Artifacts go under
$HR_VM_WORKDIR (default /var/tmp/cloudinit-hostrouting-vm/run-*);
base tars are cached in $HR_VM_CACHE (default
/var/cache/cloudinit-hostrouting-vm).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmharness as H
from scenarios import SCENARIOS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", choices=sorted(H.SUITES), required=True)
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), default=[])
    ap.add_argument("--base-only", action="store_true",
                    help="only build/refresh the cached base tar")
    ap.add_argument("--install", choices=("deb", "pip"), default=None,
                    help="how the image installs the package (default: the scenarios' own; "
                         "deb without --scenario)")
    ap.add_argument("--wheel", help="use this wheel instead of building one from the working tree")
    ap.add_argument("--deb", help="use this .deb instead of building one from the working tree")
    args = ap.parse_args(argv)
    try:
        H.check_host()
        if args.base_only:
            for s in args.suite:
                print(H.base_tar(s))
            return 0
        import os
        if args.wheel:
            os.environ["HR_VM_WHEEL"] = args.wheel
        if args.deb:
            os.environ["HR_VM_DEB"] = args.deb
        work = H.new_workdir()
        scenarios = [SCENARIOS[name] for name in args.scenario]
        methods = [args.install] if args.install else sorted(
            {sc.install for sc in scenarios} or {"deb"})
        rc = 0
        for method in methods:
            artifact = (H.build_deb(work / "deb") if method == "deb"
                        else H.build_wheel(work / "wheel"))
            mine = [sc for sc in scenarios if args.install or sc.install == method]
            variants = tuple(dict.fromkeys([sc.variant for sc in mine] or ["std"]))
            for s in args.suite:
                img = H.build_image(s, method, artifact, work, variants)
                print(f"image {s}/{method}: disks={img.disks} kernel={img.kernel} "
                      f"initrd={img.initrd}")
                for sc in mine:
                    r = H.boot(img, sc.name, sc.user_data, work, variant=sc.variant)
                    print(r.diagnostics())
                    print(f"evidence: {r.evidence_dir}")
                    rc |= 0 if r.evidence_ok else 1
        if H.RUNTIMES:
            print("unit runtimes:\n" + H.runtimes_table())
        print("stage timings:\n" + H.TIMINGS.table())
        return rc
    except H.HarnessError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    finally:
        H.kill_all_live()


if __name__ == "__main__":
    sys.exit(main())
