"""``triage simulate``: replay a labelled dataset as a stream through the service's own code.

- ``datasets``: the labelled data and its per-seed split (pool streamed, test never seen).
- ``strategies``: what is compared (settings overrides, plus the random baseline).
- ``replay``: one (strategy, seed) run: static bootstrap, ``train_initial``, then rounds of
  ``score_batch`` -> ``PolicyStack.decide`` -> an annotator who labels review requests in
  priority order within the label budget -> ``LabelStore`` -> ``retrain_once`` (candidate,
  promotion gate) -> the next round scores with whatever is CURRENT.
- ``summary``: curves over seeds, labels to reach a share of full-label accuracy, the table
  and the plot.
No Kafka: the broker only moves bytes between these same functions.
"""
