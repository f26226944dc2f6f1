"""``python3 -m cloudinit_hostrouting``: the same as the console script.

The units use this form with an absolute interpreter path, so they work
whether pip put the console script in /usr/bin or /usr/local/bin.
"""

import sys

from .cli import main

sys.exit(main())
