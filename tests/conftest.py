from tests.fixtures import (  # noqa: F401
    broker, digits, example_model, kafka_client, registry, scorer_process, settings_factory, triage_process,
)
from tests.labelstudio import label_studio  # noqa: F401
