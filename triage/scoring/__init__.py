"""Scoring and routing: the pure hot path. A batch of samples in, scores and routes out; no Kafka, no I/O."""
