#!/usr/bin/env bash
# Installs the contract tools at pinned versions into the git-ignored .tools/ (once; later runs
# find them there): Redocly CLI from npm, schemathesis and openapi-spec-validator from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

REDOCLY_VERSION=2.77.0
SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
TOOLS=.tools

if ! "$TOOLS/redocly/node_modules/.bin/redocly" --version 2>/dev/null | grep -qx "$REDOCLY_VERSION"; then
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/redocly" "@redocly/cli@$REDOCLY_VERSION"
fi
if [ ! -x "$TOOLS/venv/bin/pip" ]; then
    python3 -m venv "$TOOLS/venv"
fi
if ! "$TOOLS/venv/bin/pip" freeze 2>/dev/null | grep -qx "schemathesis==$SCHEMATHESIS_VERSION" \
    || ! "$TOOLS/venv/bin/pip" freeze 2>/dev/null | grep -qx "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"; then
    "$TOOLS/venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
        "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
fi
