"""The web UI: server-rendered pages on the same app and process as the API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from conveyor.web.pages import STATIC
from conveyor.web.routes import (
    access_report,
    approval_preview,
    approvals,
    audit,
    auth,
    dashboard,
    environments,
    favicon,
    insights,
    interruptions,
    new_password,
    nodes,
    packages,
    people,
    people_edit,
    process,
    process_history,
    project_settings,
    projects,
    release_new,
    releases,
    retention,
    sso,
    targets,
    tasklog,
    tasks,
    teams,
    variables,
)
from conveyor.web.session import SessionMiddleware

ROUTERS = (
    favicon,
    auth,
    sso,
    dashboard,
    projects,
    process,
    process_history,
    variables,
    release_new,  # before releases: /releases/new is not a version
    releases,
    tasks,
    tasklog,
    interruptions,
    audit,
    people,
    people_edit,
    teams,
    new_password,
    nodes,
    targets,
    approval_preview,
    approvals,
    access_report,
    insights,
    environments,
    packages,
    project_settings,
    retention,
)


def install(app: FastAPI) -> None:
    """Mount the pages and static files, and read the session cookie of every request."""
    app.add_middleware(SessionMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in ROUTERS:
        app.include_router(module.router)
