"""What the annotator console shows, as plain strings (pure; the loop does the terminal I/O)."""

from __future__ import annotations

import math
import re
import string
from typing import Any, Sequence

SHADES = " ░▒▓█"
RESERVED = {"s": "skip", "e": "edge case / none of these", "u": "undo last", "q": "quit"}
# Every control character but the newline: text from a record must never drive the terminal.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` (escape sequences in a review
    request could otherwise retitle, clear or hide parts of the annotator's screen)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def keymap(classes: Sequence[str]) -> dict[str, str]:
    """One key per class: digits first, then letters not reserved for commands."""
    keys = [k for k in string.digits + string.ascii_lowercase if k not in RESERVED]
    if len(classes) > len(keys):
        raise ValueError(f"{len(classes)} classes is more than one-keystroke labelling supports ({len(keys)})")
    # A class named like its key keeps that key (digits dataset: key 7 -> class "7").
    mapping: dict[str, str] = {}
    free = [k for k in keys if k not in classes]
    for cls in classes:
        mapping[cls if cls in keys and cls not in mapping else free.pop(0)] = cls
    return mapping


def render_features(features: Sequence[float]) -> list[str]:
    """Square feature vectors (64, 784, ...) as a shaded image; others as a compact table."""
    n = len(features)
    side = int(math.isqrt(n))
    if side >= 4 and side * side == n:
        lo, hi = min(features), max(features)
        span = (hi - lo) or 1.0
        rows = []
        for r in range(side):
            cells = features[r * side:(r + 1) * side]
            rows.append("".join(SHADES[min(int((v - lo) / span * len(SHADES)), len(SHADES) - 1)] * 2 for v in cells))
        return rows
    shown = [f"{i:>3}:{v:>9.4g}" for i, v in enumerate(features[:64])]
    lines = ["  ".join(shown[i:i + 6]) for i in range(0, len(shown), 6)]
    if n > 64:
        lines.append(f"... {n - 64} more features")
    return lines


def render_request(doc: dict[str, Any], keys: dict[str, str], *, queued: int, labelled: int) -> str:
    reason = doc.get("reason", "?")
    if reason == "audit":  # labels that check the model are given blind: a shown guess gets confirmed
        guesses = "hidden (audit: label what you see)"
    else:
        top = doc.get("top") or [{"label": doc.get("predicted"), "p": doc.get("confidence")}]
        guesses = "   ".join(f"{g['label']} {float(g['p'] or 0):.0%}" for g in top)
    why = {"uncertain": "the model is unsure", "outlier": "it looks unlike the training data",
           "audit": "random audit of an auto-accepted prediction",
           "relabel": "its stored label looks wrong: a fresh look", "tiebreak": "its labels disagree: yours decides"
           }.get(reason, reason)
    lines = [
        f"sample {doc.get('id')}   model {doc.get('model_version')}   priority {float(doc.get('priority', 0)):.3f}",
        f"why: {reason} ({why})",
        f"model's top guesses: {guesses}",
        "",
        *render_features(doc.get("features") or []),
        "",
        "label: " + "  ".join(f"[{k}] {c}" for k, c in keys.items()),
        "       " + "  ".join(f"[{k}] {v}" for k, v in RESERVED.items()),
        f"queue {queued}   labelled this session {labelled}",
    ]
    return visible("\n".join(lines))
