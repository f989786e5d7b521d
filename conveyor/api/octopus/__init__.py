"""The Octopus Deploy API under /api, beside Conveyor's own /api/v1: the subset the official
clients (the `octopus` CLI, the GitHub Actions, ``@octopusdeploy/api-client``) use to create a
release, deploy it, wait for its tasks, and push packages and build information
(docs/octopus-compatibility.md). Every route calls the same services as Conveyor's own API."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.api.octopus import executions, lookups, packages, root, tasks

router = APIRouter()
# The fixed paths (/api/spaces, /api/tasks/...) before the space-scoped ones (/api/{space}/...).
for part in (root, tasks, lookups, executions, packages):
    router.include_router(part.router)
