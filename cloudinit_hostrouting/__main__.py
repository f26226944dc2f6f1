"""``python3 -m cloudinit_hostrouting``: the same as the console script.

The units use this form with an absolute interpreter path, so they work
whether pip put the console script in /usr/bin or /usr/local/bin.

Before exit, once the work is done, output flushed and sockets closed, every
object left is moved out of the collector's reach (``gc.freeze``): the
interpreter's final collection then has nothing to walk, which is time on the
units' boot path spent for nothing.
"""

import gc
import sys

from .cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
gc.freeze()
sys.exit(code)
