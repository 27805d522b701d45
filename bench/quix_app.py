"""The scorer's job written as a quix-streams application, as a user would write it instead
(bench/workers.py runs it beside the scorer on the same broker).

Per message: JSON decode (quix's deserializer), one ONNX call, the Mahalanobis outlier
distance against the reference data, the routing rule (outlier or uncertain -> review, else
predictions), JSON encode and produce; at-least-once commits. Runs in its own virtualenv,
because quixstreams pins confluent-kafka below the version triage uses:

    python -m venv .venv-quix && .venv-quix/bin/pip install quixstreams onnxruntime numpy

    .venv-quix/bin/python bench/quix_app.py --bootstrap HOST:PORT --topic T --out O --group G \\
        --expect N --model triage/examples/digits_mlp.onnx --reference triage/examples/digits_reference.npz
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import onnxruntime as ort
from quixstreams import Application


def main() -> int:
    ap = argparse.ArgumentParser()
    for name in ("--bootstrap", "--topic", "--out", "--group", "--model", "--reference"):
        ap.add_argument(name, required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--uncertainty-threshold", type=float, default=0.5)
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0].name, session.get_outputs()[-1].name  # probabilities (a zipmap)
    with np.load(args.reference) as d:
        X = d["X"].astype(np.float64)
    mean = X.mean(axis=0)
    precision = np.linalg.pinv(np.cov(X, rowvar=False))
    dist = np.sqrt(np.einsum("ij,jk,ik->i", X - mean, precision, X - mean))
    threshold = float(np.quantile(dist, 0.995))
    classes = [str(i) for i in range(10)]

    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      processing_guarantee="at-least-once", auto_create_topics=False, use_changelog_topics=False)
    samples = app.topic(args.topic, value_deserializer="json")
    predictions = app.topic(args.out + ".predictions", value_serializer="json")
    review = app.topic(args.out + ".review", value_serializer="json")
    seen = {"n": 0}

    def score(doc: dict[str, Any]) -> dict[str, Any]:
        x = np.asarray(doc["features"], dtype=np.float32)[None, :]
        probs = session.run([out], {inp: x})[0][0]
        p = np.array([probs[k] for k in sorted(probs)], dtype=np.float64) if isinstance(probs, dict) \
            else np.asarray(probs, dtype=np.float64)
        top = np.sort(p)[::-1]
        d = x[0].astype(np.float64) - mean
        outlier = float(np.sqrt(d @ precision @ d)) / threshold
        margin = float(top[0] - top[1])
        reason = "outlier" if outlier > 1 else "uncertain" if 1 - margin > args.uncertainty_threshold else "confident"
        seen["n"] += 1
        if seen["n"] >= args.expect:
            app.stop()
        return {"id": doc["id"], "label": classes[int(p.argmax())], "confidence": float(top[0]),
                "scores": {"margin": margin, "outlier": outlier}, "reason": reason, "meta": doc.get("meta")}

    # quix stamps outputs with the input's timestamp; the bench measures from output stamps
    sdf = app.dataframe(samples).apply(score).set_timestamp(lambda value, key, ts, headers: int(time.time() * 1000))
    sdf.filter(lambda v: v["reason"] == "confident").to_topic(predictions)
    sdf.filter(lambda v: v["reason"] != "confident").to_topic(review)
    started = time.time()
    app.run()
    print(json.dumps({"samples": seen["n"], "elapsed_s": time.time() - started}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
