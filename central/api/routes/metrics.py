"""`GET /metrics`: Prometheus text of central's registry. It needs a viewer token: site names and traffic
are not for anyone on the network; Prometheus sends it with `authorization: {credentials: …}`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from central.api.deps import Viewer
from central.metrics import REGISTRY

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(_token: Viewer) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
