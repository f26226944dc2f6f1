"""Packaging for cloudinit-hostrouting (setuptools, so Debian 12's pip builds it offline).

The version has one source, ``__version__`` in cloudinit_hostrouting/__init__.py;
it is read as text, not imported, so building never imports the package.
debian/changelog carries the same version (tests/test_packaging.py checks it).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (HERE / "cloudinit_hostrouting" / "__init__.py").read_text(encoding="utf-8"),
                    re.MULTILINE)
if VERSION is None:
    raise SystemExit("setup.py: no __version__ line in cloudinit_hostrouting/__init__.py")

setup(
    name="cloudinit-hostrouting",
    version=VERSION.group(1),
    description="cloud-init module: static routes and a route-overlap gate for "
                "InfiniBand (Azure ND-isr) hosts",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.9",
    packages=find_packages(include=["cloudinit_hostrouting", "cloudinit_hostrouting.*"]),
    py_modules=["cc_host_routing"],
    install_requires=["pyroute2>=0.7.2", "PyYAML>=5.3"],
    entry_points={"console_scripts": ["cloudinit-hostrouting=cloudinit_hostrouting.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Networking",
    ],
)
