"""Optional packages: imported only where a step needs them (`require`, whose error names the pip
line), or asked about without importing (`available`)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType

from featstore.errors import MissingDependencyError


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up logging before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextlib.contextmanager
def _silenced_stderr():
    """Send file descriptor 2 to /dev/null (C++ libraries log there while they load)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_NOISY = ("tensorflow", "keras", "tf2onnx")


def require(module: str, extra: str | None = None, package: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError with the pip line that installs it."""
    noisy = module.split(".")[0] in _NOISY and module not in sys.modules
    if noisy:
        quiet_tensorflow()
    try:
        if noisy:
            with _silenced_stderr():
                importlib.import_module("tensorflow")
                return importlib.import_module(module)
        return importlib.import_module(module)
    except ImportError as err:
        pkg = package or module.split(".")[0]
        hint = f'pip install "featstore[{extra}]"' if extra else f"pip install {pkg}"
        raise MissingDependencyError(
            f"{module} is needed for this step but is not installed ({err}); run: {hint}"
        ) from err


def available(module: str) -> bool:
    """True when `module` can be imported here, found without importing it (False, never an error)."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name in sys.modules and sys.modules[name] is None:
            return False
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        return False


#: The packages whose versions a trained model's meta.json records.
MODEL_PACKAGES = ("scikit-learn", "numpy", "keras", "tensorflow")


def package_versions(packages: tuple[str, ...] = MODEL_PACKAGES) -> dict[str, str]:
    """Versions of featstore and of `packages` (those installed), for a model's meta.json."""
    import importlib.metadata as md

    from featstore import __version__

    out = {"featstore": __version__}
    for dist in packages:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
