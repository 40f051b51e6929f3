"""Field types that make a request model accept exactly what its OpenAPI document promises.

Pydantic's lax mode would take "5" or false for a number, 0.5 for a date-time, and null for any
field declared `X | None`; the document would then say less than the server does (or more).
The JSON scalars (numbers, booleans, date-times) are the runtime's, which its wire contract
uses; this module adds what only the control plane's request models need.
"""

from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints
from pydantic import Field as PydanticField

from switchboard_runtime.jsontypes import IsoDateTime, JsonBool, JsonFloat, JsonInt, a_json_number

__all__ = [
    "IsoDateTime",
    "JsonBool",
    "JsonFloat",
    "JsonInt",
    "VisibleText64",
    "VisibleText200",
    "a_json_number",
    "omittable",
]


def _no_default_in_schema(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omittable(**constraints: Any) -> Any:
    """A PATCH field that may be left out but never set to null.

    Its OpenAPI type has no `null` and no default; the service sees only the fields that were
    sent (`model_dump(exclude_unset=True)`).
    """
    return PydanticField(default=None, json_schema_extra=_no_default_in_schema, **constraints)


ASCII_SPACE = " \t\n\v\f\r"


def _trim_ascii_space(text: str) -> str:
    return text.strip(ASCII_SPACE)


# Text with at least one character that is not ASCII white space, trimmed of it after the
# length is checked. Spelled out rather than `\S`: regex engines disagree on white space beyond
# ASCII, and the document must mean what the server checks.
NOT_BLANK = r"[^ \t\n\v\f\r]"
VisibleText64 = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=NOT_BLANK),
    AfterValidator(_trim_ascii_space),
]
VisibleText200 = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK),
    AfterValidator(_trim_ascii_space),
]
