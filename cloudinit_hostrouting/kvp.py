"""Read the IPoIB addresses the Hyper-V host publishes before the guest agent applies them.

On Azure HPC images the Linux guest agent (``OS.EnableRDMA=y``) gives every
IPoIB link its address late, with ``ip addr add IP/16``; the host has already
written those addresses to KVP pool 0.  Reading them lets the boot check judge
the routing table as it will be once the /16 routes exist (analysis.py's
pending routes), instead of the table of the moment.

The file layout is the one both readers of the pool use:

* the kernel's ``tools/hv/hv_kvp_daemon.c`` writes ``struct kvp_record { char
  key[HV_KVP_EXCHANGE_MAX_KEY_SIZE]; char value[HV_KVP_EXCHANGE_MAX_VALUE_SIZE]; }``
  records back to back with ``fwrite`` into ``/var/lib/hyperv/.kvp_pool_N``
  (``kvp_update_file``), the sizes being 512 and 2048;
* WALinuxAgent's ``azurelinuxagent/pa/rdma/rdma.py`` (``read_ipoib_data``) reads
  512 then 2048 bytes at a time, cuts each at its first NUL, takes the first
  record whose key is ``IPoIB_Data``, and (``provision_sriov_multiple_ib``)
  splits the value on ``|``: ``NUMPAIRS:n`` then n ``MAC:IP`` pairs; a count that
  does not match or a pair that does not parse makes it assign nothing.  It
  compares the MAC with the link's address, upper-cased and without colons.

Everything here is pure except ``read_ipoib``, which reads at most
``KVP_POOL_MAX_BYTES`` and turns every file problem into a ``KvpRead`` with a
line for the report; it never raises.
"""

from __future__ import annotations

import ipaddress
import os
import re

from .constants import (
    IPOIB_KEY,
    KVP_KEY_SIZE,
    KVP_POOL_MAX_BYTES,
    KVP_VALUE_SIZE,
    WAAGENT_CONF,
)
from .records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

RECORD_SIZE = KVP_KEY_SIZE + KVP_VALUE_SIZE
SOURCE = f"KVP {IPOIB_KEY}"  # how reports name where a pending route comes from

# What read_ipoib found.  Only "ok" and "malformed" can carry pairs.
ABSENT, UNREADABLE, TOO_LARGE, NO_KEY, MALFORMED, OK = (
    "absent", "unreadable", "too-large", "no-key", "malformed", "ok")

MAC_RE = re.compile(r"[0-9A-F]{12}\Z")
_COUNT_RE = re.compile(r"NUMPAIRS:(\d+)\Z")


class Pair(NamedTuple):
    """One ``MAC:IP`` pair: the address the agent will add (as IP/16) to the link with MAC."""

    mac: str  # 12 upper-case hex digits, no separators
    address: ipaddress.IPv4Address


class KvpRead(NamedTuple):
    """What the pool said about IPoIB: its state, the usable pairs, and a line per problem."""

    path: str
    state: str  # absent, unreadable, too-large, no-key, malformed, ok
    pairs: Tuple[Pair, ...]
    problems: Tuple[str, ...]

    def to_dict(self) -> dict:
        return {"path": self.path, "state": self.state,
                "pairs": [{"mac": p.mac, "address": str(p.address)} for p in self.pairs],
                "problems": list(self.problems)}


def read_ipoib(path: str, max_bytes: int = KVP_POOL_MAX_BYTES) -> KvpRead:
    """The ``IPoIB_Data`` pairs of the pool at ``path``; never raises.

    A missing pool is normal off Azure (state ``absent``, one line saying so);
    any other problem is a line naming the path, what is wrong and what it means.
    """
    try:
        with open(path, "rb") as pool:
            data = pool.read(max_bytes + 1)
    except FileNotFoundError:
        return KvpRead(path, ABSENT, (), (
            f"KVP pool {path} does not exist: no IPoIB addresses announced "
            "(not on Hyper-V, or hv_kvp_daemon is not running)",))
    except OSError as err:
        return KvpRead(path, UNREADABLE, (), (
            f"KVP pool {path} cannot be read ({err.strerror or err}): IPoIB addresses "
            "cannot be anticipated",))
    if len(data) > max_bytes:
        return KvpRead(path, TOO_LARGE, (), (
            f"KVP pool {path} is larger than {max_bytes} bytes, not a KVP pool: "
            "IPoIB addresses cannot be anticipated",))
    value, problems = find_value(data, IPOIB_KEY, path)
    if value is None:
        return KvpRead(path, NO_KEY, (), (
            *problems,
            f"KVP pool {path} has no {IPOIB_KEY} record: no IPoIB addresses announced"))
    pairs, bad = parse_ipoib(value)
    problems.extend(f"KVP pool {path}: {IPOIB_KEY} {line}" for line in bad)
    return KvpRead(path, MALFORMED if bad else OK, tuple(pairs), tuple(problems))


def find_value(data: bytes, key: str, path: str) -> Tuple[Optional[str], List[str]]:
    """The value of the first record named ``key`` in a pool's bytes, and problems seen.

    Like the agent: records are read whole or (the last) as far as they go, each
    field cut at its first NUL.  A trailing partial record is reported.
    """
    problems: List[str] = []
    if len(data) % RECORD_SIZE:
        problems.append(f"KVP pool {path} is {len(data)} bytes, not a whole number of "
                        f"{RECORD_SIZE}-byte records: the last one is cut short")
    wanted = key.encode()
    for offset in range(0, len(data), RECORD_SIZE):
        name = data[offset:offset + KVP_KEY_SIZE].partition(b"\0")[0]
        if name != wanted:
            continue
        raw = data[offset + KVP_KEY_SIZE:offset + RECORD_SIZE].partition(b"\0")[0]
        try:
            return raw.decode("ascii"), problems
        except UnicodeDecodeError:
            return "", [*problems, f"KVP pool {path}: the {key} value is not ASCII text"]
    return None, problems


def parse_ipoib(value: str) -> Tuple[List[Pair], List[str]]:
    """``NUMPAIRS:n|MAC:IP|...`` as pairs, and a line per problem.

    Every pair that parses is kept even when others do not: for a gate, a
    route predicted in vain is a refusal someone reads, one missed is a
    blackhole nobody sees.  (The agent itself assigns nothing then; the lines
    say so.)
    """
    if not value:
        return [], ["value is empty"]
    head, *items = value.split("|")
    problems: List[str] = []
    count = _COUNT_RE.match(head)
    if count is None:
        problems.append(f"value starts with {head[:40]!r}, not NUMPAIRS:<n>")
    elif int(count.group(1)) != len(items):
        problems.append(f"says NUMPAIRS:{count.group(1)} but has {len(items)} pairs")
    pairs: List[Pair] = []
    for item in items:
        mac, sep, ip = item.partition(":")
        if not sep:
            problems.append(f"pair {item[:60]!r} is not MAC:IP")
            continue
        if not MAC_RE.match(mac):
            problems.append(f"pair {item[:60]!r}: MAC {mac[:30]!r} is not 12 upper-case hex "
                            "digits (the agent would never match it to a link)")
            continue
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            problems.append(f"pair {item[:60]!r}: {ip[:40]!r} is not an IPv4 address")
            continue
        pairs.append(Pair(mac, address))
    if problems:
        problems.append("the guest agent assigns no address from a value like this; "
                        f"the {len(pairs)} pair(s) that parse are anticipated anyway")
    return pairs, problems


def rdma_enabled(root: str = "/") -> Tuple[Optional[bool], str]:
    """Does ``ROOT/etc/waagent.conf`` turn the agent's RDMA setup on (``OS.EnableRDMA=y``)?

    (True/False, or None when the file is missing or unreadable), with a line
    saying what was found.  ``KEY=VALUE`` lines, ``#`` starting a comment, a
    ``y`` value (any case) meaning on, the last occurrence winning.
    """
    path = os.path.join(root, WAAGENT_CONF.lstrip("/"))
    try:
        with open(path, "rb") as conf:
            text = conf.read(1 << 20).decode("utf-8", "replace")
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except OSError as err:
        return None, f"{path} cannot be read ({err.strerror or err})"
    enabled: Optional[bool] = None
    for line in text.splitlines():
        key, sep, val = line.split("#", 1)[0].partition("=")
        if sep and key.strip() == "OS.EnableRDMA":
            enabled = val.strip().lower() == "y"
    if enabled is None:
        return False, f"{path} does not set OS.EnableRDMA"
    return enabled, f"{path} has OS.EnableRDMA={'y' if enabled else 'n'}"
