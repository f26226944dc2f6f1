"""``python3 -m cloudinit_hostrouting``: the same as the console script.

The units use this form with an absolute interpreter path, so they work
whether pip put the console script in /usr/bin or /usr/local/bin.

The two boot units run without the cyclic garbage collector (see below).
Before exit, once the work is done, output flushed and sockets closed, every
object left is moved out of the collector's reach (``gc.freeze``): the
interpreter's final collection then has nothing to walk, which is time on the
units' boot path spent for nothing.
"""

import gc
import sys

# The two boot units build one large working set that lives until they exit (the
# config's routes, the kernel's tables) and leave almost no cyclic garbage: the
# collector's full passes over that set found nothing to free and were a sixth of
# apply-routes' time at 10,000 routes.  The long-running guard keeps the collector.
# (Before importing the CLI: the imports' own passes are saved too.)
if sys.argv[1:2] in (["apply-routes"], ["check-overlap"]):
    gc.disable()

from .cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
gc.freeze()
sys.exit(code)
