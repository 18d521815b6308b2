"""pyiso8583 side of tests/interop_pyiso8583.rs (pyiso8583 4.x, `default` spec).

    interop.py version          print iso8583.__version__
    interop.py gen SEED COUNT   read {"<de>": "<class>", ...} (our content
                                classes) as JSON on stdin; print COUNT random
                                valid messages, one JSON object a line:
                                {"hex": ..., "t": MTI, "fields": {...}}
    interop.py decode           read one hex message a line on stdin; print
                                one JSON object a line: {"ok": true, "t": MTI,
                                "fields": {...}, "reencoded": hex} or
                                {"ok": false, "error": ...}

Field values are text for ascii fields and upper-case hex for `b` fields,
as pyiso8583 itself represents them. The bitmap keys "p" and "1" are left
out. DE65 is never generated: pyiso8583 treats bit 65 as the tertiary
bitmap indicator, not as a data field.
"""

import json
import random
import string
import sys

import iso8583
from iso8583.specs import default as SPEC

ALPHABETS = {
    "n": string.digits,
    "an": string.ascii_letters + string.digits + " ",
    "ans": "".join(chr(c) for c in range(0x20, 0x7F)),
    "z": string.digits + "=D",
}


def value(rng, de, cls):
    spec = SPEC[str(de)]
    top = spec["max_len"]
    if spec["len_type"] == 0:
        length = top
    else:
        length = rng.choice([rng.randint(0, min(top, 12)), rng.randint(0, top), top])
    if cls == "b":
        return bytes(rng.randrange(256) for _ in range(length)).hex().upper()
    if cls == "xn":
        return rng.choice("CD") + "".join(rng.choice(string.digits) for _ in range(length - 1))
    return "".join(rng.choice(ALPHABETS[cls]) for _ in range(length))


def gen(seed, count):
    classes = json.load(sys.stdin)
    rng = random.Random(seed)
    candidates = [de for de in range(2, 129) if de != 65]
    for _ in range(count):
        mti = "".join(rng.choice(string.digits) for _ in range(4))
        chosen = sorted(rng.sample(candidates, rng.randint(1, 30)))
        fields = {str(de): value(rng, de, classes[str(de)]) for de in chosen}
        doc = dict(fields)
        doc["t"] = mti
        raw, _ = iso8583.encode(doc, SPEC)
        print(json.dumps({"hex": bytes(raw).hex(), "t": mti, "fields": fields}))


def decode():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            dec, _ = iso8583.decode(bytes.fromhex(line), SPEC)
            fields = {k: v for k, v in dec.items() if k not in ("t", "p", "1")}
            again = {k: v for k, v in dec.items() if k not in ("p", "1")}
            raw, _ = iso8583.encode(again, SPEC)
            out = {"ok": True, "t": dec["t"], "fields": fields, "reencoded": bytes(raw).hex()}
        except Exception as e:  # reported to the Rust side, which fails the test
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out))


def main():
    cmd = sys.argv[1]
    if cmd == "version":
        print(iso8583.__version__)
    elif cmd == "gen":
        gen(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "decode":
        decode()
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
