"""Named statement parameters: numbered once, bound by name, casts left alone."""

from __future__ import annotations

import pytest

from server.statements import Statement


def test_names_become_numbers_in_order_of_first_use_and_repeat_as_one_parameter() -> None:
    statement = Statement(
        "UPDATE t SET a = :value::jsonb, b = :other WHERE id = :id AND c = :value"
    )
    assert statement.text == "UPDATE t SET a = $1::jsonb, b = $2 WHERE id = $3 AND c = $1"
    assert statement.names == ("value", "other", "id")
    assert statement.args({"id": 7, "other": "o", "value": "v"}) == ["v", "o", 7]


def test_casts_literals_and_words_with_colons_are_not_parameters() -> None:
    statement = Statement(
        "SELECT x::text, 'step:' || y, '00:00'::time, now()::date FROM t WHERE z = :z"
    )
    assert statement.text == (
        "SELECT x::text, 'step:' || y, '00:00'::time, now()::date FROM t WHERE z = $1"
    )


def test_a_missing_or_unknown_value_is_refused_by_name() -> None:
    statement = Statement("SELECT :a, :b")
    with pytest.raises(TypeError, match=r"missing \['b'\], unknown \['c'\]"):
        statement.args({"a": 1, "c": 2})
    with pytest.raises(TypeError, match=r"missing \['b'\]"):
        statement.args({"a": 1})
