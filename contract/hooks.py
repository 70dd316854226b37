"""Schemathesis hooks for `make fuzz`: every request runs as the bootstrap admin.

The token is fetched with the admin password and fetched again whenever the service answers 401
(say, after the fuzzer called POST /api/v1/auth/logout with it)."""

import json
import os
import time
import urllib.error
import urllib.request

import schemathesis


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
