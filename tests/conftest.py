from tests.fixtures import broker, example_model, kafka_client, scorer_process, settings_factory  # noqa: F401
