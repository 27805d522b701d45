"""The schema-built strategies against the contract decoders: every generated value either
decodes or raises an InputError (never anything else), with the verdict the strategy predicts."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.profiles import examples
from tests.contract_strategies import (
    KINDS, Case, batch_verdicts, builtins, cases, decoder, record_bytes, single_verdict, valid_record_bytes,
)
from triage.errors import InputError

FC = 8
MAX = 100_000
FAST = settings(max_examples=examples(300), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


def _check(kind: str, case: Case) -> None:
    try:
        out = decoder(kind, FC, MAX)(case.value)
    except InputError as exc:
        assert exc.stage in ("decode", "validate"), exc.stage
        assert case.expect is not True, f"{case.mutation} at {case.path} was refused: {exc.message}"
        return
    assert case.expect is not False, f"{case.mutation} at {case.path} was accepted: {case.value!r:.300}"
    if case.doc is not None:
        decoded = builtins(out)
        for key, value in case.doc.items():
            assert decoded[key] == value, key


@pytest.mark.parametrize("kind", KINDS)
def test_generated_records_decode_or_raise_input_error(kind: str) -> None:
    @FAST
    @given(cases(kind, FC, MAX))
    def run(case: Case) -> None:
        _check(kind, case)

    run()


@pytest.mark.parametrize("kind", KINDS)
def test_valid_records_always_decode(kind: str) -> None:
    decode = decoder(kind, FC, MAX)

    @settings(FAST, max_examples=examples(100))
    @given(valid_record_bytes(kind, FC))
    def run(value: bytes) -> None:
        decode(value)

    run()


@settings(FAST, max_examples=examples(150))
@given(st.lists(record_bytes("sample", FC, MAX), max_size=8))
def test_batch_decoder_gives_the_single_decoders_verdicts(values: list[Optional[bytes]]) -> None:
    assert batch_verdicts(values, FC, MAX) == [single_verdict(v, FC, MAX) for v in values]
