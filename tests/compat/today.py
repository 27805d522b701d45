"""Probe what ``triage serve --model PATH --reference REF`` does with every zoo kind, today.

    python -m tests.compat.today OUT.md [ZOO_DIR] [--triage-root DIR]...

Each ``--triage-root`` (default: this checkout) is a source tree whose ``triage`` package is put
first on PYTHONPATH, so a baseline (e.g. ``git archive HEAD | tar -x -C /tmp/head``) and the
working tree can be compared side by side. Model loading happens before any broker traffic, so
the probe points at a closed port and stops the process once it logs ``serving model``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.compat.zoo import BUILDERS, ZooModel, ZooSkip, available_kinds, build_one, describe, _data

REPO = Path(__file__).resolve().parents[2]
_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def probe(model: ZooModel, root: Path, *, with_flags: bool, timeout_s: float = 40.0) -> str:
    cmd = [sys.executable, "-m", "triage", "serve", "--model", str(model.path), "--reference", str(model.reference),
           "--bootstrap-servers", "127.0.0.1:1", "--no-create-topics", "--metrics-port", "0",
           *(model.flags if with_flags else ())]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "triage.serve: serving model" in line:
                return "loads: " + line.split("triage.serve: ", 1)[1].split(" from ")[0]
            if time.monotonic() > deadline:
                return "no verdict within the timeout"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    text = [ln for ln in lines if ln.strip() and not ln.startswith("%") and not _LOG.match(ln)]
    if not text:
        return f"exit {proc.returncode} without a message"
    if text[0].startswith("Traceback"):
        raised = [i for i, ln in enumerate(text) if re.match(r"^[A-Za-z_][\w.]*: ", ln)]
        last = " ".join(ln.strip() for ln in text[raised[-1]:]) if raised else text[-1]
        return f"exit {proc.returncode}, traceback: " + last[:300]
    return f"exit {proc.returncode}: " + text[0]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("zoo_dir", type=Path, nargs="?", default=Path("/tmp/zoo"))
    ap.add_argument("--triage-root", action="append", type=Path, default=[])
    ap.add_argument("--label", action="append", default=[])
    args = ap.parse_args(argv)
    roots = args.triage_root or [REPO]
    labels = args.label or [str(r) for r in roots]
    d = _data()
    models: list[ZooModel] = []
    skipped: dict[str, str] = {}
    for kind in available_kinds():
        try:
            models.append(build_one(kind, args.zoo_dir, d))
        except ZooSkip as exc:
            skipped[kind] = str(exc)
    jobs = [(m, r, wf) for m in models for r in roots for wf in ((False, True) if m.flags else (False,))]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda j: probe(j[0], j[1], with_flags=j[2]), jobs))
    verdict = {(j[0].kind, str(j[1]), j[2]): r for j, r in zip(jobs, results)}

    rows = ["| kind | inputs (name type shape) | outputs (name type shape) | class names | flags the kind needs | "
            + " | ".join(f"`triage serve` today: {lab}" for lab in labels) + " |",
            "|" + "---|" * (5 + len(roots))]
    for m in models:
        info = describe(m)
        cells = []
        for r in roots:
            text = "bare: " + verdict[(m.kind, str(r), False)]
            if m.flags:
                text += "<br>with flags: " + verdict[(m.kind, str(r), True)]
            cells.append(_cell(text))
        rows.append(f"| `{m.kind}` | {_cell(info['inputs'])} | {_cell(info['outputs'])} | {m.class_source} | "
                    f"{'`' + ' '.join(m.flags) + '`' if m.flags else '(none)'} | " + " | ".join(cells) + " |")
    for kind, why in skipped.items():
        rows.append(f"| `{kind}` | — | — | — | — | " + " | ".join(_cell("not built: " + why) for _ in roots) + " |")
    missing = [k for k in BUILDERS if k not in available_kinds()]
    header = [
        "# Zoo: what `triage serve` does with each exporter's output",
        "",
        f"Built by `tests/compat/zoo.py` (4 classes, 20 features, {len(d.X)} rows to score). "
        "Probe: `triage serve --model PATH --reference REF --bootstrap-servers 127.0.0.1:1 --no-create-topics "
        "--metrics-port 0 [flags]`; `loads` = it reached `serving model` (then killed), else the first error line. "
        "`bare` = no extra flags; `with flags` = the flags in the 'flags' column.",
        "",
    ]
    if missing:
        header += [f"Exporter not installed, not built: {', '.join(missing)}", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + rows) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
