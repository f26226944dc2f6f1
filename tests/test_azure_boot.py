"""``host_routing.azure.suggest: true`` at first boot: cloud-init's document first, HTTP else.

``handle()`` runs in-process with a real ``cloudinit.cloud.Cloud``.  Its
datasource is a stand-in, because Azure's datasource cannot run here (its crawl
needs the Azure fabric: the OVF media, wireserver and IMDS at 169.254.169.254).
The stand-in carries the instance document exactly where each cloud-init
version's ``DataSourceAzure`` puts it, and the first test checks in the
installed 22.4 and the unpacked 25.1 and 26.2 sources that this is still so.
The HTTP fallback is asked of the real fake IMDS server on 127.0.0.1; where
the datasource has the document, that server serves a different size, so a
request that should not have been made shows in the result as well as in its
request log.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from cloudinit.cloud import Cloud
from fake_imds import FakeImds, doc, load_fixture
from module_support import Systemctl

from cloudinit_hostrouting.azure import SUGGESTION_FILE, datasource_document
from cloudinit_hostrouting.module import handle

SOURCES = {
    "22.4": "/usr/lib/python3/dist-packages",
    "25.1": os.environ.get("CLOUDINIT25_DIR", "/opt/cloudinit-hostrouting-test/cloud-init-25.1")
    + "/usr/lib/python3/dist-packages",
    "26.2": os.environ.get("CLOUDINIT26_DIR", "/opt/cloudinit-hostrouting-test/cloud-init-26.2")
    + "/usr/lib/python3/dist-packages",
}
# The statements that put the document where datasource_document reads it.
STORES = ('"metadata": util.mergemanydict([md, {"imds": imds_md}]),',
          'self._metadata_imds = crawled_data["metadata"]["imds"]',
          'self.metadata = util.mergemanydict(\n            [crawled_data["metadata"], '
          'DEFAULT_METADATA]')

H200 = load_fixture("ND96isr_H200_v5")
D4S = load_fixture("D4s_v5")
CFG = {"host_routing": {"route_overlap": {"expected_cidrs": ["10.0.5.0/24"]},
                        "azure": {"suggest": True}}}


@pytest.mark.parametrize("version", sorted(SOURCES))
def test_each_cloud_init_stores_the_document_where_we_read_it(version: str) -> None:
    path = Path(SOURCES[version]) / "cloudinit/sources/DataSourceAzure.py"
    if not path.exists():
        pytest.skip(f"cloud-init {version} is not unpacked here (scripts/setup-dev)")
    text = path.read_text(encoding="utf-8")
    for statement in STORES:
        assert statement in text, f"{path}: {statement!r} moved; update datasource_document"
    assert 'dsname = "Azure"' in text


class AzureStandIn:
    """Azure's datasource as its ``_get_data`` leaves it (see the module docstring)."""

    dsname = "Azure"

    def __init__(self, imds_md: Dict[str, Any], shape: str):
        crawled = {"instance-id": "i-1", "imds": imds_md}  # crawl_metadata's "metadata"
        default_metadata = {"instance-id": "iid-AZURE-NODE"}  # DEFAULT_METADATA
        self.metadata = {**default_metadata, **copy.deepcopy(crawled)}
        self._metadata_imds = crawled["imds"]
        if shape == "private only":  # an object restored from an older pickle, say
            del self.metadata["imds"]
        elif shape == "public only":
            del self._metadata_imds


class NoCloudStandIn:
    def __init__(self) -> None:
        self.dsname = "NoCloud"
        self.metadata = {"instance-id": "i-2", "imds": copy.deepcopy(H200)}  # not Azure


def cloud(datasource: Any) -> Cloud:
    return Cloud(datasource=datasource, paths=None, cfg={}, distro=None,  # type: ignore[arg-type]
                 runners=None)


def boot(tmp_path: Path, datasource: Any, imds_url: str) -> str:
    handle("host_routing", copy.deepcopy(CFG), cloud(datasource), None, [],
           root=str(tmp_path), systemctl=Systemctl(), imds_url=imds_url, imds_deadline=5.0)
    return (tmp_path / "run/cloudinit-hostrouting" / SUGGESTION_FILE).read_text()


@pytest.mark.parametrize("version", sorted(SOURCES))
@pytest.mark.parametrize("shape", ["both", "public only", "private only"])
def test_handle_uses_the_datasource_document_without_http(
        tmp_path: Path, version: str, shape: str) -> None:
    with FakeImds([doc(D4S)], final=doc(D4S)) as imds:
        text = boot(tmp_path, AzureStandIn(copy.deepcopy(H200), shape), imds.url)
    assert imds.requests == []
    assert text.startswith("#cloud-config\n# host_routing suggested by cloudinit-hostrouting "
                           "azure-suggest for\n# Standard_ND96isr_H200_v5")
    assert text.endswith("# instance document from cloud-init's datasource\n")


@pytest.mark.parametrize("datasource, why", [
    (None, "no datasource"),
    (NoCloudStandIn(), "not Azure"),
    (AzureStandIn({}, "both"), "cloud-init's own IMDS fetch failed: {} in every version"),
    (AzureStandIn({"compute": {}}, "both"), "no compute.vmSize"),
])
def test_handle_falls_back_to_http(tmp_path: Path, datasource: Any, why: str) -> None:
    with FakeImds([doc(D4S)]) as imds:
        text = boot(tmp_path, datasource, imds.url)
    assert len(imds.requests) == 1, why
    assert text == ("# Standard_D4s_v5 is not an InfiniBand size: no IB route can shadow "
                    "cluster CIDRs, so no host_routing override is needed.\n"
                    "# instance document from IMDS over HTTP\n")


def test_handle_without_any_document_writes_why_and_does_not_fail(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: refused, at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = boot(tmp_path, None, f"http://127.0.0.1:{port}/metadata/instance")
    assert text.startswith("# azure-suggest could not make a suggestion: IMDS unreachable")


@pytest.mark.parametrize("odd", [None, 7, "x", [], {"imds": None}, {"imds": []},
                                 {"imds": {"compute": {"vmSize": ["x"]}}}])
def test_odd_datasource_values_give_none(odd: Optional[Any]) -> None:
    class Odd:
        dsname = "Azure"
        metadata = odd
        _metadata_imds = odd

    assert datasource_document(cloud(Odd())) is None


def test_the_document_is_returned_as_cloud_init_holds_it() -> None:
    source = AzureStandIn(copy.deepcopy(H200), "both")
    assert datasource_document(cloud(source)) == H200
