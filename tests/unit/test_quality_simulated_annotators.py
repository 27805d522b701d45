"""Simulated annotators: their noise rate, determinism per seed, and the confusion-matrix file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from triage.errors import ConfigError
from triage.simulation.annotators import AnnotatorPanel, load_confusion, parse_noise

CLASSES = tuple(str(c) for c in range(10))


def test_each_annotator_is_wrong_at_its_rate_and_answers_the_same_for_the_same_seed() -> None:
    panel = AnnotatorPanel(CLASSES, noise=(0.1, 0.4))
    truth = [str(i % 10) for i in range(4000)]
    for who, rate in enumerate((0.1, 0.4)):
        wrong = np.mean([panel.answer(3, i, t, who) != t for i, t in enumerate(truth)])
        assert wrong == pytest.approx(rate, abs=0.025)
    assert [panel.answer(3, i, "5", 1) for i in range(50)] == [panel.answer(3, i, "5", 1) for i in range(50)]
    assert [panel.answer(3, i, "5", 1) for i in range(50)] != [panel.answer(4, i, "5", 1) for i in range(50)]


def test_annotators_are_asked_in_a_per_row_order_without_repeats() -> None:
    panel = AnnotatorPanel(CLASSES, noise=(0.1, 0.2, 0.4))
    asked: frozenset[int] = frozenset()
    order = []
    while (k := panel.next_annotator(0, 7, asked)) is not None:
        order.append(k)
        asked = asked | {k}
    assert sorted(order) == [0, 1, 2]
    firsts = {panel.next_annotator(0, row, frozenset()) for row in range(100)}
    assert firsts == {0, 1, 2}  # the first annotator is drawn per row


def test_noise_and_confusion_parse_or_say_what_is_wrong(tmp_path: Path) -> None:
    assert parse_noise("0.1,0.2,0.4", 3) == (0.1, 0.2, 0.4) and parse_noise("0.2", 2) == (0.2, 0.2)
    for bad in ("0.1,0.2", "1.5,0,0", "x"):
        with pytest.raises(ConfigError):
            parse_noise(bad, 3)
    swap = [[0.0, 1.0], [1.0, 0.0]]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"classes": ["b", "a"], "matrices": [swap, [[1, 0], [0, 1]]]}))
    mats = load_confusion(path, ["a", "b"])
    panel = AnnotatorPanel(("a", "b"), confusion=mats)
    assert panel.answer(0, 1, "a", 0) == "b" and panel.answer(0, 1, "a", 1) == "a"
    path.write_text(json.dumps({"classes": ["a", "b"], "matrices": [[[0.5, 0.4], [0, 1]]]}))
    with pytest.raises(ConfigError):
        load_confusion(path, ["a", "b"])
