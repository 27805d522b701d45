"""Hypothesis profiles, chosen with ``HYPOTHESIS_PROFILE`` (docs: README, Tests):

- ``ci`` (the default, what CI runs): every property test runs its own count (``examples(n)`` is
  n) and each fuzz suite of tests/fuzz runs 25 examples per process under test.
- ``long`` (a deep run before a release, or after touching a contract): property tests run 20
  times their count and each fuzz suite 1,000 examples.

``TRIAGE_FUZZ_EXAMPLES=N`` sets the fuzz suites' count under either profile."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import HealthCheck, settings


@dataclass(frozen=True)
class Profile:
    scale: int  # property tests: examples(n) = n * scale
    fuzz: int  # examples per fuzz suite (a running process each)


PROFILES = {"ci": Profile(scale=1, fuzz=25), "long": Profile(scale=20, fuzz=1000)}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in PROFILES:
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: known profiles are {', '.join(PROFILES)}")

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=100 * PROFILES["long"].scale)
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` examples under the ci profile, scaled by the profile in use."""
    return n * PROFILES[PROFILE].scale


def fuzz_examples() -> int:
    """Examples per fuzz suite: the profile's count, or ``TRIAGE_FUZZ_EXAMPLES``."""
    return int(os.environ.get("TRIAGE_FUZZ_EXAMPLES", PROFILES[PROFILE].fuzz))
