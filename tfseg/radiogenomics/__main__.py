"""``python -m tfseg.radiogenomics``: the same command as ``tfseg radiogenomics``."""
import sys

from tfseg.cli.radiogenomics import main

sys.exit(main(prog="python -m tfseg.radiogenomics"))
