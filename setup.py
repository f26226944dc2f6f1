"""Packaging for cloudinit-hostrouting (setuptools, so Debian 12's pip builds it offline)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="cloudinit-hostrouting",
    version="0.1.0",
    description="cloud-init module: static routes and a route-overlap gate for "
                "InfiniBand (Azure ND-isr) hosts",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
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
