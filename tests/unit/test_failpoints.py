"""The test-only failpoints: a clear refusal of a malformed spec, nothing at all when unarmed,
and the kill on exactly the N-th hit."""

from __future__ import annotations

import signal

import pytest

from triage.runtime import failpoints


def test_a_spec_arms_names_for_their_nth_hit() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("bridge.after_import:kill, bridge.after_publish:kill@40") == {
        "bridge.after_import": 1, "bridge.after_publish": 40}


@pytest.mark.parametrize("spec", ["x", "x:crash", "x:kill@0", "x:kill@two", ":kill"])
def test_a_malformed_spec_says_how_to_write_it(spec: str) -> None:
    with pytest.raises(ValueError, match="NAME:kill or NAME:kill@N"):
        failpoints.parse(spec)


def test_only_the_nth_hit_of_an_armed_name_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr(failpoints.os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setattr(failpoints, "_armed", failpoints.parse("a:kill@3"))
    for _ in range(2):
        failpoints.hit("a")
        failpoints.hit("b")  # not armed: nothing
    assert kills == []
    failpoints.hit("a")
    assert kills == [signal.SIGKILL]
