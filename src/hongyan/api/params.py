"""Types of the parameters the routers take."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hongyan.db.types import MAX_BIG_ID, MAX_ID

# Integers the API hands to SQL, bounded by their column: a larger number is a 422 at the door
# instead of an error from the driver (a 500); the schema shows the bounds.

#: An id of a table keyed by INTEGER (most: templates, segments, campaigns, webhooks …).
Id = Annotated[int, Field(ge=-MAX_ID - 1, le=MAX_ID)]
#: An id of a table keyed by BIGINT (messages, contacts, webhook deliveries), or a row offset.
BigInt = Annotated[int, Field(ge=-MAX_BIG_ID - 1, le=MAX_BIG_ID)]
