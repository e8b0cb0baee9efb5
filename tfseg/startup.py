"""What ``import tfseg`` arranges, without paying for it: TensorFlow starts quietly, Keras knows tfseg's objects.

Importing TensorFlow takes seconds, and `tfseg --help`, a cached `tfseg pack` or the report need
none of it; so ``import tfseg`` imports neither TensorFlow nor Keras. It installs an import hook
(:func:`install`) that acts when the process first imports them, wherever that happens:

* **tensorflow**: imported with its start-up notices filtered out (below);
* **keras**: once it has loaded, tfseg's Keras objects are registered (tfseg.custom_objects), so
  ``import tfseg; keras.models.load_model("RUN/best.keras")`` works without ``custom_objects``.
  When Keras was imported before tfseg, they are registered at once. When a tfseg module imported
  Keras, registering must wait until that module (and any tfseg module importing it) has finished
  loading, or the registration would import it half-made: the hook also watches tfseg's own
  modules and registers as soon as none is still loading.

TensorFlow's C++ notices:

On a CPU machine every TensorFlow process prints, before anything useful, notices that
are not errors: "Could not find cuda drivers", "failed call to cuInit", the oneDNN and
CPU-instruction notices. Most come before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``
("All log messages before absl::InitializeLog() is called are written to STDERR"), so
setting it is not enough: while TensorFlow loads and looks for GPUs, the process's
standard error (file descriptor 2, where C++ writes) goes to a temporary file; then every
line that is not one of the known notices is written back, so real errors still show.

A user who sets ``TF_CPP_MIN_LOG_LEVEL`` themselves gets TensorFlow's output untouched.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Set beside the log level when tfseg chose it, so that child processes (pack's workers, a cluster's
# workers) inherit "tfseg's choice", not "the user's", and quiet their own start-up too.
CHOSEN_BY_TFSEG = "TFSEG_CHOSE_TF_LOG_LEVEL"

# Substrings of the start-up lines that say nothing a user must act on.
NOTICES = (
    "All log messages before absl::InitializeLog() is called",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
    "oneDNN custom operations are on",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)


def is_notice(line: str) -> bool:
    return any(notice in line for notice in NOTICES)


def without_notices(text: str) -> str:
    """``text`` (captured standard error) with the start-up notice lines taken out."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_notice(line))


def _quiet_tensorflow_wanted() -> bool:
    user_chose = LOG_LEVEL_VARIABLE in os.environ and os.environ.get(CHOSEN_BY_TFSEG) != "1"
    return not user_chose


@contextlib.contextmanager
def _filtered_stderr():
    """Standard error (the file descriptor, where C++ writes) captured; written back without the notices."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(without_notices(captured.read().decode(errors="replace")))
            sys.stderr.flush()


def register_keras_objects() -> None:
    import tfseg.custom_objects  # noqa: F401  (importing it registers every tfseg Keras class)


WATCHED = ("tfseg", "keras", "tensorflow")


def _module_loading() -> bool:
    """Whether a module of tfseg, Keras or TensorFlow is being imported right now (its spec is ``_initializing``)."""
    return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()) if name.split(".")[0] in WATCHED)


class _StartupHook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Wraps the loading of tensorflow (quietly), keras and tfseg's modules (then register tfseg's Keras objects)."""

    def __init__(self, third_party: set[str]):
        self.third_party, self.loaders, self.registered = set(third_party), {}, False

    def find_spec(self, fullname, path=None, target=None):
        # `python -m tfseg` runs tfseg/__main__.py through runpy, which wants the real loader's code.
        ours = fullname.startswith("tfseg.") and not self.registered and not fullname.endswith(".__main__")
        if fullname not in self.third_party and not ours:
            return None
        self.third_party.discard(fullname)
        sys.meta_path.remove(self)  # so that the real finders answer
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        self.loaders[fullname] = spec.loader
        spec.loader = self
        return spec

    # What importlib's other users (runpy, pkgutil, inspect) may ask a loader: answered by the real one.
    def get_code(self, fullname):
        return self.loaders[fullname].get_code(fullname)

    def get_source(self, fullname):
        return self.loaders[fullname].get_source(fullname)

    def is_package(self, fullname):
        return self.loaders[fullname].is_package(fullname)

    def create_module(self, spec):
        return self.loaders[spec.name].create_module(spec)

    def exec_module(self, module):
        loader = self.loaders.pop(module.__name__)
        module.__spec__.loader = module.__loader__ = loader  # the module sees its real loader (resources, reload)
        if module.__name__ == "tensorflow" and _quiet_tensorflow_wanted():
            os.environ[LOG_LEVEL_VARIABLE] = "2"  # INFO and WARNING logs of the C++ core, once it reads it
            os.environ[CHOSEN_BY_TFSEG] = "1"
            with _filtered_stderr():
                loader.exec_module(module)
                module.config.list_physical_devices()  # the CUDA probe ("failed call to cuInit") happens here
        else:
            loader.exec_module(module)
        self.register_when_ready(finished=module.__spec__)

    def register_when_ready(self, finished=None) -> None:
        if self.registered or "keras" not in sys.modules:
            return
        if finished is not None:
            finished._initializing = False  # the module whose loading just ended (Python clears it right after)
        if _module_loading():
            return  # a module is half-made: the last one to finish registers
        self.registered = True
        register_keras_objects()


def install() -> None:
    """Arrange the quiet TensorFlow start-up and the Keras registration for this process (see the module)."""
    if any(isinstance(hook, _StartupHook) for hook in sys.meta_path):
        return
    hook = _StartupHook({name for name in ("tensorflow", "keras") if name not in sys.modules})
    sys.meta_path.insert(0, hook)
    if "keras" in sys.modules:
        hook.registered = True
        register_keras_objects()
