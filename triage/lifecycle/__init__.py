"""The model lifecycle: training, preparation of a servable bundle, the registry, the label store and
retraining. No Kafka, no argparse."""
