"""Types of the parameters the routers take."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: An integer the API hands to SQL (an id, a row count): within a BIGINT, which SQLite's INTEGER
#: also is. A larger number is a 422 at the door instead of an OverflowError in the driver (a
#: 500); the schema shows the bounds.
DbInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
