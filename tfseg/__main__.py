"""``python -m tfseg``: the same as the ``tfseg`` command."""
import sys

from tfseg.cli import main

sys.exit(main())
