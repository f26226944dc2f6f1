"""azure-suggest and ``host_routing.azure.suggest``: the effects around the pure suggester.

The jobs live in their own modules: ``imds`` (HTTP), ``azure_instance`` (the
instance document, read), ``azure_sizes`` (which sizes have InfiniBand),
``suggest`` (the block, from check-overlap's own analysis).  This module only
gathers their inputs (the instance document, one kernel snapshot, the KVP
pool) and puts the result where it belongs: stdout for the command,
``azure-suggestion.yaml`` and the log at first boot.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .atomic import write_atomic
from .azure_instance import DocumentError, parse_instance
from .azure_sizes import is_infiniband_size
from .config import ConfigError, HostRouting, load_file
from .constants import KVP_POOL_PATH, RUN_DIR
from .imds import DEFAULT_IMDS_URL, ImdsError, fetch_instance
from .kvp import KvpRead, read_ipoib
from .suggest import (
    KernelSnapshot,
    Suggestion,
    not_infiniband_line,
    render_json,
    render_yaml,
    suggest,
)

LOG = logging.getLogger(__name__)

SUGGESTION_FILE = "azure-suggestion.yaml"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def suggest_from_kernel(document: Dict[str, Any], netns: Optional[str], pool: KvpRead,
                        expected: Sequence[Any],
                        base: Optional[HostRouting] = None) -> Suggestion:
    """One kernel snapshot (``netns`` None: the host's), then the pure suggester.

    The socket stays open while the suggester runs: the analysis asks the
    kernel about each region, as check-overlap does.  The KVP pool's own
    problems (absent, malformed, ...) become warnings of the suggestion.
    """
    from .netlink import PYROUTE2, Kernel

    # pyroute2, as the README says: advice is off the units' boot path, where the
    # stdlib codec saves the import; the differential test holds both equal.
    with Kernel(netns, backend=PYROUTE2) as kernel:
        links = tuple(kernel.links())  # first: names for the tables' routes
        snapshot = KernelSnapshot(kernel.tables(4), links, tuple(kernel.addresses(4)),
                                  kernel.answer)
        suggestion = suggest(document, snapshot, pool.pairs, expected, base)
    suggestion.warnings[:0] = list(pool.problems)
    return suggestion


# ---------------------------------------------------------------------------
# Command line: azure-suggest
# ---------------------------------------------------------------------------

def _inputs(args: argparse.Namespace) -> tuple:
    """(base config or None, expected CIDRs) from ``--config`` and ``--expected-cidr``."""
    import ipaddress

    base = load_file(args.config) if args.config else None
    expected: List[Any] = list(base.expected_cidrs) if base else []
    for text in args.expected_cidr:
        try:
            expected.append(ipaddress.IPv4Network(text, strict=False))
        except ValueError as err:
            raise ValueError(f"--expected-cidr {text!r}: {err}. Fix: give an IPv4 CIDR "
                             "such as 10.0.5.0/24.") from err
    if not expected:
        raise ValueError("no expected CIDRs: give --expected-cidr CIDR, or --config FILE "
                         "with host_routing.route_overlap.expected_cidrs")
    return base, list(dict.fromkeys(expected))


def _write_analysis(path: Optional[str], analysis: Mapping[str, Any]) -> None:
    if path:
        write_atomic(path, json.dumps(analysis, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    """``azure-suggest``: print the suggestion; 0 ok, 1 IMDS or kernel failed, 2 usage."""
    try:
        base, expected = _inputs(args)
        if args.timeout <= 0:
            raise ValueError("--timeout must be positive")
        if args.netns is not None and not os.path.exists(f"/run/netns/{args.netns}"):
            raise ValueError(f"--netns {args.netns!r}: no such network namespace")
    except (ConfigError, ValueError, OSError) as err:
        print(f"azure-suggest: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        document = fetch_instance(args.imds_url or DEFAULT_IMDS_URL, args.timeout)
        vm_size = parse_instance(document).vm_size
    except (ImdsError, DocumentError) as err:
        print(f"azure-suggest: {err}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if not is_infiniband_size(vm_size):
            line = not_infiniband_line(vm_size)
            _write_analysis(args.analysis, {"vm_size": vm_size, "infiniband": False,
                                            "message": line})
            print("{}" if args.format == "json" else line)
            if args.format == "json":
                print(line, file=sys.stderr)
            return EXIT_OK
        pool = read_ipoib(args.kvp_pool)
        try:
            suggestion = suggest_from_kernel(document, args.netns, pool, expected, base)
        except (ConfigError, DocumentError):
            raise
        except Exception as err:  # pyroute2 raises many types; any means "cannot look"
            print(f"azure-suggest: cannot read the kernel's routes: {err}", file=sys.stderr)
            return EXIT_FAILED
        analysis = suggestion.analysis()
        analysis["kvp"] = pool.to_dict()
        _write_analysis(args.analysis, analysis)
    except (ConfigError, DocumentError) as err:
        print(f"azure-suggest: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        print(f"azure-suggest: cannot write --analysis {args.analysis}: {err.strerror}",
              file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(render_json(suggestion) if args.format == "json"
                     else render_yaml(suggestion))
    return EXIT_OK


# ---------------------------------------------------------------------------
# First boot
# ---------------------------------------------------------------------------

def datasource_document(cloud: Any) -> Optional[Dict[str, Any]]:
    """The IMDS instance document cloud-init's Azure datasource already fetched, or None.

    Where it is, read in the sources (``cloudinit/sources/DataSourceAzure.py``):
    ``crawl_metadata`` stores the document under ``crawled_data["metadata"]["imds"]``
    and ``_get_data`` copies it to ``self._metadata_imds`` and, merged with
    DEFAULT_METADATA, to ``self.metadata["imds"]``:

    * 22.4 (/usr/lib/python3/dist-packages/cloudinit/sources/DataSourceAzure.py):
      fetched by ``self.get_imds_data_with_api_fallback(retries=10)`` (lines 567, 592),
      stored at lines 602 and 767-768;
    * 25.1 (/opt/cloudinit-hostrouting-test/cloud-init-25.1/...): fetched by
      ``self.get_metadata_from_imds(report_failure=True)``, which calls the new
      ``cloudinit/sources/azure/imds.py:fetch_metadata_with_api_fallback``
      (lines 699 and 734), stored at lines 753 and 957-958;
    * 26.2: as 25.1 (fetched at lines 739 and 778), stored at lines 796 and 1029-1030.

    So what moved between versions is the fetching code, not the attribute: both
    ``metadata["imds"]`` (public, read first) and ``_metadata_imds`` hold it in
    all three.  A failed fetch leaves ``{}`` there in every version; that, a
    datasource that is not ``dsname == "Azure"``, or a value without
    ``compute.vmSize`` gives None, and the caller asks IMDS over HTTP.
    tests/test_azure_boot.py checks these lines are still what the sources say.
    """
    source = getattr(cloud, "datasource", None)
    if getattr(source, "dsname", None) != "Azure":
        return None
    metadata = getattr(source, "metadata", None)
    candidates = [metadata.get("imds") if isinstance(metadata, Mapping) else None,
                  getattr(source, "_metadata_imds", None)]
    for doc in candidates:
        if isinstance(doc, dict):
            try:
                parse_instance(doc)
            except DocumentError:
                continue
            return doc
    return None


def suggest_at_boot(cfg: Mapping[str, Any], run_dir: str = RUN_DIR,
                    deadline_s: float = 10.0, imds_url: Optional[str] = None,
                    document: Optional[Dict[str, Any]] = None,
                    pool_path: str = KVP_POOL_PATH) -> Optional[str]:
    """Make the suggestion at first boot; write and return its text.

    For ``host_routing.azure.suggest: true``.  ``document`` is the instance
    document cloud-init already has (``datasource_document``); None means ask
    IMDS over HTTP (``imds_url`` None: Azure's) within ``deadline_s``.  The
    user's ``host_routing`` is the base of the block.  It never raises: a boot
    must not fail or stall because advice could not be had.  The text (a
    suggestion, the one-line non-IB answer, or a comment saying why there is
    none) is written atomically to ``run_dir/azure-suggestion.yaml`` for
    whoever debugs the node.  Returns the text, or None without a suggestion.
    """
    from .config import parse

    text: Optional[str] = None
    try:
        base = parse(cfg.get("host_routing") or {})
        source = "cloud-init's datasource" if document is not None else "IMDS over HTTP"
        if document is None:
            document = fetch_instance(imds_url or DEFAULT_IMDS_URL, deadline_s)
        vm_size = parse_instance(document).vm_size
        if is_infiniband_size(vm_size):
            suggestion = suggest_from_kernel(document, None, read_ipoib(pool_path),
                                             base.expected_cidrs, base)
            text = render_yaml(suggestion)
        else:
            text = f"# {not_infiniband_line(vm_size)}\n"
        text += f"# instance document from {source}\n"
        LOG.info("azure-suggest:\n%s", text)
        note = text
    except Exception as err:  # never fail the boot over advice
        LOG.warning("azure-suggest: no suggestion: %s", err)
        note = f"# azure-suggest could not make a suggestion: {err}\n"
    try:
        write_atomic(os.path.join(run_dir, SUGGESTION_FILE), note)
    except OSError as err:
        LOG.warning("azure-suggest: cannot write %s: %s", run_dir, err)
    return text
