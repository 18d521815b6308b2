"""pyiso8583 side of tests/auth_pyiso.rs (pyiso8583 4.x, `default` spec).

A co-process: one JSON request a line on stdin, one JSON answer a line on
stdout.

    {"op": "encode", "t": MTI, "fields": {...}, "mac_key": HEX|null}
        -> {"hex": ...}
       With a MAC key the MAC goes in DE128 when a secondary bitmap is
       present (any field above 64), else DE64: first 8 bytes of
       HMAC-SHA256(key, every byte before the MAC field) (INTERFACE §6).
    {"op": "decode", "hex": ..., "mac_key": HEX|null}
        -> {"t": MTI, "fields": {...}, "mac_ok": true|false|null}
       mac_ok is null without a key, else whether the message's MAC
       (DE64/DE128, which must be its last 8 bytes) verifies.

Field values are text for ascii fields and upper-case hex for `b` fields,
as pyiso8583 represents them. Errors are answered {"error": ...}.
"""

import hashlib
import hmac
import json
import sys

import iso8583
from iso8583.specs import default as SPEC


def encode(req):
    fields = dict(req["fields"])
    key = req.get("mac_key")
    mac_de = None
    if key:
        mac_de = "128" if any(int(k) > 64 for k in fields) else "64"
        fields[mac_de] = "00" * 8
    doc = dict(fields)
    doc["t"] = req["t"]
    raw, _ = iso8583.encode(doc, SPEC)
    raw = bytes(raw)
    if key:
        mac = hmac.new(bytes.fromhex(key), raw[:-8], hashlib.sha256).digest()[:8]
        raw = raw[:-8] + mac
    return {"hex": raw.hex().upper()}


def decode(req):
    raw = bytes.fromhex(req["hex"])
    dec, _ = iso8583.decode(raw, SPEC)
    fields = {k: v for k, v in dec.items() if k not in ("t", "p", "1")}
    mac_ok = None
    key = req.get("mac_key")
    if key:
        mac_de = "128" if "128" in fields else "64"
        if mac_de not in fields:
            mac_ok = False
        else:
            want = hmac.new(bytes.fromhex(key), raw[:-8], hashlib.sha256).digest()[:8]
            mac_ok = raw[-8:] == want and fields[mac_de].upper() == want.hex().upper()
    return {"t": dec["t"], "fields": fields, "mac_ok": mac_ok}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if req["op"] == "encode":
                out = encode(req)
            elif req["op"] == "decode":
                out = decode(req)
            elif req["op"] == "version":
                out = {"version": iso8583.__version__}
            else:
                out = {"error": f"unknown op {req['op']}"}
        except Exception as e:  # reported to the Rust side, which fails the test
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
