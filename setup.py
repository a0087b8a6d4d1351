"""Shim for installers that predate PEP 517 (JetPack 4.6 ships pip 9 and setuptools 39 for Python
3.6); all other metadata lives in setup.cfg.

The version is read from segdeploy/_version.py as text: setuptools before 46.4 would import the
package for ``attr:``, which fails before numpy is installed.
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "segdeploy", "_version.py"), encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(version=VERSION)
