"""``python -m tfseg.radiogenomics``: see `tfseg.radiogenomics.study`."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the connected-component helper imports keras

from tfseg.radiogenomics.study import main  # noqa: E402

sys.exit(main())
