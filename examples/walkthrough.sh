#!/usr/bin/env bash
# The README's walk-through, run against a service: every request states the status it
# expects, and the first other status stops the script with the answer. Names carry a suffix
# unique to the run, so it runs again on the same database.
#
#   ITSM_ADMIN_PASSWORD=... examples/walkthrough.sh          # against http://127.0.0.1:8080
#   ITSM_URL=http://host:port ITSM_ADMIN_PASSWORD=... examples/walkthrough.sh
#
# Needs bash, curl and jq.
set -euo pipefail

if [ -z "${ITSM_ADMIN_PASSWORD:-}" ]; then
    echo "walkthrough: set ITSM_ADMIN_PASSWORD to the password of the user admin (the service" >&2
    echo "takes it from that variable on its first start, or prints a generated one to its log)" >&2
    exit 2
fi
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "walkthrough: $tool is required" >&2; exit 2; }
done
B=${ITSM_URL:-http://127.0.0.1:8080}
RUN=$(date +%s)$$
HEADERS=$(mktemp)
BODY=$(mktemp)
trap 'rm -f "$HEADERS" "$BODY"' EXIT

# call STATUS METHOD PATH [curl options]: prints the answer's body; any other status stops
# the script. The answer's headers are in $HEADERS.
call() {
    local expected=$1 method=$2 path=$3 status
    shift 3
    status=$(curl -sS -X "$method" "$B$path" -D "$HEADERS" -o "$BODY" -w '%{http_code}' "$@")
    if [ "$status" != "$expected" ]; then
        echo "walkthrough: $method $path answered $status, expected $expected:" >&2
        cat "$BODY" >&2
        echo >&2
        exit 1
    fi
    cat "$BODY"
}
# header NAME: that header of the last answer.
header() { grep -i "^$1:" "$HEADERS" | tr -d '\r'; }
# show TEXT: says what the next answer shows.
show() { printf '\n== %s\n' "$*"; }
J='content-type: application/json'

# --- the walk-through ---
TOKEN=$(call 200 POST /api/v1/auth/token -H "$J" \
  -d '{"username": "admin", "password": "'"$ITSM_ADMIN_PASSWORD"'"}' | jq -r .access_token)
H="Authorization: Bearer $TOKEN"

show "who am I"
call 200 GET /api/v1/me -H "$H" | jq -c '{username, roles}'

# a user, with a reference to the HR system's record
call 201 POST /api/v1/users -H "$H" -H "$J" -d '{
  "username": "alice-'"$RUN"'", "email": "alice@example.com", "display_name": "Alice",
  "password": "alice-password-1", "roles": ["agent"],
  "external_refs": [{"system": "hr", "id": "E-'"$RUN"'"}]}' > /dev/null
ALICE=$(call 200 GET "/api/v1/users?external_ref=hr:E-$RUN" -H "$H" | jq -r '.items[0].id')

# a group, and alice in it
GROUP=$(call 201 POST /api/v1/groups -H "$H" -H "$J" \
  -d '{"name": "Service Desk '"$RUN"'", "description": "First line"}' | jq -r .id)
call 201 POST /api/v1/groups/$GROUP/members -H "$H" -H "$J" -d "{\"user_id\": \"$ALICE\"}" > /dev/null

show "optimistic concurrency: the ETag of a read goes into If-Match of the change"
call 200 GET /api/v1/groups/$GROUP -H "$H" > /dev/null
header etag                                                       # etag: "1"
call 200 PATCH /api/v1/groups/$GROUP -H "$H" -H 'If-Match: "1"' \
  -H 'content-type: application/merge-patch+json' -d '{"email": "desk@example.com"}' | jq -c '{email, version}'
call 412 PATCH /api/v1/groups/$GROUP -H "$H" -H 'If-Match: "1"' \
  -H 'content-type: application/merge-patch+json' -d '{"email": "lost@example.com"}' | jq -c '{status, detail}'

show "safe retries: the same Idempotency-Key and body replay the first response"
for attempt in first replay; do
  call 201 POST /api/v1/groups -H "$H" -H "Idempotency-Key: field-$RUN" -H "$J" \
    -d '{"name": "Field Services '"$RUN"'"}' | jq -c "{attempt: \"$attempt\", id, name}"
done
header idempotent-replayed                                        # idempotent-replayed: true

show "a token for an integration, shown once"
call 201 POST /api/v1/api-tokens -H "$H" -H "$J" \
  -d '{"name": "crm-sync", "role": "integration", "expires_at": null}' | jq -c '{name, role, created_by}'

show "the event feed an integrator polls, and the audit trail of the group"
call 200 GET "/api/v1/events?after=0&types=group.*&limit=3" -H "$H" | jq -c '.items[] | {sequence, type}'
call 200 GET "/api/v1/audit-events?entity_type=group&entity_id=$GROUP" -H "$H" | jq -c '.items[] | {action, actor: .actor.username}'

### An incident from report to closure
# an agent in the Network group, a requester, and a routing rule for network incidents
call 201 POST /api/v1/users -H "$H" -H "$J" -d '{"username": "nina-'"$RUN"'",
  "display_name": "Nina", "password": "nina-'"$RUN"'-password-1", "roles": ["agent"]}' > /dev/null
call 201 POST /api/v1/users -H "$H" -H "$J" -d '{"username": "rita-'"$RUN"'",
  "display_name": "Rita", "password": "rita-'"$RUN"'-password-1", "roles": ["requester"]}' > /dev/null
NINA=$(call 200 GET "/api/v1/users?q=nina-$RUN" -H "$H" | jq -r '.items[0].id')
NET=$(call 201 POST /api/v1/groups -H "$H" -H "$J" -d '{"name": "Network '"$RUN"'"}' | jq -r .id)
call 201 POST /api/v1/groups/$NET/members -H "$H" -H "$J" -d "{\"user_id\": \"$NINA\"}" > /dev/null
call 201 POST /api/v1/assignment-rules -H "$H" -H "$J" \
  -d "{\"position\": 10, \"category\": \"network-$RUN\", \"assignment_group\": \"$NET\"}" > /dev/null
token() { call 200 POST /api/v1/auth/token -H "$J" \
  -d "{\"username\": \"$1-$RUN\", \"password\": \"$1-$RUN-password-1\"}" | jq -r .access_token; }
R="Authorization: Bearer $(token rita)"; A="Authorization: Bearer $(token nina)"

show "the requester reports it; the rule routes it to Network; priority from impact x urgency"
INC=$(call 201 POST /api/v1/incidents -H "$R" -H "$J" -d '{"title": "VPN drops every few minutes",
  "description": "Since this morning", "category": "network-'"$RUN"'", "impact": "medium", "urgency": "high"}' \
  | jq -r .number)
call 200 GET /api/v1/incidents/$INC -H "$A" | jq -c '{number, state, priority, assignment_group}'
# act TOKEN ACTION [STATUS]: a transition of the incident, and what it leads to
act() { call "${3:-200}" POST /api/v1/incidents/$INC/transitions -H "$1" -H "$J" -d "$2" \
  | jq -c '{state, reopen_count, allowed_actions} | with_entries(select(.value != null))'; }

show "assigned, on hold, commented on, resumed, resolved, reopened, resolved, closed"
act "$A" "{\"action\": \"assign\", \"assignee\": \"$NINA\"}"          # in_progress
act "$A" '{"action": "hold", "on_hold_reason": "awaiting_caller"}'         # on_hold
call 201 POST /api/v1/incidents/$INC/notes -H "$R" -H "$J" \
  -d '{"body": "It happens on the office Wi-Fi only"}' | jq -c '{visibility, body}'    # a public comment
call 201 POST /api/v1/incidents/$INC/notes -H "$A" -H "$J" \
  -d '{"visibility": "internal", "body": "Suspect the AP firmware"}' | jq -c '{visibility, body}'  # requesters never see it
act "$A" '{"action": "resume"}'
act "$A" '{"action": "resolve", "resolution_code": "fixed", "resolution_notes": "AP firmware updated"}'
act "$R" '{"action": "reopen"}'                                             # reopen_count 1
act "$A" '{"action": "resolve", "resolution_code": "fixed", "resolution_notes": "Second AP updated"}'
act "$R" '{"action": "close"}'                                              # the caller confirms
show "a closed incident is final: reopening it is refused with 409"
call 409 POST /api/v1/incidents/$INC/transitions -H "$A" -H "$J" -d '{"action": "reopen"}' \
  | jq -c '{status, detail, allowed_actions}'
call 200 GET /api/v1/incidents/$INC -H "$A" | jq -c '{number, state, reopen_count}'

show "closed incidents, newest first, and the history of this one"
call 200 GET "/api/v1/incidents?state=closed&sort=-updated_at&limit=3" -H "$A" | jq -c '[.items[].number]'
call 200 GET /api/v1/incidents/$INC/history -H "$A" | jq -c '.items[] | {action, changes: (.changes | keys)}'

show "another one, canceled while open"
INC=$(call 201 POST /api/v1/incidents -H "$R" -H "$J" -d '{"title": "Printer offline"}' | jq -r .number)
act "$A" '{"action": "cancel", "reason": "Duplicate of a known outage"}'

### A problem, its incidents and the known error
call 201 POST /api/v1/users -H "$H" -H "$J" -d '{"username": "paula-'"$RUN"'",
  "display_name": "Paula", "password": "paula-'"$RUN"'-password-1", "roles": ["problem_manager"]}' > /dev/null
P="Authorization: Bearer $(token paula)"
INC=()
for t in "VPN drops every few minutes" "Remote access unstable on Wi-Fi" "Idle tunnels reset in building B"; do
  INC+=($(call 201 POST /api/v1/incidents -H "$R" -H "$J" -d "{\"title\": \"$t\"}" | jq -r .number))
done
I1=${INC[0]}; I2=${INC[1]}; I3=${INC[2]}

show "a problem from the first incident (its title, description, impact and urgency), holding it"
PRB=$(call 201 POST /api/v1/incidents/$I1/problem -H "$A" -H "$J" -d '{"hold_incident": true}' | jq -r .number)
call 200 POST /api/v1/problems/$PRB/incidents -H "$A" -H "$J" \
  -d "{\"incident_ids\": [\"$I2\", \"$I3\"], \"hold_incidents\": true}" | jq -c '[.[].state]'   # on_hold
# pact ACTION [STATUS]: a transition of the problem
pact() { call "${2:-200}" POST /api/v1/problems/$PRB/transitions -H "$P" -H "$J" -d "$1" \
  | jq -c '{state, known_error, allowed_actions, detail} | with_entries(select(.value != null))'; }
pact '{"action": "assess"}'
pact '{"action": "declare_known_error"}' 409                # needs a workaround or root cause
pact '{"action": "start_analysis"}'
pact '{"action": "record_workaround", "workaround": "Use the wired dock or the guest network"}'
pact '{"action": "record_root_cause", "root_cause": "Access point firmware drops idle tunnels"}'
pact '{"action": "declare_known_error"}'                    # known_error true

show "the known-error database, ranked by relevance, with the workaround in each hit"
call 200 GET "/api/v1/known-errors?q=idle+tunnels" -H "$A" | jq -c '.items[:3][] | {number, workaround}'
call 200 GET /api/v1/incidents/$I3/matching-known-errors -H "$A" | jq -c '.items[0].workaround'

show "resolving resumes the held incidents with a public comment"
pact '{"action": "start_fix"}'
pact '{"action": "resolve", "resolution_code": "fixed", "resolution_notes": "Firmware 8.2 deployed"}'
PRB_ID=$(call 200 GET /api/v1/problems/$PRB -H "$A" | jq -r .id)
call 200 GET "/api/v1/incidents?problem_id=$PRB_ID" -H "$A" | jq -c '.items[] | {number, state}'   # in_progress again

### The CMDB: classes, items, relationships, impact, reconciliation
show "a class below the built-in server class: inherited schema, own attributes, identification rules"
CLASS=linux_server_$RUN
call 201 POST /api/v1/ci-classes -H "$H" -H "$J" -d '{"name": "'"$CLASS"'", "parent": "server",
  "attributes": [{"name": "kernel", "type": "string", "required": true},
                 {"name": "arch", "type": "enum", "enum": ["x86_64", "arm64"]}],
  "identification_rules": [["serial_number"], ["hostname", "dns_domain"]]}' | jq -c '{name, parent}'
ci() { call "${2:-201}" POST /api/v1/configuration-items -H "$H" -H "$J" -d "$1" | jq -r '.id // .detail'; }
SHOP=$(ci '{"name": "Web shop '"$RUN"'", "class": "business_service", "criticality": "critical"}')
APP=$(ci '{"name": "shop-app-'"$RUN"'", "class": "application"}')
DB=$(ci '{"name": "shop-db-'"$RUN"'", "class": "database"}')
SRV=$(ci '{"name": "web01", "class": "'"$CLASS"'", "attributes": {"kernel": "6.1",
  "hostname": "web-'"$RUN"'", "dns_domain": "example.org"}}')
ci '{"name": "x", "class": "'"$CLASS"'"}' 422                 # attributes.kernel is required
rel() { call 201 POST /api/v1/ci-relationships -H "$H" -H "$J" \
  -d "{\"source_id\": \"$1\", \"type\": \"$2\", \"target_id\": \"$3\"}" > /dev/null; }
rel $SHOP depends_on $APP; rel $APP depends_on $DB; rel $DB uses $APP   # a cycle
rel $APP runs_on $SRV
show "who suffers when the server fails: the business services above it"
call 200 GET "/api/v1/configuration-items/$SRV/impact?direction=upstream&depth=6" -H "$H" \
  | jq -c '[.business_services[] | .name]'
call 200 GET "/api/v1/configuration-items?attr.hostname=web-$RUN" -H "$H" | jq -c '[.items[].name]'

show "a discovery tool reconciles; twice changes nothing"
BATCH='{"source": "discovery", "items": [{"class": "server", "name": "db01",
  "attributes": {"serial_number": "SN-'"$RUN"'", "os": "linux"}}]}'
call 200 POST /api/v1/configuration-items/reconcile -H "$H" -H "$J" -d "$BATCH" | jq -c .summary  # created 1
call 200 POST /api/v1/configuration-items/reconcile -H "$H" -H "$J" -d "$BATCH" | jq -c .summary  # unchanged 1
call 200 PATCH /api/v1/configuration-items/$SRV -H "$H" -H "$J" -d '{"status": "retired"}' | jq -c '{name, status}'
call 200 GET /api/v1/configuration-items/$SRV/history -H "$H" | jq -c '.items[] | {action, changes: (.changes | keys)}'

### Service levels: calendars, policies, timers
show "a Berlin office calendar, and a policy: resolution of p3 within 8 business hours"
CAL=$(call 201 POST /api/v1/calendars -H "$H" -H "$J" -d '{"name": "Berlin office '"$RUN"'",
  "time_zone": "Europe/Berlin",
  "working_hours": [{"day": "monday", "start": "09:00", "end": "17:00"}, {"day": "friday", "start": "09:00", "end": "17:00"}],
  "holidays": [{"date": "2026-12-25"}]}' | jq -r .id)
call 201 POST /api/v1/sla-policies -H "$H" -H "$J" -d "{\"name\": \"Office $RUN\", \"precedence\": 1,
  \"applies_to\": {\"ticket_type\": \"incident\", \"priorities\": [\"p3\"]}, \"calendar_id\": \"$CAL\",
  \"targets\": [{\"metric\": \"resolution\", \"priority\": \"p3\", \"duration_seconds\": 28800}],
  \"escalations\": [{\"threshold\": \"warning\", \"action\": \"notify\", \"group\": \"$GROUP\"}]}" \
  | jq -c '{name, precedence}'
show "a p3 incident reported now gets its resolution timer in the same unit of work"
INC=$(call 201 POST /api/v1/incidents -H "$H" -H "$J" -d '{"title": "Printer jams", "description": "Every page",
  "impact": "medium", "urgency": "medium"}' | jq -r .id)
call 200 GET /api/v1/incidents/$INC/slas -H "$H" | jq -c '.items[] | {metric, state, due_at}'
TIMER=$(call 200 GET /api/v1/incidents/$INC/slas -H "$H" | jq -r '.items[0].id')
call 200 GET /api/v1/sla-timers/$TIMER/timeline -H "$H" | jq -c '.items[] | {kind, reason}'

### Monitoring alerts
show "an alert opens an incident; the same alert again is counted on it"
IT=$(call 201 POST /api/v1/api-tokens -H "$H" -H "$J" -d '{"name": "alertmanager", "role": "integration",
  "expires_at": null, "scopes": ["alerts:write"]}' | jq -r .token)
ALERT='{"source": "zabbix", "dedup_key": "db01-disk-'"$RUN"'", "severity": "major",
  "summary": "Disk almost full", "resources": ["db01"]}'
call 200 POST /api/v1/alerts -H "Authorization: Bearer $IT" -H "$J" -d "$ALERT" | jq -c '.alerts[] | {outcome}'
call 200 POST /api/v1/alerts -H "Authorization: Bearer $IT" -H "$J" -d "$ALERT" | jq -c '.alerts[] | {outcome}'

### A change: risk, CAB approval, conflicts, freezes
# (continuing from the CMDB section: $SHOP depends on $APP, which depends on $DB)
show "approval policies are data: two of the CAB group for high risk, one change manager otherwise"
CAB=$(call 201 POST /api/v1/groups -H "$H" -H "$J" -d '{"name": "CAB '"$RUN"'"}' | jq -r .id)
for m in carl cleo; do
  call 201 POST /api/v1/users -H "$H" -H "$J" -d '{"username": "'"$m-$RUN"'", "display_name": "'"$m"'",
    "password": "'"$m-$RUN"'-password-1", "roles": ["change_manager"]}' > /dev/null
  ID=$(call 200 GET "/api/v1/users?q=$m-$RUN" -H "$H" | jq -r '.items[0].id')
  call 201 POST /api/v1/groups/$CAB/members -H "$H" -H "$J" -d "{\"user_id\": \"$ID\"}" > /dev/null
  declare "ID_$m=$ID"
done
# this run's policies come first (a lower precedence than any earlier run's)
FIRST=$(( -$(date +%s) ))
call 201 POST /api/v1/change-approval-policies -H "$H" -H "$J" -d "{\"name\": \"CAB $RUN\",
  \"precedence\": $FIRST, \"change_types\": [\"normal\"], \"risks\": [\"high\", \"very_high\"],
  \"approvers\": [{\"group\": \"$CAB\"}], \"quorum\": 2}" | jq -c '{name, quorum}'
call 201 POST /api/v1/change-approval-policies -H "$H" -H "$J" -d "{\"name\": \"Manager $RUN\",
  \"precedence\": $((FIRST + 1)), \"approvers\": [{\"role\": \"change_manager\"}]}" | jq -c '{name, quorum}'

show "a normal change: the risk and each answer's contribution come back with it"
CHG=$(call 201 POST /api/v1/changes -H "$H" -H "$J" -d "{\"title\": \"Upgrade shop-db\",
  \"configuration_items\": [\"$DB\"], \"backout_plan\": \"Restore the snapshot\",
  \"planned_start\": \"2030-01-10T22:00:00Z\", \"planned_end\": \"2030-01-11T02:00:00Z\",
  \"risk_answers\": {\"outage_required\": true, \"tested\": true}}" | jq -r .number)
call 200 GET /api/v1/changes/$CHG -H "$H" | jq -c '{number, state, risk}'
call 200 POST /api/v1/changes/$CHG/transitions -H "$H" -H "$J" -d '{"action": "assess"}' | jq -c '{state}'
call 200 POST /api/v1/changes/$CHG/transitions -H "$H" -H "$J" -d '{"action": "request_authorization"}' \
  | jq -c '{state}'
call 200 GET /api/v1/changes/$CHG/approvals -H "$H" | jq -c '.items[] | {approver, state}'
show "each approver decides; the quorum schedules the change"
for m in carl cleo; do
  M="Authorization: Bearer $(token $m)"
  ME="ID_$m"
  APPROVAL=$(call 200 GET /api/v1/me/approvals -H "$M" | jq -r --arg me "${!ME}" \
    '.items[] | select(.approver == $me) | .id')
  call 200 POST /api/v1/changes/$CHG/approvals/$APPROVAL/decision -H "$M" -H "$J" \
    -d '{"decision": "approve"}' | jq -c '{approval: .approval.state, change: .change.state}'
done

show "another change on an item that depends on shop-db, in the same window: the conflict"
CHG2=$(call 201 POST /api/v1/changes -H "$H" -H "$J" -d "{\"title\": \"Patch shop-app\",
  \"configuration_items\": [\"$APP\"], \"planned_start\": \"2030-01-10T23:00:00Z\",
  \"planned_end\": \"2030-01-11T01:00:00Z\"}" | jq -r .number)
call 200 GET /api/v1/changes/$CHG2/conflicts -H "$H" | jq -c '.conflicts[] | {number, links}'
show "a freeze on the shop covers every item it depends on; the change calendar shows both"
call 201 POST /api/v1/change-freeze-windows -H "$H" -H "$J" -d "{\"name\": \"Sale $RUN\", \"reason\": \"Peak\",
  \"start\": \"2030-01-10T00:00:00Z\", \"end\": \"2030-01-12T00:00:00Z\", \"scope\": {\"services\": [\"$SHOP\"]}}" \
  | jq -c '{name, start, "end": .["end"]}'
call 200 GET "/api/v1/changes/calendar?from=2030-01-01T00:00:00Z&to=2030-02-01T00:00:00Z&service=$SHOP" -H "$H" \
  | jq -c '{changes: [.changes[] | {number, state}], freeze_windows: [.freeze_windows[] | .name]}'
