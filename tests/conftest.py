"""Shared fixtures: a synthetic kaggle_3m phantom and, when TFSEG_LGG_DIR is set, real patients."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REAL_DATA_ENV = "TFSEG_LGG_DIR"


@pytest.fixture(scope="session")
def real_data_dir():
    """A restored kaggle_3m folder with a few real patients (set by .ci/run), else skip."""
    path = os.environ.get(REAL_DATA_ENV)
    if not path:
        pytest.skip(f"{REAL_DATA_ENV} is not set: restore patients with "
                    f"`python ../shared/lgg/restore.py DEST --patients 3` and export {REAL_DATA_ENV}=DEST/kaggle_3m")
    if not os.path.isdir(path):
        pytest.fail(f"{REAL_DATA_ENV}={path} is not a directory")
    return path


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """A small synthetic kaggle_3m-shaped folder of real .tif files (4 patients, 12 slices each)."""
    from tfseg.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    return write_phantom(root / "kaggle_3m", n_patients=4, n_slices=12, seed=0)


@pytest.fixture(scope="session")
def packed_phantom_dir(phantom_dir, tmp_path_factory):
    """The phantom packed at 64 px by `tfseg.data.pack.pack`, in worker processes as a user runs it.

    Read-only: tests that change a packed folder copy it first.
    """
    from tfseg.data.pack import pack

    out = tmp_path_factory.mktemp("packed") / "tfrecords64"
    pack(phantom_dir, out, image_size=64, workers=1, progress=False)
    return out


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Tests that call train() set the global dtype policy (``auto`` is mixed_bfloat16 on bf16 CPUs);
    reset it so that a later test's models are not silently built in bfloat16."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")
