#!/usr/bin/env bash
# Lints the checked-in contract with two independent tools: Redocly's `recommended` ruleset
# (redocly.yaml) and openapi-spec-validator (OpenAPI 3.1). Any error or warning fails.
set -euo pipefail
cd "$(dirname "$0")/.."
contract/tools.sh

report=$(.tools/redocly/node_modules/.bin/redocly lint --format stylish openapi/openapi.json 2>&1) || {
    echo "$report"
    exit 1
}
if echo "$report" | grep -Eq '(error|warning) +[a-z0-9-]+ '; then
    echo "$report"
    exit 1
fi
echo "redocly (recommended): no errors, no warnings"
.tools/venv/bin/openapi-spec-validator openapi/openapi.json
