"""schemathesis hooks for tests/tools/schemathesis.sh.

Generated data alone rarely gets past the first check of a call: an ES2+
header names a random requester (refused 1.1/1.2 before anything else),
and a decision API call names an order that does not exist (404). These
hooks make part of the generated calls those of the real operator and of
a real order, so the rest of each handler is exercised too.
"""

import os
import zlib

import schemathesis

REQUESTER = os.environ.get("SMDPPLUS_ST_REQUESTER", "dev-operator")
ORDER = os.environ.get("SMDPPLUS_ST_ORDER", "")
CAPABILITY = os.environ.get("SMDPPLUS_ST_CAPABILITY", "")


def _half(value) -> bool:
    # Deterministic in the generated value, so a replayed case is the same.
    return zlib.crc32(repr(value).encode()) % 2 == 0


@schemathesis.hook
def map_case(context, case):
    path = case.operation.path
    body = case.body
    if path.startswith("/gsma/rsp2/es2plus/") and isinstance(body, dict):
        header = body.get("header")
        if isinstance(header, dict) and _half(body):
            header["functionRequesterIdentifier"] = REQUESTER
    if path.startswith("/mobileplans/v1/") and ORDER and _half(case.query):
        case.query = dict(case.query or {}, transactionId=ORDER)
        case.headers = dict(case.headers or {}, **{"X-MP-Capability": CAPABILITY})
    return case
