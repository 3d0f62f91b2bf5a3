"""What a step records of an action's output: JSON data, converted, never an error."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from email.message import EmailMessage

import msgspec

from server.engine.recorded_output import MAX_DEPTH, recordable


class Colour(enum.IntEnum):
    RED = 1


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def test_json_data_is_kept_as_it_is_with_its_size() -> None:
    output = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    recorded = recordable(output)
    assert recorded.data == output
    assert recorded.size == len(msgspec.json.encode(output))


def test_an_email_header_object_is_recorded_as_its_text() -> None:
    message = EmailMessage()
    message["Message-ID"] = "<abc@example.com>"
    recorded = recordable({"message_id": message["Message-ID"]})
    assert recorded.data == {"message_id": "<abc@example.com>"}
    assert type(recorded.data["message_id"]) is str


def test_objects_json_cannot_hold_become_the_nearest_json_value() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    recorded = recordable(
        {
            "tuple": (1, 2),
            "set": {3},
            "when": when,
            "id": uuid.UUID(int=1),
            "colour": Colour.RED,
            "bytes": b"hi",
            (1, 2): "a tuple key",
            "object": Unprintable(),
            "error": ValueError("bad value"),
        }
    )
    assert recorded.data == {
        "tuple": [1, 2],
        "set": [3],
        "when": "2026-01-02T03:04:05Z",
        "id": "00000000-0000-0000-0000-000000000001",
        "colour": 1,
        "bytes": "aGk=",
        "(1, 2)": "a tuple key",
        "object": "<Unprintable>",
        "error": "bad value",
    }


def test_lone_surrogates_become_replacement_characters() -> None:
    recorded = recordable({"text": "a\ud800b", "\udfff": "key"})
    assert recorded.data == {"text": "a\ufffdb", "\ufffd": "key"}


def test_a_cycle_is_cut_at_the_depth_limit_instead_of_raising() -> None:
    loop: list[object] = []
    loop.append(loop)
    recorded = recordable({"loop": loop, "other": (1,)})
    depth, value = 0, recorded.data["loop"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert (depth + 1, value) == (MAX_DEPTH, "[[...]]")  # the output object is level one
    assert recorded.data["other"] == [1]
