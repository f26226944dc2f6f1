#!/usr/bin/env python3
"""Standalone driver for the first-boot VM harness (no pytest needed).

    # build the bookworm image from the working tree, boot scenario "fixed",
    # print where the evidence and serial log are:
    python3 tests/vm/build_image.py --suite bookworm --scenario fixed

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
    ap.add_argument("--wheel", help="use this wheel instead of building one from the working tree")
    args = ap.parse_args(argv)
    try:
        H.check_host()
        if args.base_only:
            for s in args.suite:
                print(H.base_tar(s))
            return 0
        if args.wheel:
            import os
            os.environ["HR_VM_WHEEL"] = args.wheel
        work = H.new_workdir()
        wheel = H.build_wheel(work / "wheel")
        rc = 0
        for s in args.suite:
            img = H.build_image(s, wheel, work)
            print(f"image {s}: disk={img.disk} kernel={img.kernel} initrd={img.initrd}")
            for sc in args.scenario:
                r = H.boot(img, sc, SCENARIOS[sc], work)
                print(r.diagnostics())
                print(f"evidence: {r.evidence_dir}")
                rc |= 0 if r.evidence_ok else 1
        print("stage timings:\n" + H.TIMINGS.table())
        return rc
    except H.HarnessError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    finally:
        H.kill_all_live()


if __name__ == "__main__":
    sys.exit(main())
