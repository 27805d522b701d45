"""Audit samples are labelled blind: no model guess in their Label Studio task or on the console.
Review tasks keep theirs (a pre-annotation saves annotators a click where no check is at stake)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from triage.annotation.console import keymap, render_request
from triage.annotation.labelstudio.tasks import has_image, task_for
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode

GUESS, OTHER = "zebra", "okapi"  # class names that appear nowhere else in a task


def _review(reason: str, features: list[float]) -> ReviewRequest:
    return ReviewRequest("s1", features, reason, GUESS, 0.8125, ScoreFields(0.6, 0.3, 0.2), 0.4, "v3", None,
                         [TopClass(GUESS, 0.8125), TopClass(OTHER, 0.1875)])


@given(st.sampled_from([[0.5] * 64, [1.0, 2.0, 3.0]]))
def test_an_audit_task_carries_no_guess_and_a_review_task_keeps_it(features: list[float]) -> None:
    image = has_image(len(features))
    audit = task_for(_review("audit", features), image=image)
    assert "predictions" not in audit
    text = json.dumps(audit)
    assert GUESS not in text and OTHER not in text and "0.81" not in text
    assert audit["data"]["reason"] == "audit" and audit["data"]["sample_id"] == "s1"
    for reason in ("uncertain", "outlier", "gate"):
        task = task_for(_review(reason, features), image=image)
        assert task["predictions"][0]["result"][0]["value"] == {"choices": [GUESS]}
        assert task["data"]["predicted"] == GUESS and GUESS in task["data"]["summary"]


def _guess_line(doc: dict) -> str:
    screen = render_request(doc, keymap([GUESS, OTHER]), queued=1, labelled=0)
    return next(line for line in screen.splitlines() if line.startswith("model's"))


def test_the_console_hides_the_guess_of_an_audit_sample_only() -> None:
    audit = json.loads(encode(_review("audit", [0.5] * 64)))
    line = _guess_line(audit)
    assert GUESS not in line and OTHER not in line and "%" not in line
    review = json.loads(encode(_review("uncertain", [0.5] * 64)))
    assert f"{GUESS} 81%" in _guess_line(review)
    no_top = {**audit, "top": []}  # the fallback to `predicted` must not leak it either
    assert GUESS not in _guess_line(no_top)
