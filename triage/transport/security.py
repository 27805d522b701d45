"""TLS/SASL settings under each Kafka client's own option names (one mapping, two clients)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from pydantic import SecretStr

from triage.settings import Settings


def _reveal(secret: Optional[SecretStr]) -> Optional[str]:
    return secret.get_secret_value() if secret is not None else None


def security_options(settings: Settings, names: Mapping[str, str]) -> dict[str, Any]:
    """The security settings that are set, keyed by ``names[our_field]``. Secrets are revealed
    only here, into the client's configuration, never into logs."""
    sasl = settings.connection.sasl_mechanism is not None
    values: dict[str, Any] = {
        "sasl_mechanism": settings.connection.sasl_mechanism,
        "sasl_username": settings.connection.sasl_username if sasl else None,
        "sasl_password": _reveal(settings.connection.sasl_password) if sasl else None,
        "ssl_cafile": settings.connection.ssl_cafile,
        "ssl_certfile": settings.connection.ssl_certfile,
        "ssl_keyfile": settings.connection.ssl_keyfile,
        "ssl_key_password": _reveal(settings.connection.ssl_key_password),
    }
    return {names[k]: (str(v) if k.endswith("file") else v) for k, v in values.items() if v is not None}
