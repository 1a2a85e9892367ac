"""`python -m diffsmooth ...`: the same command line as the `diffsmooth` script."""
import sys

from .cli import main

sys.exit(main())
