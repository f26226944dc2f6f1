"""Every number and path the package shares, in one place.

Kept free of imports so that any module, on the units' boot path or not, can
use it for nothing.  A value that two modules both need lives here, not in
either of them: a protocol tag spelled twice is a route misjudged once.
"""

# --- rtnetlink ----------------------------------------------------------------
# Our routes carry this rtnetlink protocol, so they can always be told apart
# from everyone else's (`ip route show proto hostrouting`).  Unused by the
# kernel and by iproute2's reserved list.
RTPROT_HOSTROUTING = 214
# Routes the guard adds on its own (auto_mitigate), so it can reconcile exactly them.
RTPROT_HOSTROUTING_AUTO = 215
OUR_PROTOS = frozenset({RTPROT_HOSTROUTING, RTPROT_HOSTROUTING_AUTO})
RTPROT_KERNEL = 2

MAIN_TABLE = 254
LOCAL_TABLE = 255

RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
ARPHRD_ETHER = 1
ARPHRD_INFINIBAND = 32
# The metric the kernel gives an IPv6 route added without one (IP6_RT_PRIO_USER);
# IPv4 routes without one have metric 0.  Part of a route's key, so both matter.
IP6_DEFAULT_METRIC = 1024
FR_ACT_TO_TBL = 1  # an ip rule's "lookup TABLE" action

# Names as ``ip route`` prints them: route types, protocols and rule actions.
RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
             6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
PROTOS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 9: "ra",
          16: "dhcp", RTPROT_HOSTROUTING: "hostrouting",
          RTPROT_HOSTROUTING_AUTO: "hostrouting-auto"}
RULE_ACTIONS = {6: "blackhole", 7: "unreachable", 8: "prohibit"}

# --- files ----------------------------------------------------------------------
RUN_DIR = "/run/cloudinit-hostrouting"
CONFIG_DIR = "/etc/cloudinit-hostrouting"
CONFIG_PATH = CONFIG_DIR + "/host-routing.json"
MANIFEST_PATH = CONFIG_DIR + "/manifest.json"
UNIT_DIR = "/etc/systemd/system"
PROTOS_PATH = "/etc/iproute2/rt_protos.d/cloudinit-hostrouting.conf"

# --- Hyper-V KVP and the Azure guest agent (IPoIB) --------------------------------
# Pool 0 is where the host's key/value pairs land; hv_kvp_daemon writes it.
KVP_POOL_PATH = "/var/lib/hyperv/.kvp_pool_0"
KVP_KEY_SIZE = 512  # HV_KVP_EXCHANGE_MAX_KEY_SIZE
KVP_VALUE_SIZE = 2048  # HV_KVP_EXCHANGE_MAX_VALUE_SIZE
# A real pool holds a few dozen records; 400 records is far beyond that and
# still only 1 MiB read at boot.
KVP_POOL_MAX_BYTES = 400 * (KVP_KEY_SIZE + KVP_VALUE_SIZE)
IPOIB_KEY = "IPoIB_Data"
# The agent adds every IPoIB address as ADDRESS/16, whatever the host's subnet is.
IPOIB_PREFIXLEN = 16
WAAGENT_CONF = "/etc/waagent.conf"

# --- units ----------------------------------------------------------------------
STATIC_UNIT = "hostrouting-static-routes.service"
CHECK_UNIT = "hostrouting-route-overlap.service"
GUARD_UNIT = "hostrouting-guard.service"
OUR_UNITS = (STATIC_UNIT, CHECK_UNIT)
DROPIN_NAME = "50-hostrouting.conf"
# The oneshots' one wait budget (default route, interfaces; for the check also
# the IPoIB addresses, which add route_overlap.wait_for_ipoib) and start timeout.
DEFAULT_WAIT_S = 30
START_TIMEOUT_S = 120
