"""Hypothesis profiles. ``ci`` is the default; ``HYPOTHESIS_PROFILE=deep`` runs every property
test with 20 times its examples (a long run before a release, or after touching a contract).

Tests give their example counts through ``examples(n)``, so both profiles scale them alike."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = {"ci": 1, "deep": 20}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in SCALE:
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: known profiles are {', '.join(SCALE)}")

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("deep", parent=settings.get_profile("ci"), max_examples=100 * SCALE["deep"])
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` examples under the ci profile, scaled by the profile in use."""
    return n * SCALE[PROFILE]
