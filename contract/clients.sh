#!/usr/bin/env bash
# Two clients generated from openapi/openapi.json must compile and type the problems they get:
# - TypeScript: openapi-typescript's types with openapi-fetch, checked by `tsc --strict`
#   against contract/clients/usage.ts;
# - Python: openapi-python-client's package, checked by `mypy --strict` against
#   contract/clients/usage.py (which also runs).
# The generators are pinned and installed into the git-ignored .tools/ by contract/tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
contract/tools.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/ts"
.tools/clients/node_modules/.bin/openapi-typescript openapi/openapi.json \
    -o "$work/ts/api.d.ts" --silent
cp contract/clients/usage.ts contract/clients/tsconfig.json "$work/ts/"
ln -s "$PWD/.tools/clients/node_modules" "$work/ts/node_modules"
.tools/clients/node_modules/.bin/tsc -p "$work/ts/tsconfig.json"
echo "typescript client (openapi-typescript + openapi-fetch): compiles under tsc --strict"

mkdir -p "$work/py"
.tools/clients-venv/bin/openapi-python-client generate --path openapi/openapi.json \
    --output-path "$work/py/itsm_client" --meta none \
    --config contract/clients/python-client.yaml >"$work/py/generate.log" 2>&1 \
    || { cat "$work/py/generate.log"; exit 1; }
if grep -qi "warning\|error" "$work/py/generate.log"; then
    cat "$work/py/generate.log"
    exit 1
fi
cp contract/clients/usage.py "$work/py/"
(cd "$work/py" && "$OLDPWD/.tools/clients-venv/bin/mypy" --strict --no-incremental \
    --cache-dir=/dev/null usage.py itsm_client)
(cd "$work/py" && "$OLDPWD/.tools/clients-venv/bin/python" usage.py >/dev/null)
echo "python client (openapi-python-client): passes mypy --strict"
