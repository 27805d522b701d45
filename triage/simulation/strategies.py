"""What ``triage simulate`` compares: named settings for the service, plus random.

A strategy is a set of setting overrides (flat ``Settings`` names, as flags spell them):
the replay runs the service with them, so a strategy that wins can be shipped as defaults.
``random`` is the baseline: the same loop, but the annotator labels streamed samples drawn
uniformly, whatever the policy says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from triage.errors import ConfigError

RANDOM = "random"


@dataclass(frozen=True)
class Strategy:
    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def is_random(self) -> bool:
        return self.name == RANDOM


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("least-confidence", {"acquisition": "least-confidence", "review_order": "priority"},
                 "1 - top probability"),
        Strategy("entropy", {"acquisition": "entropy", "review_order": "priority"}, "normalized entropy"),
        Strategy("margin", {"acquisition": "margin", "review_order": "priority"}, "1 - (top1 - top2)"),
        Strategy("margin-diverse", {"acquisition": "margin", "review_order": "diverse"},
                 "margin, review batch spread over clusters of the most uncertain (cluster-margin)"),
        Strategy("badge", {"acquisition": "margin", "review_order": "badge"},
                 "k-means++ over gradient embeddings of the predicted class (BADGE)"),
        Strategy(RANDOM, {}, "uniform over the stream (the baseline)"),
    )
}


def parse_strategies(text: str | None) -> list[Strategy]:
    """Comma-separated names (None or "all": every strategy). Random is always added."""
    if text is None or text.strip() in ("", "all"):
        return list(STRATEGIES.values())
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ConfigError(f"--strategies: unknown {', '.join(unknown)}; choose from {', '.join(STRATEGIES)} or all")
    if RANDOM not in names:
        names.append(RANDOM)  # every ratio is to random
    return [STRATEGIES[n] for n in dict.fromkeys(names)]
