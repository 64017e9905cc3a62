"""`GET /api/gateways`."""

from __future__ import annotations

from fastapi import APIRouter

from central.api.deps import Db, Viewer
from central.api.params import NameQuery
from central.services.gateways import list_gateways
from central.services.models import GatewayList

router = APIRouter(tags=["gateways"])


@router.get("/api/gateways", response_model=GatewayList, summary="Every gateway, its state and its chain")
def gateways(connection: Db, _token: Viewer, site: NameQuery = None) -> GatewayList:
    return GatewayList(gateways=list_gateways(connection, site))
