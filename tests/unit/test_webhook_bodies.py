from __future__ import annotations

import base64

import pytest

from server.triggers.bodies import BodyError, payload_of


def test_json_bodies_are_parsed_as_sent() -> None:
    assert payload_of(b'{"a": [1, 2]}', "application/json") == {"a": [1, 2]}
    assert payload_of(b"[1]", "application/json; charset=utf-8") == [1]
    assert payload_of(b'{"x": 1}', "application/vnd.github+json") == {"x": 1}


def test_malformed_json_is_refused_with_a_reason() -> None:
    with pytest.raises(BodyError, match="not valid JSON"):
        payload_of(b'{"a": ', "application/json")


def test_form_bodies_become_an_object_with_repeated_fields_as_lists() -> None:
    body = b"name=Ada+Lovelace&tag=a&tag=b&empty=&note=50%25"
    assert payload_of(body, "application/x-www-form-urlencoded") == {
        "name": "Ada Lovelace",
        "tag": ["a", "b"],
        "empty": "",
        "note": "50%",
    }


def test_form_bodies_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(BodyError, match="UTF-8"):
        payload_of(b"name=%FF", "application/x-www-form-urlencoded")


def test_other_types_are_kept_as_text_or_base64_with_their_type() -> None:
    assert payload_of(b"<a>1</a>", "application/xml") == {
        "content_type": "application/xml",
        "body": "<a>1</a>",
    }
    binary = bytes(range(256))
    assert payload_of(binary, None) == {
        "content_type": "application/octet-stream",
        "body_base64": base64.b64encode(binary).decode(),
    }


def test_an_empty_body_is_an_empty_object() -> None:
    assert payload_of(b"", "application/json") == {}
    assert payload_of(b"", None) == {}
