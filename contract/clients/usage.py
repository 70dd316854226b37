"""Type-checked with `mypy --strict` against the client openapi-python-client generates from
openapi/openapi.json (contract/clients.sh): a client creates an incident and handles each
outcome by its type. It fails the check if an operation stops typing its problems."""

from itsm_client import AuthenticatedClient
from itsm_client.api.incidents import create_incident, update_incident
from itsm_client.models import (
    CreateIncident,
    IncidentView,
    ProblemDetails,
    UpdateIncident,
    ValidationProblem,
)
from itsm_client.types import Unset


def describe(problem: ProblemDetails | ValidationProblem) -> str:
    """What went wrong, for a person: the fields at fault when the problem lists them."""
    errors = [] if isinstance(problem.errors, Unset) else problem.errors
    fields = [f"{error.field}: {error.message}" for error in errors]
    if fields:
        return f"{problem.status} {problem.title}: {'; '.join(fields)}"
    return f"{problem.status} {problem.title}: {problem.detail}"


def open_incident(client: AuthenticatedClient, title: str) -> str:
    result = create_incident.sync(
        client=client,
        body=CreateIncident(title=title, impact="high", urgency="medium"),
    )
    if isinstance(result, IncidentView):
        return result.number
    if isinstance(result, ValidationProblem):
        # A 422 always names at least one field.
        return "invalid: " + ", ".join(error.field for error in result.errors)
    if isinstance(result, ProblemDetails):
        return describe(result)
    return "no answer"


def lower_urgency(client: AuthenticatedClient, incident_id: str, etag: str) -> str:
    result = update_incident.sync(
        incident_id, client=client, body=UpdateIncident(urgency="low"), if_match=etag
    )
    if isinstance(result, IncidentView):
        return result.number
    if result is None:
        return "no answer"
    return describe(result)


if __name__ == "__main__":
    client = AuthenticatedClient(base_url="http://127.0.0.1:8080", token="a token")
    print(describe(ProblemDetails(detail="gone", status=404, title="Not found", type_="x")))
