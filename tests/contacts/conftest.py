from __future__ import annotations

import pytest

from hongyan.runtime import Runtime
from hongyan.tenants import service


@pytest.fixture
def tenant_id(runtime: Runtime) -> int:
    with runtime.engine.begin() as conn:
        return service.create_tenant(conn, runtime.clock, slug="tea", name="鸿雁茶饮").id
