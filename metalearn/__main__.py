"""``python -m metalearn``: the same command line as ``metalearn``."""

import sys

from metalearn.cli import main

if __name__ == "__main__":  # not when pytest imports the module to look for doctests
    sys.exit(main())
