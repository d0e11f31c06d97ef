"""Registry pushes over HTTP: the import's records, for registries that send their changes as they happen."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, RootModel

from varsel.api_types import ApiModel
from varsel.auth.tokens import Caller
from varsel.http import json_body, json_request_body, problem_responses
from varsel.recipients.imports import ImportSummary, Record, parse_record

router = APIRouter(prefix="/notifications/api/v1/registry", tags=["Contact registries"])

MAX_RECORDS = 10_000


class RegistryRecords(RootModel[list[dict[str, Any]]]):
    """Registry records as `varsel registry import` reads them, one JSON object each (person, organization,
    userContact, authorization, externalIdentity or delete)."""

    root: list[dict[str, Any]] = Field(max_length=MAX_RECORDS)


class RejectedRecord(ApiModel):
    index: int
    reason: str


class RegistryChanges(ApiModel):
    inserted: int
    updated: int
    deleted: int
    rejected: list[RejectedRecord]


_RECORDS_EXAMPLE = [
    {
        "kind": "person",
        "nationalIdentityNumber": "01017012345",
        "name": "Ola Nordmann",
        "emailAddress": "ola.nordmann@example.com",
        "contactConfirmed": "2026-03-01T12:00:00+01:00",
    },
    {
        "kind": "externalIdentity",
        "externalIdentity": "urn:altinn:party:username:kari.selvregistrert",
        "name": "Kari Selvregistrert",
        "emailAddress": "kari@example.com",
        "mobileNumber": "+4799999999",
    },
    {"kind": "delete", "nationalIdentityNumber": "02027012345"},
    {"kind": "delete", "externalIdentity": "urn:altinn:username:gammel.bruker"},
]


async def registry_writer(request: Request) -> Caller:
    caller: Caller = await request.app.state.varsel.authenticator.registry_writer(request)
    return caller


@router.post(
    "/records",
    response_model=RegistryChanges,
    summary="Upsert or delete registry records",
    description=(
        "Needs a bearer token with the registry scope (varsel:registry.write by default). Valid records are "
        "applied in order; invalid ones are listed "
        f"with their index and reason and do not stop the rest. At most {MAX_RECORDS} records a request."
    ),
    # Registry pushes take a bearer token only (the app-wide security also offers PlatformAccessToken).
    openapi_extra={**json_request_body(RegistryRecords, _RECORDS_EXAMPLE), "security": [{"bearer": []}]},
    responses=problem_responses(400, 401, 403, 413, 415, 503),
)
async def push_records(
    request: Request,
    _caller: Annotated[Caller, Depends(registry_writer)],
    body: Annotated[RegistryRecords, Depends(json_body(RegistryRecords))],
) -> RegistryChanges:
    summary = ImportSummary()
    valid: list[Record] = []
    for index, raw in enumerate(body.root):
        try:
            valid.append(parse_record(raw))
        except ValueError as error:
            summary.rejected.append((index, str(error)))
    await request.app.state.varsel.registry_importer.apply(valid, summary)
    return RegistryChanges(
        inserted=summary.inserted,
        updated=summary.updated,
        deleted=summary.deleted,
        rejected=[RejectedRecord(index=index, reason=reason) for index, reason in summary.rejected],
    )
