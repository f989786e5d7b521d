"""The server nodes, for administrators: which are alive and what each runs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.services import nodes
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/nodes")
async def node_list(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    found = await nodes.list_nodes(services, caller)  # refuses without AdministerSystem
    return render(request, "nodes.html", title="Nodes", nodes=found)
