"""Types of the parameters the routers take."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hongyan.db.types import MAX_ID

#: An integer the API hands to SQL (an id, a row count): within a BIGINT, which SQLite's INTEGER
#: also is. A larger number is a 422 at the door instead of an OverflowError in the driver (a
#: 500); the schema shows the bounds.
DbInt = Annotated[int, Field(ge=-MAX_ID - 1, le=MAX_ID)]
