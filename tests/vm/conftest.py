"""First-boot VM suite: cloud-init, systemd and an nspawn machine in real Debian guests.

What it proves
--------------
Unit tests and network namespaces cannot show what users depend on most: that
at an instance's *first boot* the routes are fixed before the node's nspawn
machine starts, and that in STRICT mode an overlap keeps the machine from ever
starting. Upstream's unit design looked right and did not do this (NOTES §2);
only a boot shows it. Each scenario here is one true first boot of a Debian
guest under qemu, and every assertion is made on evidence the guest wrote.

The guest image (per suite: Debian 12 "bookworm", Debian 13 "trixie", Debian
testing "forky"; forky's mmdebstrap ignores Release expiry, see vmharness.SUITES)
  * base: ``mmdebstrap --variant=minbase`` from Debian's archive with systemd,
    udev, iproute2, cloud-init, python3-pyroute2, python3-yaml, python3-pip,
    linux-image-cloud-amd64, initramfs-tools, systemd-container,
    busybox-static, e2fsprogs, openssh-client (the exact list is
    ``vmharness.BASE_PACKAGES``; e2fsprogs and openssh-client because
    cloud-init's resizefs and ssh modules otherwise fail and turn the status
    into error / degraded).
    The tar is cached in ``$HR_VM_CACHE`` (default
    ``/var/cache/cloudinit-hostrouting-vm``), keyed by a hash of suite,
    package list, mirror and recipe version; a cold cache builds it.
  * the project's .deb, built from the working tree by ``scripts/build-deb``
    (as tests/deb builds it; ``HR_VM_DEB`` or ``HR_DEB`` for a prebuilt one),
    installed in a chroot the way the README tells apt users,
    ``apt-get install ./cloudinit-hostrouting_*.deb``, whose postinst enables
    the module; or, for the one ``pip`` scenario (Debian 12), the wheel
    (``pip wheel --no-deps --no-build-isolation``) installed as the README's
    pip path says, ``/usr/bin/python3 -m pip install --no-deps
    --break-system-packages WHEEL``, then ``cloudinit-hostrouting
    enable-module``;
  * ``machines.target`` and ``systemd-nspawn@m1.service`` enabled, the stock
    unit, with ``/var/lib/machines/m1`` a busybox-static tree whose busybox
    ``init`` runs a sleep; ``/etc/systemd/nspawn/m1.nspawn`` only sets
    ``KillSignal=SIGUSR2`` so that busybox init powers off promptly at guest
    shutdown (start and dependencies are untouched);
  * a second NIC renamed ``ib0`` by a ``.link`` (also in the initramfs) with
    10.0.200.5/16 from a ``.network``: it shadows the cluster CIDR
    10.0.5.0/24, as an IPoIB /16 does on ND-isr nodes;
  * per image, one disk per variant (vmharness.VARIANTS): ``std`` as above;
    ``race`` (issue 12) gives ib0 no address at boot, bakes the Hyper-V KVP
    pool ``/var/lib/hyperv/.kvp_pool_0`` (one real record: 512-byte key
    ``IPoIB_Data``, 2048-byte value ``NUMPAIRS:1|525400001B01:10.0.200.5``,
    ib0's MAC, which qemu fixes) and ``/etc/waagent.conf`` with
    ``OS.EnableRDMA=y``, and ``vmtest-late-ipoib.service`` (after
    cloud-final and our oneshots, then a 20 s sleep, as waagent waits for its
    devices) adds 10.0.200.5/16 to ib0; ``race_nokvp`` is ``race`` without
    the pool;
  * ``vmtest-evidence.service`` (WantedBy and After ``cloud-final.service``;
    not multi-user.target, which would be an ordering cycle) that collects
    routes, ``ip -4 route get`` for 10.0.5.1 / 10.0.6.1 / 10.0.77.1, our
    markers, ``systemctl show`` of our oneshots and the machine, systemd's
    job-result journal entries for the machine, ``cloud-init status --long``
    and its exit code, the journal and cloud-init.log; tars it onto a raw
    virtio disk (serial ``evidence``) and powers off;
  * image-level cloud-init settings not under test: ``datasource_list:
    [NoCloud, None]`` and ``ssh_genkeytypes: [ed25519]`` (cheapest keygen
    under TCG); ``systemd-firstboot`` masked (it would prompt on the console).
  * user-data always has ``locale: false`` (minbase has no locales; NOTES).
    cloud-init 22.4's schema says a boolean ``locale`` is invalid, so every
    Debian 12 boot logs "Invalid cloud-config provided" as a WARNING; that
    warning is ours, not the module's, and does not change the status.

The boot
  qemu TCG (``-accel tcg,thread=multi -cpu qemu64``, ``HR_VM_CPU`` to
  change; ``max`` works too but was ~10% slower under TCG; KVM here does not
  boot stock kernels, NOTES §6), direct kernel boot with ``net.ifnames=0``, root
  disk ``snapshot=on`` (every boot is a true first boot), NoCloud seed ISO
  from ``cloud-localds`` with a static v2 network-config for eth0
  (10.0.2.15/24 via 10.0.2.2), both NICs on ``-netdev user,restrict=on`` so
  nothing leaves the qemu process. Each qemu runs in its own process group
  under ``timeout --signal=KILL $HR_VM_BOOT_TIMEOUT`` (default 1200 s) and is
  killed by process group when the boot ends, at session teardown, on
  SIGTERM/SIGHUP/Ctrl-C and at interpreter exit.

Scenarios (``scenarios.py``: all on Debian 12, 1, 2, 4 on Debian 13 and forky;
pip_fixed and the race scenarios on Debian 12)
  1. ``fixed``        static route 10.0.5.0/24 via eth0's gateway (plus
     10.0.6.0/24 with gateway and dev defaulted), STRICT: routes in place,
     10.0.5.1 routes via eth0, an IB peer 10.0.77.1 still via ib0, ``.ok``
     present, the machine running and its ExecMainStartTimestampMonotonic
     after both oneshots' ExecMainExitTimestampMonotonic.
  2. ``strict_nofix`` STRICT with no fix: ``.detected`` holds the OVERLAP
     line, the machine's ExecMainStartTimestampMonotonic is 0 and systemd
     logged its start job with JOB_RESULT=dependency.
  3. ``warn_nofix``   WARN, no fix: the machine starts (after the checks),
     ``.detected`` holds the OVERLAP line.
  4. ``none``         no ``host_routing``: nothing of ours is written, the
     machine starts, cloud-init status ``done`` with exit code 0 (on Debian
     13 too: 25.1's schema warning needs the key to be present).
  5. ``invalid``      an invalid ``host_routing`` (gateway ``not-an-address``)
     without STRICT: status ``error`` with our message, nothing written,
     machine starts.
     ``invalid_strict`` the same with ``mode: STRICT``: what STRICT-minded
     users get, as the module decides (fail closed; see the one marked line
     in test_firstboot.py).
  ``pip_fixed``     1 with the package pip-installed into /usr/local.
  ``race_strict_nofix`` / ``race_fixed`` / ``race_nokvp``: ib0's address comes
     after the check (systemd timestamps prove it). STRICT, no fix: the
     check anticipates the KVP address, reports upstream's OVERLAP line with
     the pending route as culprit, the machine never starts. The fix: the
     machine starts and 10.0.5.1 still routes via eth0 once the address came.
     No pool (negative control): the false OK, the machine starts and
     10.0.5.1 ends up via ib0.
  The summary prints each oneshot's runtime per scenario (ExecMainStart to
  ExecMainExit of ``systemctl show``, the guest's clock) and the suite's wall
  time.
  On Debian 13 and forky a present ``host_routing`` key gives ``status: done`` with
  extended status ``degraded done`` and exit code 2, because cloud-init 25.1
  warns about the unknown key (NOTES §3; 26.2 as well). The tests accept exit code 2 there
  only with ``errors: []``, every recoverable error a "failed schema
  validation" warning, and ``cloud-init schema --system`` (run in the guest
  whenever the status exit code is not 0) naming ``host_routing`` as the
  only schema problem. Our message is asserted as the
  ``host_routing.static_routes.routes[0].gateway ... 'not-an-address'``
  line in /var/log/cloud-init.log and the ConfigError in the status.

Running
  Needs root and: mmdebstrap, qemu-system-x86, cloud-image-utils, e2fsprogs,
  debian-archive-keyring (missing tools fail the suite with a message; it is
  never skipped). The marker is ``vm``::

      python3 -m pytest tests/vm -m vm                      # everything
      python3 -m pytest tests/vm -m vm -k 'bookworm and fixed'
      python3 -m pytest tests/vm -m vm -k trixie
      python3 tests/vm/build_image.py --suite bookworm --scenario fixed  # by hand

  Only the selected (suite, scenario) pairs are built and booted.
  Environment: ``HR_VM_CACHE``, ``HR_VM_WORKDIR`` (default
  ``/var/tmp/cloudinit-hostrouting-vm``; the last run's serial logs and
  evidence are kept there), ``HR_VM_JOBS`` (parallel boots, default 2),
  ``HR_VM_SMP`` (vCPUs per guest, default 1: Debian 13's kernel sometimes
  oopses at boot with 2 vCPUs
  under multi-threaded TCG; a guest kernel panic before /init is retried
  once, loudly), ``HR_VM_CPU`` (default qemu64),
  ``HR_VM_BOOT_TIMEOUT``, ``HR_VM_WHEEL`` (a prebuilt wheel), ``HR_VM_DEB``,
  ``HR_VM_KEEP=1`` (keep the built disk images too).
  Per-stage durations are printed live on stderr and in the summary; a failed
  test prints the serial log tail, our journal lines, cloud-init status and
  the host_routing lines of cloud-init.log.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vmharness as H
from scenarios import SCENARIOS

# Two single-vCPU guests at a time keep both host cores busy (guests get one
# vCPU: see vmharness.VM_SMP).
JOBS = int(os.environ.get("HR_VM_JOBS", "2"))


def pytest_configure(config):
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        H.LOG_GUARD = capman.global_and_fixture_disabled
    config.addinivalue_line("markers", "vm: first-boot tests in real qemu VMs (slow, root)")
    config.addinivalue_line(
        "markers", "vm_case(scenario): the first-boot scenario a vm test inspects")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Remember which (suite, scenario) pairs survived -k/-m selection."""
    wanted = []
    for item in items:
        case = getattr(item, "callspec", None)
        marker = item.get_closest_marker("vm_case")
        if marker is not None and case is not None:
            pair = (case.params["suite"], marker.args[0])
            if pair not in wanted:
                wanted.append(pair)
    config._hr_vm_wanted = wanted


class Runner:
    """Builds the images and boots every selected scenario once per session."""

    def __init__(self, wanted):
        self.wanted = wanted
        self.results: dict = {}
        self.error: str | None = None
        self.workdir = None
        self._done = False

    def ensure(self):
        if self._done:
            return
        self._done = True
        try:
            H.check_host()
            H.install_signal_handlers()
            self.workdir = H.new_workdir()
            H.log(f"workdir {self.workdir}; selected: {self.wanted}; jobs={JOBS}")
            # one image per (suite, install method), one disk per variant it needs
            needed: dict = {}
            for suite, name in self.wanted:
                sc = SCENARIOS[name]
                variants = needed.setdefault((suite, sc.install), [])
                if sc.variant not in variants:
                    variants.append(sc.variant)
            artifacts = {}
            if any(inst == "deb" for _, inst in needed):
                artifacts["deb"] = H.build_deb(self.workdir / "deb")
                H.log(f"deb {artifacts['deb'].name}")
            if any(inst == "pip" for _, inst in needed):
                artifacts["pip"] = H.build_wheel(self.workdir / "wheel")
                H.log(f"wheel {artifacts['pip'].name}")
            # Two image builds at a time (mmdebstrap on a cold cache waits on
            # the network and dpkg, so they overlap well); each image's boots
            # are queued as soon as it is ready, JOBS guests at a time.
            build_ex = ThreadPoolExecutor(max_workers=2)
            boot_ex = ThreadPoolExecutor(max_workers=max(1, JOBS))
            images = []
            try:
                built = {build_ex.submit(H.build_image, suite, inst, artifacts[inst],
                                         self.workdir, tuple(variants)): (suite, inst)
                         for (suite, inst), variants in needed.items()}
                boots = {}
                for fut in as_completed(built):
                    suite, inst = built[fut]
                    try:
                        img = fut.result()
                    except Exception as e:
                        for s, name in self.wanted:
                            if s == suite and SCENARIOS[name].install == inst:
                                self.results[(s, name)] = f"image build failed: {e}"
                        continue
                    images.append(img)
                    for s, name in self.wanted:
                        sc = SCENARIOS[name]
                        if s == suite and sc.install == inst:
                            boots[(s, name)] = boot_ex.submit(
                                H.boot, img, name, sc.user_data, self.workdir,
                                variant=sc.variant)
                for key, bfut in boots.items():
                    try:
                        self.results[key] = bfut.result()
                    except Exception as e:
                        self.results[key] = f"boot failed: {e!r}"
            except BaseException:
                # Ctrl-C or SIGTERM: don't wait for running boots; kill them
                build_ex.shutdown(wait=False, cancel_futures=True)
                boot_ex.shutdown(wait=False, cancel_futures=True)
                H.kill_all_live()
                raise
            build_ex.shutdown(wait=True)
            boot_ex.shutdown(wait=True)
            if os.environ.get("HR_VM_KEEP") != "1":
                for img in images:
                    shutil.rmtree(img.dir, ignore_errors=True)
        except H.HarnessError as e:
            self.error = str(e)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"

    def get(self, suite, scenario) -> H.BootResult:
        self.ensure()
        if self.error:
            pytest.fail(f"VM harness could not run: {self.error}", pytrace=False)
        r = self.results.get((suite, scenario))
        if r is None:
            pytest.fail(f"{suite}/{scenario} was not booted (selection bug)", pytrace=False)
        if isinstance(r, str):
            pytest.fail(r, pytrace=False)
        if not r.evidence_ok:
            pytest.fail("guest produced no evidence (boot hung or collector failed)\n"
                        + r.diagnostics(), pytrace=False)
        return r


@pytest.fixture(scope="session")
def vm_runner(request):
    runner = Runner(getattr(request.config, "_hr_vm_wanted", []))
    yield runner
    H.kill_all_live()


@pytest.fixture
def boot(request, vm_runner, suite):
    marker = request.node.get_closest_marker("vm_case")
    r = vm_runner.get(suite, marker.args[0])
    request.node._hr_vm_result = r
    return r


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    r = getattr(item, "_hr_vm_result", None)
    if rep.when == "call" and rep.failed and r is not None:
        rep.sections.append(("vm diagnostics", r.diagnostics()))


def pytest_sessionstart(session):
    session.config._hr_vm_t0 = time.monotonic()


def pytest_terminal_summary(terminalreporter):
    if H.TIMINGS.entries:
        terminalreporter.section("VM stage durations")
        terminalreporter.write_line(H.TIMINGS.table())
    if H.RUNTIMES:
        # issue 11: what our two oneshots cost at first boot, per scenario
        terminalreporter.section("VM unit runtimes (ExecMainStart to ExecMainExit, guest clock)")
        terminalreporter.write_line(H.runtimes_table())
    t0 = getattr(terminalreporter.config, "_hr_vm_t0", None)
    if H.TIMINGS.entries and t0 is not None:
        terminalreporter.write_line(
            f"VM suite wall time: {time.monotonic() - t0:.0f} s "
            f"({len(H.RUNTIMES)} boots with evidence, HR_VM_JOBS={JOBS})")
