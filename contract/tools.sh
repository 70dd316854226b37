#!/usr/bin/env bash
# Installs the contract tools at pinned versions into the git-ignored .tools/ (once; later runs
# find them there): Redocly CLI from npm, schemathesis and openapi-spec-validator from PyPI,
# and the two client generators contract/clients.sh compiles against (openapi-typescript,
# openapi-fetch and TypeScript from npm; openapi-python-client and mypy from PyPI, in a venv
# of their own so their dependencies never meet schemathesis's).
set -euo pipefail
cd "$(dirname "$0")/.."

REDOCLY_VERSION=2.77.0
SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
OPENAPI_TYPESCRIPT_VERSION=7.13.0
OPENAPI_FETCH_VERSION=0.17.0
TYPESCRIPT_VERSION=5.9.3
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
MYPY_VERSION=2.4.1
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

clients="$TOOLS/clients/node_modules"
if [ "$(node -p "require('./$clients/openapi-typescript/package.json').version" 2>/dev/null)" != "$OPENAPI_TYPESCRIPT_VERSION" ] \
    || [ "$(node -p "require('./$clients/openapi-fetch/package.json').version" 2>/dev/null)" != "$OPENAPI_FETCH_VERSION" ] \
    || [ "$(node -p "require('./$clients/typescript/package.json').version" 2>/dev/null)" != "$TYPESCRIPT_VERSION" ]; then
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/clients" \
        "openapi-typescript@$OPENAPI_TYPESCRIPT_VERSION" "openapi-fetch@$OPENAPI_FETCH_VERSION" \
        "typescript@$TYPESCRIPT_VERSION"
fi
if [ ! -x "$TOOLS/clients-venv/bin/pip" ]; then
    python3 -m venv "$TOOLS/clients-venv"
fi
if ! "$TOOLS/clients-venv/bin/pip" freeze 2>/dev/null | grep -qx "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" \
    || ! "$TOOLS/clients-venv/bin/pip" freeze 2>/dev/null | grep -qx "mypy==$MYPY_VERSION"; then
    "$TOOLS/clients-venv/bin/pip" install -q "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" \
        "mypy==$MYPY_VERSION"
fi
