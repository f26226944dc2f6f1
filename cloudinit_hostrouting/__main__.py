"""``python3 -m cloudinit_hostrouting``: the same as the console script.

The boot units do not come in this way but through ``unit.py`` (see there);
this form is for humans, the guard and tests.

Before exit, once the work is done, output flushed and sockets closed, every
object left is moved out of the collector's reach (``gc.freeze``): the
interpreter's final collection then has nothing to walk, which is time on the
units' boot path spent for nothing.
"""

import gc
import sys

from .cli import main


def run() -> None:
    """Run the command line in ``sys.argv`` and exit with its code."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
