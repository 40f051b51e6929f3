"""JSON scalar types that accept exactly what an OpenAPI document promises.

Pydantic's lax mode would take "5" or false for a number and 0.5 for a date-time; the document
would then say less than the server checks. The wire contract (`contract.py`) uses these, and so
do the control plane's own request models.
"""

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, StrictBool, StrictFloat


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
