"""``/api/workflows``: stored workflows (a graph and its parameter map, versioned), the candidate parameters of a
graph, and runs of a workflow by name. Clients list, read and run them; admins write them."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from comfyart.api.auth import Caller, admin_only
from comfyart.api.deps import ServicesDep, admit
from comfyart.api.errors import BadRequest
from comfyart.api.inputs import RUN_FORM, read_run
from comfyart.api.requests import MAX_OFFSET, GraphBody, RunOptions, body_doc, workflow_definition
from comfyart.api.tasks import created
from comfyart.auth import can_see
from comfyart.errors import InvalidInput, NotFound
from comfyart.workflows.definition import (
    WorkflowDefinition,
    definition_problems,
    infer_parameters,
    workflow_name_problem,
)

router = APIRouter()
ADMIN = [Depends(admin_only)]


def _etag_version(header: str | None) -> int | None:
    if header is None:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise BadRequest(400, "If-Match must be a workflow version, as its ETag gives it")
    return int(value)


@router.get("/api/workflows", response_model=None)
async def list_workflows(services: ServicesDep) -> dict[str, Any]:
    return {"workflows": await services.workflows.summaries(), "file_errors": services.workflow_file_errors}


@router.post("/api/workflows/infer", dependencies=ADMIN, response_model=None, openapi_extra=body_doc(GraphBody))
async def infer_workflow_parameters(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Candidate parameters for a graph: every literal input. Prune them, then PUT the workflow."""
    graph = (await GraphBody.read(request, services.security.limits)).graph
    return {"params": {name: p.model_dump(mode="json") for name, p in infer_parameters(graph).items()}}


@router.get("/api/workflows/{name}")
async def get_workflow(name: str, services: ServicesDep,
                       version: int | None = Query(None, ge=1, le=MAX_OFFSET)) -> JSONResponse:
    workflow = await services.workflows.get(name, version)
    body = {**workflow.model_dump(mode="json"), "versions": await services.workflows.versions(name)}
    return JSONResponse(body, headers={"ETag": f'"{workflow.version}"'})


@router.put("/api/workflows/{name}", dependencies=ADMIN, openapi_extra=body_doc(WorkflowDefinition))
async def put_workflow(name: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Create or replace a workflow; each change makes a new version. ``If-Match: "N"`` replaces only
    version N (and ``If-Match: "0"`` only creates)."""
    problem = workflow_name_problem(name)
    if problem is not None:
        raise InvalidInput(f"name: {problem}")
    expected = _etag_version(request.headers.get("if-match"))
    definition = await workflow_definition(request, services.security.limits)
    problems = definition_problems(definition)
    if problems:
        raise InvalidInput("; ".join(problems))
    result = await services.workflows.put(name, definition, expected_version=expected)
    return JSONResponse({"name": name, "version": result.version, "changed": result.changed},
                        status_code=201 if result.created else 200,
                        headers={"ETag": f'"{result.version}"', "Location": f"/api/workflows/{name}"})


@router.delete("/api/workflows/{name}", status_code=204, dependencies=ADMIN)
async def delete_workflow(name: str, services: ServicesDep) -> Response:
    await services.workflows.delete(name)
    return Response(status_code=204)


@router.post("/api/workflows/{name}/run", status_code=201,
             openapi_extra=body_doc(RunOptions, form=RUN_FORM, required=False))
async def run_workflow(name: str, request: Request, principal: Caller, services: ServicesDep) -> JSONResponse:
    """Queue a run: JSON ``{"params": {...}}``, or multipart with a ``params`` JSON field and image files
    named after their parameters."""
    if await services.workflows.current(name) is None:
        raise NotFound(f"no workflow {name}")
    options, files = await read_run(request, services.inputs, services.security.limits)
    admission = await admit(services, principal, options)
    return created(await services.resolver.submit(name, options.params, files, task=admission.new_task(options),
                                                  max_queued=admission.max_queued,
                                                  may_read=lambda task: can_see(principal, task.owner),
                                                  fleet=admission.fleet))
