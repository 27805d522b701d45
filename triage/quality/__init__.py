"""Label quality: how many annotators a review request needs, how their labels become one,
how good each annotator is, and which stored labels are probably wrong (issue 24).

Pure functions on plain inputs (``Annotation`` rows, arrays); no Kafka, no label store. One
module per step, as river's ``active`` package has one per strategy:

- ``consensus``: ``ConsensusPolicy``, annotators per request within a label budget.
- ``aggregate``: one label per sample from its raw labels (majority, quality-weighted
  majority or Dawid-Skene, via crowd-kit), instead of latest-wins.
- ``annotators``: each annotator's accuracy against the aggregate on overlapped samples, and
  inter-annotator agreement (Krippendorff's alpha).
- ``issues``: out-of-fold predictions for stored labels and confident learning (cleanlab)
  to pick the ones to send back for review with reason ``relabel``.

The maintained libraries (crowd-kit, cleanlab, krippendorff, pandas) are imported inside the
functions: they come with the ``quality`` extra and nothing on the serving path loads them.
"""
