"""Schemathesis hooks for `make fuzz`.

Every request runs as the bootstrap admin: the token is fetched with the admin password and
fetched again whenever the service answers 401 (say, after the fuzzer called
POST /api/v1/auth/logout with it).

A few rules join two fields or more (an end after its start, a source other than its target,
ranges that do not overlap) or a field and the clock. JSON Schema cannot state them, so the
contract states them in the operation's or the field's description, and the hooks below teach
the generator the same rules: each maps a generated body that the schema accepts onto one that
also keeps the rule, changing as little as it can. A body the schema refuses (the negative
phases) is left exactly as generated, so schema-invalid data still has to be refused.
"""

import copy
import datetime
import itertools
import json
import os
import pathlib
import re
import time
import urllib.error
import urllib.request

import jsonschema
import schemathesis

SPEC_PATH = pathlib.Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


@schemathesis.auth(refresh_interval=60)
class AdminToken:
    def get(self, case, context):
        request = urllib.request.Request(
            os.environ["ITSM_FUZZ_BASE_URL"] + "/api/v1/auth/token",
            data=json.dumps(
                {"username": "admin", "password": os.environ["ITSM_ADMIN_PASSWORD"]}
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        for _ in range(30):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.load(response)["access_token"]
            except urllib.error.HTTPError as refused:
                # The fuzzer's wrong passwords may make the next sign-in wait.
                if refused.code not in (429, 503):
                    raise
                time.sleep(float(refused.headers.get("Retry-After", "1")))
        raise RuntimeError("the admin cannot sign in")

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# --- which bodies the schema accepts ------------------------------------------------------

_SPEC = json.loads(SPEC_PATH.read_text())
_VALIDATORS = {}


def _validator(method, path):
    """A validator of the operation's JSON request body, or None when it takes none."""
    key = (method.upper(), path)
    if key not in _VALIDATORS:
        operation = _SPEC["paths"].get(path, {}).get(method.lower(), {})
        content = operation.get("requestBody", {}).get("content", {})
        schema = next((media["schema"] for media in content.values() if "schema" in media), None)
        _VALIDATORS[key] = (
            None
            if schema is None
            else jsonschema.Draft202012Validator(
                # The body's schema, with the components its references point into.
                {"components": _SPEC["components"], "allOf": [schema]},
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
        )
    return _VALIDATORS[key]


def _schema_valid(method, path, body):
    validator = _validator(method, path)
    return validator is not None and validator.is_valid(body)


# --- values ---------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _instant(text):
    """An RFC 3339 date-time as an aware datetime (a leap second read as :59), or None."""
    match = _DATE_TIME.match(text) if isinstance(text, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    zone = match.group(8)
    if zone in ("Z", "z"):
        offset = datetime.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        offset = sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        local = datetime.datetime(year, month, day, hour, minute, min(second, 59), micro)
        return (local - offset).replace(tzinfo=datetime.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _rfc3339(at):
    at = at.astimezone(datetime.timezone.utc)
    return (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d}T"
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}Z"
    )


def _shifted(text, seconds):
    """`text` moved by `seconds`, or None past the calendar's ends."""
    at = _instant(text)
    try:
        return _rfc3339(at + datetime.timedelta(seconds=seconds))
    except (OverflowError, ValueError):
        return None


def _ordered(body, start_field, end_field, max_seconds=None):
    """`end_field` after `start_field` (and at most `max_seconds` later) when both are set."""
    start, end = _instant(body.get(start_field)), _instant(body.get(end_field))
    if start is None or end is None:
        return
    if end < start:
        body[start_field], body[end_field] = body[end_field], body[start_field]
        start, end = end, start
    if end == start or (max_seconds is not None and (end - start).total_seconds() > max_seconds):
        later = _shifted(body[start_field], 3600)
        if later is not None:
            body[end_field] = later
        else:
            body[start_field] = _shifted(body[end_field], -3600)


def _minutes(clock):
    return int(clock[:2]) * 60 + int(clock[3:])


def _clock(minutes):
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --- the rules, operation by operation --------------------------------------------------------

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def freeze_window(body, _case):
    # POST/PUT /api/v1/change-freeze-windows: `end` after `start`; the scope is everything, or
    # lists 1 to 200 items and services, not both.
    _ordered(body, "start", "end")
    scope = body["scope"]
    items, services = scope.get("configuration_items") or [], scope.get("services") or []
    if scope.get("everything"):
        scope.pop("configuration_items", None)
        scope.pop("services", None)
    elif not items and not services:
        scope["everything"] = True
    else:
        scope["configuration_items"] = items[:200]
        scope["services"] = services[: 200 - len(scope["configuration_items"])]


def relationship(body, _case):
    # POST /api/v1/ci-relationships: an item does not relate to itself (target_id other than
    # source_id).
    if body["target_id"] == body["source_id"]:
        body["target_id"] = body["source_id"] + "-other"


def calendar(body, _case):
    # POST/PUT /api/v1/calendars: working ranges of one weekday do not overlap (a range whose end
    # is at or before its start runs into the next day, Sunday's into Monday); a partial
    # holiday's end is after its start. Overlapping ranges are laid out again one after
    # another, as many as were generated: range i gets the i-th slot of 96 minutes of the week,
    # open for the first 60.
    week = 7 * 1440
    spans = []
    for hours in body["working_hours"]:
        start = DAYS.index(hours["day"]) * 1440 + _minutes(hours["start"])
        end = DAYS.index(hours["day"]) * 1440 + _minutes(hours["end"])
        if end <= start:
            end += 1440
        spans.append((start, end))
        if end > week:
            spans.append((start - week, end - week))
    spans.sort()
    if any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])):
        for index, hours in enumerate(body["working_hours"]):
            slot = index * 96
            hours["day"] = DAYS[slot // 1440]
            hours["start"] = _clock(slot % 1440)
            hours["end"] = _clock(slot % 1440 + 60)
    for holiday in body.get("holidays") or []:
        if "start" in holiday and "end" in holiday:
            start, end = _minutes(holiday["start"]), _minutes(holiday["end"])
            if end < start:
                holiday["start"], holiday["end"] = holiday["end"], holiday["start"]
            elif end == start:
                holiday["start"], holiday["end"] = (
                    (_clock(start), _clock(start + 1)) if start < 1439 else ("23:58", "23:59")
                )


def api_token(body, _case):
    # POST /api/v1/api-tokens: `expires_at`, when set, is in the future.
    at = _instant(body.get("expires_at"))
    if at is not None and at <= datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        minutes=5
    ):
        body["expires_at"] = _rfc3339(
            datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
        )


def external_refs(body, case):
    # Every body with `external_refs`: at most one reference per system. On an upsert by
    # reference (PUT .../by-external/{system}/{external_id}) the path's system, if the body names
    # it, has the path's id.
    refs = body.get("external_refs")
    if not isinstance(refs, list):
        return
    path = case.path_parameters or {}
    kept, systems = [], set()
    for ref in refs:
        if ref["system"] in systems:
            continue
        systems.add(ref["system"])
        if ref["system"] == path.get("system") and "external_id" in path:
            ref = dict(ref, id=path["external_id"])
        kept.append(ref)
    body["external_refs"] = kept


def assignment(body):
    # Creating a ticket (POST /api/v1/incidents, problems, changes and the upserts by reference):
    # an `assignee` needs an `assignment_group` (a change's template may fix it). Without a
    # group the assignee is left out.
    if (
        body.get("assignee") is not None
        and body.get("assignment_group") is None
        and body.get("template") is None
    ):
        body["assignee"] = None


def new_ticket(body, case):
    external_refs(body, case)
    assignment(body)


def change(body, case):
    # POST /api/v1/changes: a `template` makes a standard change and a standard change has one;
    # `title` is required unless a template fixes it; `risk` and `risk_override_reason` come
    # together; `planned_start` and `planned_end` come together, the end after the start and at
    # most 31 days later.
    new_ticket(body, case)
    if body.get("template") is not None:
        body["type"] = "standard"
    elif body.get("type") == "standard":
        body["type"] = "normal"
    if body.get("template") is None and body.get("title") is None:
        body["title"] = "A change"
    if body.get("risk") is not None and body.get("risk_override_reason") is None:
        body["risk_override_reason"] = "Assessed by hand"
    elif body.get("risk") is None and body.get("risk_override_reason") is not None:
        body["risk_override_reason"] = None
    window(body)


def window(body):
    # The planned window of a change, as a whole: both bounds or neither, in order, at most 31
    # days (POST and PATCH /api/v1/changes).
    start, end = body.get("planned_start"), body.get("planned_end")
    if isinstance(start, str) and not isinstance(end, str):
        body["planned_end"] = _shifted(start, 3600) or start
    elif isinstance(end, str) and not isinstance(start, str):
        body["planned_start"] = _shifted(end, -3600) or end
    _ordered(body, "planned_start", "planned_end", max_seconds=31 * 86400)


def change_patch(body, case):
    # PATCH /api/v1/changes/{id}: a window the patch gives whole is in order (the schema says
    # that `risk` and `risk_override_reason` come together).
    external_refs(body, case)
    if "planned_start" in body and "planned_end" in body:
        window(body)


# What each action of a ticket's transitions requires, as the fields' descriptions say
# ("Required by `resolve`"): a field and a value the hook gives when the generated body lacks
# it or holds only white space.
REQUIRED_BY = {
    "/api/v1/incidents/{id}/transitions": {
        "assign": {"assignee": "someone"},
        "hold": {"on_hold_reason": "awaiting_caller"},
        "resolve": {"resolution_code": "fixed", "resolution_notes": "Fixed"},
        "declare_major": {"reason": "Widespread outage"},
    },
    "/api/v1/problems/{id}/transitions": {
        "cancel": {"reason": "Not a problem"},
        "resolve": {"resolution_code": "fixed", "resolution_notes": "Fixed"},
        "record_workaround": {"workaround": "Restart it"},
        "record_root_cause": {"root_cause": "A bug"},
        "assign": {"assignee": "someone"},
    },
}


def ticket_transition(body, case):
    # POST /api/v1/incidents/{id}/transitions and /api/v1/problems/{id}/transitions: an action's
    # required fields are given (not blank).
    for field, value in REQUIRED_BY[case.operation.path].get(body["action"], {}).items():
        given = body.get(field)
        if given is None or (isinstance(given, str) and not given.strip()):
            body[field] = value


def change_transition(body, _case):
    # POST /api/v1/changes/{id}/transitions: the fields an action requires are given: `cancel`
    # a reason (not blank), `assign` an assignee, `review` an outcome and an actual end; only a
    # change that did not fully succeed (an outcome other than `successful`) causes incidents.
    action = body["action"]
    if action == "cancel" and not (body.get("reason") or "").strip():
        body["reason"] = "Not needed any more"
    if action == "assign" and not (body.get("assignee") or "").strip():
        body["assignee"] = "someone"
    if action == "review":
        if body.get("outcome") is None:
            body["outcome"] = "successful"
        if body.get("actual_end") is None:
            body["actual_end"] = _rfc3339(datetime.datetime.now(datetime.timezone.utc))
    if body.get("caused_incidents") and body.get("outcome") in (None, "successful"):
        body["caused_incidents"] = []


STATES = {
    "incident": ["new", "in_progress", "on_hold", "resolved", "closed", "canceled"],
    "problem": [
        "new", "assessed", "root_cause_analysis", "fix_in_progress", "resolved", "closed",
        "canceled",
    ],
}


def sla_policy(body, _case):
    # POST/PUT /api/v1/sla-policies: one target per metric and priority, and a target for every
    # priority the policy applies to (all of them when `applies_to.priorities` is empty);
    # `pause_on` names states of the policy's ticket type, and an on-hold reason only with an
    # incident's `on_hold`.
    targets, seen = [], set()
    for target in body["targets"]:
        key = (target["metric"], target["priority"])
        if key not in seen:
            seen.add(key)
            targets.append(target)
    applied = body["applies_to"].get("priorities") or ["p1", "p2", "p3", "p4", "p5"]
    for priority in applied:
        if not any(t["priority"] == priority for t in targets):
            targets.append(
                {"metric": "resolution", "priority": priority, "duration_seconds": 28800}
            )
    body["targets"] = targets
    kind = body["applies_to"]["ticket_type"]
    if isinstance(body.get("pause_on"), list):
        body["pause_on"] = [
            condition
            for condition in body["pause_on"]
            if condition["state"] in STATES.get(kind, [])
            and (
                condition.get("on_hold_reason") is None
                or (kind == "incident" and condition["state"] == "on_hold")
            )
        ]


def ci_class(body, _case):
    # POST /api/v1/ci-classes and PATCH /api/v1/ci-classes/{name}: attribute names differ;
    # `enum` lists values for `enum` attributes only; a `default` has the attribute's type;
    # identification rules name the class's identifying attributes, each once.
    attributes, names = [], set()
    for attribute in body.get("attributes") or []:
        if attribute["name"] in names:
            continue
        names.add(attribute["name"])
        kind = attribute["type"]
        if kind == "enum":
            values = [v for v in attribute.get("enum") or [] if v.strip() and len(v) <= 100]
            attribute["enum"] = values[:200] or ["a"]
        else:
            attribute.pop("enum", None)
        if "default" in attribute and attribute["default"] is not None:
            attribute["default"] = {
                "string": "x",
                "integer": 1,
                "number": 1.5,
                "boolean": True,
                "date": "2026-01-01",
                "enum": attribute.get("enum", ["a"])[0],
            }[kind]
        attributes.append(attribute)
    if "attributes" in body:
        body["attributes"] = attributes
    if isinstance(body.get("identification_rules"), list):
        identifying = [a["name"] for a in attributes if a.get("identifying")]
        rules = []
        for rule in body["identification_rules"]:
            kept = []
            for name in rule:
                if name in identifying and name not in kept:
                    kept.append(name)
            if kept:
                rules.append(kept[:10])
        body["identification_rules"] = rules[:20]


# (method, path) -> rule; a rule gets a schema-valid body (a copy, changed in place) and the
# case (for its path parameters).
RULES = {
    ("POST", "/api/v1/change-freeze-windows"): freeze_window,
    ("PUT", "/api/v1/change-freeze-windows/{id}"): freeze_window,
    ("POST", "/api/v1/ci-relationships"): relationship,
    ("POST", "/api/v1/calendars"): calendar,
    ("PUT", "/api/v1/calendars/{id}"): calendar,
    ("POST", "/api/v1/api-tokens"): api_token,
    ("POST", "/api/v1/changes"): change,
    ("PATCH", "/api/v1/changes/{id}"): change_patch,
    ("POST", "/api/v1/changes/{id}/transitions"): change_transition,
    ("POST", "/api/v1/incidents/{id}/transitions"): ticket_transition,
    ("POST", "/api/v1/problems/{id}/transitions"): ticket_transition,
    ("POST", "/api/v1/incidents"): new_ticket,
    ("PUT", "/api/v1/incidents/by-external/{system}/{external_id}"): new_ticket,
    ("POST", "/api/v1/problems"): new_ticket,
    ("PUT", "/api/v1/problems/by-external/{system}/{external_id}"): new_ticket,
    ("POST", "/api/v1/sla-policies"): sla_policy,
    ("PUT", "/api/v1/sla-policies/{id}"): sla_policy,
    ("POST", "/api/v1/ci-classes"): ci_class,
    ("PATCH", "/api/v1/ci-classes/{name}"): ci_class,
}
# The other bodies with `external_refs`.
for _method, _path in [
    ("PATCH", "/api/v1/incidents/{id}"),
    ("PATCH", "/api/v1/problems/{id}"),
    ("POST", "/api/v1/users"),
    ("PATCH", "/api/v1/users/{id}"),
    ("PUT", "/api/v1/users/by-external/{system}/{external_id}"),
    ("POST", "/api/v1/groups"),
    ("PATCH", "/api/v1/groups/{id}"),
    ("PUT", "/api/v1/groups/by-external/{system}/{external_id}"),
    ("POST", "/api/v1/configuration-items"),
    ("PATCH", "/api/v1/configuration-items/{id}"),
    ("PUT", "/api/v1/configuration-items/by-external/{system}/{external_id}"),
]:
    RULES.setdefault((_method, _path), external_refs)


_KEYS = itertools.count(1)


def _positive(case):
    return case.meta is not None and case.meta.generation.mode.is_positive


def _without_bad_names(case):
    """A positive case's body without the map keys its schema's `propertyNames` refuses.

    schemathesis 4.32.5 draws such keys (an empty label name where `minLength` is 1) for
    data it calls schema-valid: that is the generator's slip, not the service's, and the
    key is dropped rather than the refusal accepted."""
    validator = _validator(case.operation.method, case.operation.path)
    if validator is None or not isinstance(case.body, dict) or not _positive(case):
        return
    body = copy.deepcopy(case.body)
    for _ in range(10):
        errors = [e for e in validator.iter_errors(body) if e.validator == "propertyNames"]
        if not errors:
            break
        for error in errors:
            target = body
            for step in error.absolute_path:
                target = target[step]
            if isinstance(target, dict):
                target.pop(error.instance, None)
    case.body = body


def _keep_rules(case):
    operation = case.operation
    # POST with Idempotency-Key: a key names one intended request, and a request sent again
    # with it is answered with the first response, by design. Each generated request is a new
    # intent, so it gets a key of its own (a repeat drawn by the generator would replay a
    # response whose resource another step may have deleted since).
    headers = case.headers or {}
    if "Idempotency-Key" in headers and _positive(case):
        headers["Idempotency-Key"] = f"fuzz-{next(_KEYS)}"
    _without_bad_names(case)
    rule = RULES.get((operation.method.upper(), operation.path))
    if rule is None or not isinstance(case.body, dict):
        return case
    if not _schema_valid(operation.method, operation.path, case.body):
        return case
    body = copy.deepcopy(case.body)
    rule(body, case)
    case.body = body
    return case


@schemathesis.hook
def map_case(context, case):
    # The coverage, fuzzing and stateful phases' cases.
    return _keep_rules(case)


@schemathesis.hook
def before_add_examples(context, examples):
    # The examples phase's cases (built from the schema's examples, missing parts filled in),
    # which no map_case hook sees.
    examples[:] = [_keep_rules(case) for case in examples]


# --- diagnosis --------------------------------------------------------------------------------

if os.environ.get("ITSM_FUZZ_TRACE"):
    # `ITSM_FUZZ_TRACE=file make fuzz`: every 422 answered to schema-valid data is written to
    # the file (operation, body, the problem's errors), all of them, where schemathesis reports
    # one failure per operation and check.

    @schemathesis.check
    def trace_rejections(ctx, response, case):
        meta = case.meta
        if response.status_code != 422 or meta is None or not meta.generation.mode.is_positive:
            return None
        try:
            problem = response.json()
        except ValueError:
            problem = response.text
        with open(os.environ["ITSM_FUZZ_TRACE"], "a") as trace:
            trace.write(
                json.dumps(
                    {
                        "operation": f"{case.operation.method.upper()} {case.operation.path}",
                        "phase": str(getattr(meta.phase, "name", meta.phase)),
                        "path": case.path_parameters,
                        "query": case.query,
                        "body": case.body if isinstance(case.body, (dict, list)) else None,
                        "errors": problem.get("errors") if isinstance(problem, dict) else None,
                        "detail": problem.get("detail") if isinstance(problem, dict) else None,
                    },
                    default=str,
                )
                + "\n"
            )
        return None
