"""Parameter types shared by the routes: names in paths and queries, and instants."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, StringConstraints

from central.services.models import Instant, no_control_characters

#: A site, gateway, locker, kind or holder.
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(no_control_characters)]
#: … to filter on.
NameQuery = Annotated[Name | None, Query()]
#: … named in the path.
NamePath = Annotated[Name, Path()]
SinceQuery = Annotated[Instant | None, Query(description="ISO 8601 date-time, inclusive (UTC without an offset)")]
UntilQuery = Annotated[Instant | None, Query(description="ISO 8601 date-time, exclusive (UTC without an offset)")]
