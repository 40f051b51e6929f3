"""Field types that make a request model accept exactly what its OpenAPI document promises.

Pydantic's lax mode would take "5" or false for a number, 0.5 for a date-time, and null for any
field declared `X | None`; the document would then say less than the server does (or more).
These types depend on pydantic only, so the runtime's wire contract can use them too.
"""

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StrictBool, StrictFloat, StringConstraints
from pydantic import Field as PydanticField


def _no_default_in_schema(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omittable(**constraints: Any) -> Any:
    """A PATCH field that may be left out but never set to null.

    Its OpenAPI type has no `null` and no default; the service sees only the fields that were
    sent (`model_dump(exclude_unset=True)`).
    """
    return PydanticField(default=None, json_schema_extra=_no_default_in_schema, **constraints)


def a_json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _an_iso_date_time(value: Any) -> Any:
    if not isinstance(value, datetime) and not (
        isinstance(value, str) and ISO_DATE_TIME.match(value)
    ):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


# Integral floats (5.0) stay accepted as integers: JSON Schema counts them as integers. Give
# constraints on the field (Field(ge=...)), or inside an Annotated *before* the validator when the
# field is optional, or the document would lose them.
JsonInt = Annotated[int, BeforeValidator(a_json_number)]
JsonFloat = StrictFloat  # strict floats take ints, never bools or text
JsonBool = StrictBool
IsoDateTime = Annotated[datetime, BeforeValidator(_an_iso_date_time)]

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
