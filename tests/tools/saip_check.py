#!/usr/bin/env python3
"""Independent check of SAIP (TCA eUICC Profile Package) DER files.

This script does not share any code with smdpplus. It decodes each Profile
Element with asn1tools compiled from the TCA ASN.1 module
(PEDefinitions-3.3.1.asn, next to this file), re-encodes it and compares the
bytes (DER is canonical, so any difference is an encoder bug on one side),
then checks the decoded values against rules taken from the SAIP ASN.1
comments and from the standards the values come from:

  * package structure (header first, MF second, end last, unique PE ids,
    PUKs before PINs, one PE per template-based file system);
  * ProfileHeader: mandatory services and templates match the PEs and the
    algorithms the package uses; the header ICCID equals EF.ICCID;
  * files: Fcp order and encoding rules, contents required by the SAIP
    Annex A templates the package uses, sizes, PIN status templates that
    name defined PINs;
  * PINs and PUKs (ETSI TS 102 221 key references, digit coding, attempt
    counters, PUK references that exist);
  * Milenage (3GPP TS 35.206 section 4.1 constants, key and OPc lengths);
  * the security domain (GlobalPlatform privileges, life cycle, SCP
    parameters in C9 and matching key sets, key usage qualifiers).

Usage: saip_check.py [--dump] FILE.der [FILE.der ...]
Exit status: 0 all files pass, 1 a check failed, 2 missing dependency or
bad arguments.
"""

import os
import sys

try:
    import asn1tools
except ImportError:  # pragma: no cover - reported to the caller
    sys.stderr.write("saip_check: python module asn1tools is not installed\n")
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
ASN1_FILE = os.path.join(HERE, "PEDefinitions-3.3.1.asn")

# The TCA module gives sqnInit, a SEQUENCE OF, an OCTET STRING as its
# DEFAULT. asn1tools cannot parse the proper value list either, so the
# checker compiles the module with sqnInit OPTIONAL and checks separately
# that a present sqnInit is not the default (32 zero values), which DER
# would leave out.
SQN_INIT_AS_WRITTEN = (
    "sqnInit SEQUENCE (SIZE (32)) OF OCTET STRING (SIZE (6)) DEFAULT '000000000000'H"
)
SQN_INIT_FOR_ASN1TOOLS = "sqnInit SEQUENCE (SIZE (32)) OF OCTET STRING (SIZE (6)) OPTIONAL"


def compile_spec():
    with open(ASN1_FILE, encoding="utf-8") as fh:
        text = fh.read()
    if text.count(SQN_INIT_AS_WRITTEN) != 1:
        raise SystemExit("saip_check: %s is not the expected PEDefinitions module" % ASN1_FILE)
    return asn1tools.compile_string(text.replace(SQN_INIT_AS_WRITTEN, SQN_INIT_FOR_ASN1TOOLS), "der")


# --- Reference values, written down from the standards ---------------------

# 3GPP TS 35.206 section 4.1: r1..r5 in bits and c1..c5 as 128-bit integers.
MILENAGE_R_BITS = (64, 0, 32, 64, 96)
MILENAGE_C_INT = (0, 1, 2, 4, 8)


def milenage_rotation_octets():
    # SAIP codes each rotation as one octet holding the number of bits.
    return bytes(MILENAGE_R_BITS)


def milenage_xor_octets():
    return b"".join(c.to_bytes(16, "big") for c in MILENAGE_C_INT)


# ETSI TS 102 221 section 9.5.1 (Table 9.3): key references.
GLOBAL_PIN_REFS = set(range(0x01, 0x09))  # PIN Appl 1..8
ADM_REFS = set(range(0x0A, 0x0F)) | set(range(0x8A, 0x8F))  # ADM1..ADM10
LOCAL_PIN_REFS = set(range(0x81, 0x89))  # second PIN Appl 1..8
PUK_REFS = set(range(0x01, 0x09)) | set(range(0x81, 0x89))

# GlobalPlatform Card Specification v2.3, 11.1.2: privilege bits
# (byte index, mask, name).
GP_PRIVILEGES = [
    (0, 0x80, "Security Domain"),
    (0, 0x40, "DAP Verification"),
    (0, 0x20, "Delegated Management"),
    (0, 0x10, "Card Lock"),
    (0, 0x08, "Card Terminate"),
    (0, 0x04, "Card Reset"),
    (0, 0x02, "CVM Management"),
    (0, 0x01, "Mandated DAP Verification"),
    (1, 0x80, "Trusted Path"),
    (1, 0x40, "Authorized Management"),
    (1, 0x20, "Token Verification"),
    (1, 0x10, "Global Delete"),
    (1, 0x08, "Global Lock"),
    (1, 0x04, "Global Registry"),
    (1, 0x02, "Final Application"),
    (1, 0x01, "Global Service"),
    (2, 0x80, "Receipt Generation"),
    (2, 0x40, "Ciphered Load File Data Block"),
    (2, 0x20, "Contactless Activation"),
    (2, 0x10, "Contactless Self-Activation"),
]

# GlobalPlatform CS 11.1.9: key usage qualifier bits (first octet).
KUQ_VERIFY = 0x80
KUQ_COMPUTE = 0x40
KUQ_SM_RESPONSE = 0x20
KUQ_SM_COMMAND = 0x10
KUQ_CONFIDENTIAL = 0x08
KUQ_CHECKSUM = 0x04

# GlobalPlatform CS 5.3.2 / Table 11-48: life cycle states of a security
# domain (INSTALLED is not meaningful for an SD in a profile).
SD_LIFE_CYCLES = {0x07: "SELECTABLE", 0x0F: "PERSONALIZED", 0x83: "LOCKED"}

# Key version number ranges (GP CS Amd D for SCP03; ETSI TS 102 225 for SCP80).
SCP_KVN = {0x80: range(0x01, 0x10), 0x03: range(0x30, 0x40), 0x02: range(0x20, 0x30)}

# SAIP Annex A: the template OIDs and, per file, whether the template needs
# content from the profile ("content required") or a size it cannot default.
TEMPLATES = {
    "2.23.143.1.2.1": ("mf", True, {"ef-iccid", "ef-dir", "ef-arr"}),
    "2.23.143.1.2.3": ("telecom", False, {"ef-arr"}),
    "2.23.143.1.2.4": (
        "usim",
        True,
        {"ef-imsi", "ef-arr", "ef-ust", "ef-spn", "ef-est", "ef-acc", "ef-ecc"},
    ),
    "2.23.143.1.2.8": (
        "isim",
        True,
        {"ef-impi", "ef-impu", "ef-domain", "ef-ist", "ef-arr"},
    ),
}
# Files whose size the template leaves to the profile.
SIZE_REQUIRED = {
    "2.23.143.1.2.8": {"ef-impi", "ef-impu", "ef-domain"},
}
# Fixed sizes in the templates for the files the checks read.
TEMPLATE_SIZES = {
    ("2.23.143.1.2.4", "ef-ust"): 14,
    ("2.23.143.1.2.4", "ef-imsi"): 9,
    ("2.23.143.1.2.4", "ef-spn"): 17,
    ("2.23.143.1.2.4", "ef-est"): 1,
    ("2.23.143.1.2.4", "ef-acc"): 2,
    ("2.23.143.1.2.4", "ef-ad"): 4,
    ("2.23.143.1.2.8", "ef-ist"): 14,
    ("2.23.143.1.2.1", "ef-iccid"): 10,
}

FS_TYPES = {
    "mf", "cd", "telecom", "usim", "opt-usim", "isim", "opt-isim", "phonebook",
    "gsm-access", "csim", "opt-csim", "eap", "df-5gs", "df-saip", "df-snpn",
    "df-5gprose", "iot", "opt-iot",
}
SINGLETONS = [
    "header", "mf", "end", "cd", "telecom", "usim", "isim", "csim", "opt-usim",
    "opt-isim", "opt-csim", "df-saip", "df-5gs",
]
NEEDS_BEFORE = [
    ("opt-usim", "usim"), ("opt-isim", "isim"), ("gsm-access", "usim"),
    ("phonebook", "usim"), ("df-5gs", "usim"), ("df-saip", "usim"),
    ("opt-csim", "csim"),
]


class Report:
    def __init__(self, name):
        self.name = name
        self.errors = []
        self.notes = []

    def error(self, msg):
        self.errors.append(msg)

    def note(self, msg):
        self.notes.append(msg)


# --- DER splitting (top level only) ----------------------------------------


def split_tlvs(data):
    """Split a concatenation of BER TLVs; definite lengths only."""
    out = []
    i = 0
    while i < len(data):
        start = i
        tag0 = data[i]
        i += 1
        if tag0 & 0x1F == 0x1F:
            while True:
                if i >= len(data):
                    raise ValueError("truncated tag at offset %d" % start)
                b = data[i]
                i += 1
                if not b & 0x80:
                    break
        if i >= len(data):
            raise ValueError("truncated length at offset %d" % start)
        first = data[i]
        i += 1
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise ValueError("indefinite length at offset %d (not DER)" % start)
        else:
            n = first & 0x7F
            if i + n > len(data):
                raise ValueError("truncated length at offset %d" % start)
            length = int.from_bytes(data[i:i + n], "big")
            if n > 1 and data[i] == 0 or length < 0x80:
                raise ValueError("non-minimal length at offset %d (not DER)" % start)
            i += n
        if i + length > len(data):
            raise ValueError("element at offset %d runs past the end" % start)
        i += length
        out.append((start, data[start:i]))
    return out


def simple_tlvs(data):
    """Parse simple one-byte-tag TLVs (GP install parameters, ETSI DOs)."""
    out = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError("truncated TLV")
        tag, length = data[i], data[i + 1]
        if i + 2 + length > len(data):
            raise ValueError("TLV %02X runs past the end" % tag)
        out.append((tag, data[i + 2:i + 2 + length]))
        i += 2 + length
    return out


# --- Helpers over decoded values --------------------------------------------


def header_of(pe_type, value):
    for k, v in value.items():
        if k.lower().endswith("-header") and isinstance(v, dict):
            return v
    return None


def files_of(value):
    """(name, File) pairs of a template-based file system PE, in order."""
    for k, v in value.items():
        if isinstance(v, list) and (k.startswith("ef-") or k.startswith("df-")
                                     or k.startswith("adf-") or k == "mf"):
            yield k, v


def fcp_of(file_value):
    for choice, v in file_value:
        if choice == "fileDescriptor":
            return v
    return None


def content_of(file_value):
    """File contents as written (offsets honoured), or None."""
    buf = bytearray()
    pos = 0
    seen = False
    for choice, v in file_value:
        if choice == "fillFileOffset":
            pos += v
        elif choice == "fillFileContent":
            seen = True
            if len(buf) < pos:
                buf.extend(b"\xff" * (pos - len(buf)))
            buf[pos:pos + len(v)] = v
            pos += len(v)
    return bytes(buf) if seen else None


def is_df_name(name):
    return name == "mf" or name.startswith("df-") or name.startswith("adf-")


def minimal_unsigned(octets):
    return len(octets) >= 1 and not (len(octets) > 1 and octets[0] == 0)


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iccid_digits(octets, swapped):
    """ICCID digits: EF.ICCID swaps the nibbles of each octet (ETSI TS 102
    221 13.2); the ProfileHeader carries them in reading order, F-padded
    (as pySim's personalization writes it)."""
    s = ""
    for b in octets:
        for nib in ((b & 0x0F, b >> 4) if swapped else (b >> 4, b & 0x0F)):
            if nib <= 9:
                s += str(nib)
            elif nib != 0xF:
                return None
    return s


def decode_pin_value(v):
    """ASCII digits padded with FF (ETSI TS 102 221 9.5.x)."""
    digits = bytes(b for b in v if b != 0xFF)
    pad_start = len(digits)
    if any(b != 0xFF for b in v[pad_start:]):
        return None
    if not all(0x30 <= b <= 0x39 for b in digits):
        return None
    return digits.decode()


# --- The checks --------------------------------------------------------------


def check_schema(spec, data, rep):
    """Decode every PE, enforce constraints, re-encode and compare bytes."""
    pes = []
    try:
        parts = split_tlvs(data)
    except ValueError as e:
        rep.error("framing: %s" % e)
        return pes
    for offset, raw in parts:
        try:
            value = spec.decode("ProfileElement", raw, check_constraints=True)
        except Exception as e:  # asn1tools raises several error types
            rep.error("PE at offset %d does not decode: %s" % (offset, e))
            continue
        try:
            again = spec.encode("ProfileElement", value, check_constraints=True)
        except Exception as e:
            rep.error("PE %s at offset %d does not re-encode: %s" % (value[0], offset, e))
            again = None
        if again is not None and bytes(again) != raw:
            n = next((i for i, (a, b) in enumerate(zip(raw, again)) if a != b),
                     min(len(raw), len(again)))
            rep.error(
                "PE %s at offset %d is not canonical DER: first difference at +%d "
                "(ours %s, asn1tools %s)"
                % (value[0], offset, n, raw[n:n + 8].hex(), bytes(again)[n:n + 8].hex())
            )
        pes.append((offset, value[0], value[1]))
    return pes


def check_structure(pes, rep):
    types = [t for _, t, _ in pes]
    if not types:
        rep.error("no profile elements")
        return
    if types[0] != "header":
        rep.error("first PE is %s, not header" % types[0])
    if len(types) < 2 or types[1] != "mf":
        rep.error("second PE is not mf")
    if types[-1] != "end":
        rep.error("last PE is %s, not end" % types[-1])
    for t in SINGLETONS:
        if types.count(t) > 1:
            rep.error("%d PEs of type %s (at most one)" % (types.count(t), t))
    for opt, base in NEEDS_BEFORE:
        if opt in types and (base not in types or types.index(base) > types.index(opt)):
            rep.error("PE %s without a preceding PE %s" % (opt, base))
    ids = []
    for _, t, v in pes:
        if t == "header":
            continue
        h = header_of(t, v)
        if h is None:
            rep.error("PE %s has no PE header" % t)
            continue
        ids.append(h["identification"])
    if len(ids) != len(set(ids)):
        rep.error("PE identification values are not unique: %s" % ids)
    if "pukCodes" in types and "pinCodes" in types:
        if types.index("pukCodes") > types.index("pinCodes"):
            rep.error("PE-PUKCodes comes after the first PE-PINCodes")


def check_header(pes, rep, ctx):
    hdr = next((v for _, t, v in pes if t == "header"), None)
    if hdr is None:
        rep.error("no ProfileHeader")
        return
    rep.note("header version %d.%d, profileType %r"
             % (hdr["major-version"], hdr["minor-version"], hdr.get("profileType")))
    if (hdr["major-version"], hdr["minor-version"]) < (2, 0):
        rep.error("header version below 2.0")
    services = set(hdr["eUICC-Mandatory-services"].keys())
    types = [t for _, t, _ in pes]
    for naa in ("usim", "isim", "csim"):
        if naa in services and naa not in types:
            rep.error("mandatory service %s without a PE-%s" % (naa, naa.upper()))
        if naa in types and naa not in services:
            rep.error("PE-%s present but %s not in eUICC-Mandatory-services"
                      % (naa.upper(), naa))
    for svc, naa in (("gba-usim", "usim"), ("gba-isim", "isim"),
                     ("multiple-usim", "usim"), ("multiple-isim", "isim"),
                     ("multiple-csim", "csim")):
        if svc in services and naa not in services:
            rep.error("%s mandatory but %s is not" % (svc, naa))
    algos = set()
    for _, t, v in pes:
        if t == "akaParameter" and v["algoConfiguration"][0] == "algoParameter":
            a = v["algoConfiguration"][1]
            if a["algorithmID"] == 1:
                algos.add("milenage")
            elif a["algorithmID"] == 2:
                algos.add("tuak128" if len(a["key"]) == 16 else "tuak256")
            elif a["algorithmID"] == 3:
                algos.add("usim-test-algorithm")
    for a in sorted(algos - services):
        rep.error("the package uses %s but it is not a mandatory service" % a)
    for a in sorted({"milenage", "tuak128", "tuak256", "usim-test-algorithm"}
                    & services - algos):
        rep.note("service %s is mandatory but no akaParameter uses it" % a)
    gfste = list(hdr["eUICC-Mandatory-GFSTEList"])
    used = [v["templateID"] for _, t, v in pes if t in FS_TYPES]
    for oid in used:
        if oid not in gfste:
            rep.error("template %s used but not in eUICC-Mandatory-GFSTEList" % oid)
    for oid in gfste:
        if oid not in used:
            rep.error("template %s in eUICC-Mandatory-GFSTEList but not used" % oid)
    if len(gfste) != len(set(gfste)):
        rep.error("eUICC-Mandatory-GFSTEList repeats an OID")
    digits = iccid_digits(hdr["iccid"], swapped=False)
    if digits is None or len(digits) not in (19, 20) or not luhn_ok(digits[:19]):
        rep.error("header ICCID %s is not a BCD ICCID with a Luhn digit" % hdr["iccid"].hex())
    ctx["iccid"] = digits


def check_files(pes, rep, ctx):
    temp_fids = {}
    for _, t, v in pes:
        if t not in FS_TYPES:
            continue
        oid = v["templateID"]
        info = TEMPLATES.get(oid)
        if info is None:
            rep.note("PE %s uses template %s, which this checker does not know" % (t, oid))
        elif info[0] != t:
            rep.error("PE %s uses template %s, which is a %s template" % (t, oid, info[0]))
        present = dict(files_of(v))
        for name, f in present.items():
            choices = [c for c, _ in f]
            if "doNotCreate" in choices and len(choices) != 1:
                rep.error("%s/%s: doNotCreate must be alone" % (t, name))
            if "doNotCreate" in choices and info and not info[1]:
                rep.error("%s/%s: doNotCreate in a not-created-by-default template" % (t, name))
            if choices.count("fileDescriptor") > 1:
                rep.error("%s/%s: more than one fileDescriptor" % (t, name))
            if "fileDescriptor" in choices and choices[0] != "fileDescriptor":
                rep.error("%s/%s: fileDescriptor is not first" % (t, name))
            fcp = fcp_of(f) or {}
            if "efFileSize" in fcp and not minimal_unsigned(fcp["efFileSize"]):
                rep.error("%s/%s: efFileSize %s not on the fewest octets"
                          % (t, name, fcp["efFileSize"].hex()))
            if is_df_name(name):
                if "efFileSize" in fcp or "shortEFID" in fcp or "proprietaryEFInfo" in fcp:
                    rep.error("%s/%s: EF-only Fcp field on a DF" % (t, name))
                if "pinStatusTemplateDO" in fcp:
                    ctx["ps_do"].append((t, name, fcp["pinStatusTemplateDO"]))
                elif info and name != "mf":
                    rep.note("%s/%s: no pinStatusTemplateDO (template default applies)"
                             % (t, name))
            elif "pinStatusTemplateDO" in fcp:
                rep.error("%s/%s: pinStatusTemplateDO on an EF" % (t, name))
            if name.startswith("adf-"):
                if "dfName" not in fcp:
                    rep.error("%s/%s: ADF without dfName (AID)" % (t, name))
                if "fileID" not in fcp:
                    rep.error("%s/%s: ADF without a temporary file ID" % (t, name))
                else:
                    temp_fids[fcp["fileID"]] = (t, name, fcp.get("dfName"))
            content = content_of(f)
            if info and name in info[2] and content is None:
                rep.error("%s/%s: the template needs content and there is none" % (t, name))
            if name in SIZE_REQUIRED.get(oid, set()) and "efFileSize" not in fcp:
                rep.error("%s/%s: the template needs a size (efFileSize)" % (t, name))
            size = None
            if "efFileSize" in fcp:
                size = int.from_bytes(fcp["efFileSize"], "big")
            elif (oid, name) in TEMPLATE_SIZES:
                size = TEMPLATE_SIZES[(oid, name)]
            if content is not None and size is not None and len(content) > size:
                rep.error("%s/%s: %d octets of content for a %d-octet file"
                          % (t, name, len(content), size))
            ctx["files"][(t, name)] = (fcp, content)
    ctx["temp_fids"] = temp_fids
    iccid = ctx["files"].get(("mf", "ef-iccid"), (None, None))[1]
    if iccid is not None and ctx.get("iccid"):
        ef_digits = iccid_digits(iccid[:10], swapped=True)
        if ef_digits != ctx["iccid"]:
            rep.error("EF.ICCID %s (%s) differs from the header ICCID %s"
                      % (iccid.hex(), ef_digits, ctx["iccid"]))
    # EF.DIR must list the AIDs of the ADFs (TS 102 221 13.1).
    efdir = ctx["files"].get(("mf", "ef-dir"), (None, None))[1]
    if efdir is not None:
        for fid, (t, name, aid) in temp_fids.items():
            if aid and aid not in efdir:
                rep.error("EF.DIR does not list the AID %s of %s" % (aid.hex(), name))


def check_pins(pes, rep, ctx):
    puks = {}
    for _, t, v in pes:
        if t != "pukCodes":
            continue
        for p in v["pukCodes"]:
            ref = p["keyReference"]
            if ref not in PUK_REFS:
                rep.error("PUK key reference %02X is not a TS 102 221 PUK reference" % ref)
            if ref in puks:
                rep.error("PUK %02X defined twice" % ref)
            puks[ref] = p
            digits = decode_pin_value(p["pukValue"])
            if digits is None or len(digits) != 8:
                rep.error("PUK %02X is not 8 ASCII digits" % ref)
            mx, left = p["maxNumOfAttemps-retryNumLeft"] >> 4, p["maxNumOfAttemps-retryNumLeft"] & 0xF
            if mx == 0 or left > mx:
                rep.error("PUK %02X attempts %d/%d are inconsistent" % (ref, left, mx))
    defined = set()
    context = "mf"
    pin_contexts = {}
    for _, t, v in pes:
        if t in FS_TYPES:
            context = t
            continue
        if t != "pinCodes":
            continue
        kind, body = v["pinCodes"]
        if kind == "filePath":
            if body not in ctx.get("temp_fids", {}):
                rep.error("pinCodes after %s shares file path %s, which names no ADF"
                          % (context, body.hex()))
            else:
                owner = ctx["temp_fids"][body][0]
                if owner not in pin_contexts:
                    rep.error("pinCodes after %s shares the PINs of %s, which has none"
                              % (context, owner))
                pin_contexts[context] = pin_contexts.get(owner, set())
            continue
        refs = set()
        for p in body:
            ref = p["keyReference"]
            if ref in refs:
                rep.error("PIN %02X defined twice in one PE" % ref)
            refs.add(ref)
            if context == "mf":
                if ref not in GLOBAL_PIN_REFS | ADM_REFS:
                    rep.error("PIN %02X in the MF is not a global PIN or ADM reference" % ref)
            elif ref not in LOCAL_PIN_REFS:
                rep.error("PIN %02X in %s is not a local PIN reference" % (ref, context))
            val = p["pinValue"]
            if ref in ADM_REFS:
                if len(val) != 8:
                    rep.error("ADM %02X is not 8 octets" % ref)
            else:
                digits = decode_pin_value(val)
                if digits is None or not 4 <= len(digits) <= 8:
                    rep.error("PIN %02X is not 4 to 8 ASCII digits padded with FF" % ref)
            cnt = p["maxNumOfAttemps-retryNumLeft"]
            mx, left = cnt >> 4, cnt & 0xF
            if mx == 0 or left > mx:
                rep.error("PIN %02X attempts %d/%d are inconsistent" % (ref, left, mx))
            unblock = p.get("unblockingPINReference")
            if unblock is not None and unblock not in puks:
                rep.error("PIN %02X is unblocked by PUK %02X, which is not defined" % (ref, unblock))
            if ref in ADM_REFS and unblock is not None:
                rep.note("ADM %02X has a PUK" % ref)
            rep.note("PIN %02X: attributes %d, attempts %d/%d, PUK %s"
                     % (ref, p["pinAttributes"], left, mx,
                        "%02X" % unblock if unblock is not None else "none"))
        pin_contexts[context] = refs
        defined |= refs
    ctx["pins"] = defined
    for t, name, ps in ctx["ps_do"]:
        for ref in ps:
            if ref not in defined:
                rep.error("%s/%s: PIN status template names key %02X, which no pinCodes defines"
                          % (t, name, ref))


def check_aka(pes, rep):
    last_naa = None
    naa_with_aka = set()
    for _, t, v in pes:
        if t in ("usim", "isim", "csim"):
            last_naa = t
        if t != "akaParameter":
            continue
        if last_naa is None:
            rep.error("akaParameter before any NAA")
        else:
            naa_with_aka.add(last_naa)
        if "sqnInit" in v and all(x == bytes(6) for x in v["sqnInit"]):
            rep.error("akaParameter carries sqnInit equal to its DEFAULT (not DER)")
        kind, a = v["algoConfiguration"]
        if kind != "algoParameter":
            rep.note("akaParameter after %s maps another NAA's parameters" % last_naa)
            continue
        if a["algorithmID"] == 1:
            if len(a["key"]) != 16:
                rep.error("Milenage K is %d octets, not 16" % len(a["key"]))
            if len(a["opc"]) != 16:
                rep.error("Milenage OPc is %d octets, not 16" % len(a["opc"]))
            if a["rotationConstants"] != milenage_rotation_octets():
                rep.error("Milenage r1..r5 %s differ from TS 35.206 %s"
                          % (a["rotationConstants"].hex(), milenage_rotation_octets().hex()))
            if a["xoringConstants"] != milenage_xor_octets():
                rep.error("Milenage c1..c5 differ from TS 35.206")
            if a["algorithmOptions"] != b"\x00":
                rep.note("Milenage algorithmOptions %s" % a["algorithmOptions"].hex())
            if a["key"] == a["opc"]:
                rep.error("Milenage K equals OPc")
    for naa in ("usim", "isim"):
        if naa in [t for _, t, _ in pes] and naa not in naa_with_aka:
            rep.error("PE-%s has no akaParameter after it" % naa.upper())


def check_sd(pes, rep):
    sds = [v for _, t, v in pes if t == "securityDomain"]
    for n, v in enumerate(sds):
        inst = v["instance"]
        aid = inst["instanceAID"]
        label = "securityDomain %s" % aid.hex().upper()
        priv = inst["applicationPrivileges"]
        if len(priv) != 3:
            rep.error("%s: privileges are %d octets, not 3 (GP CS 11.1.2)" % (label, len(priv)))
            continue
        names = [nm for i, m, nm in GP_PRIVILEGES if priv[i] & m]
        rep.note("%s: privileges %s = %s" % (label, priv.hex().upper(), ", ".join(names)))
        if not priv[0] & 0x80:
            rep.error("%s: the Security Domain privilege is not set" % label)
        if priv[2] & 0x0F:
            rep.error("%s: RFU privilege bits set in the third octet" % label)
        if n == 0:
            # The MNO-SD: it manages its own content (SGP.22 2.2.1.3,
            # SAIP 8.7): Authorized Management is expected.
            if not priv[1] & 0x40:
                rep.error("%s: the MNO-SD lacks Authorized Management" % label)
            if priv[0] & 0x20:
                rep.error("%s: Delegated Management together with the MNO-SD role" % label)
        lcs = inst["lifeCycleState"][0]
        if lcs not in SD_LIFE_CYCLES:
            rep.error("%s: life cycle state %02X is not an SD state" % (label, lcs))
        try:
            c9 = simple_tlvs(inst["applicationSpecificParametersC9"])
        except ValueError as e:
            rep.error("%s: C9 install parameters do not parse: %s" % (label, e))
            c9 = []
        scps = {}
        for tag, val in c9:
            if tag == 0x81:
                if len(val) != 2:
                    rep.error("%s: C9 tag 81 (SCP) is %d octets, not 2" % (label, len(val)))
                    continue
                scps[val[0]] = val[1]
            elif tag not in (0x82, 0x83, 0x84, 0x86, 0x87, 0x45, 0x46, 0x4F, 0x93):
                rep.note("%s: C9 tag %02X not interpreted" % (label, tag))
        rep.note("%s: SCPs %s" % (label, ", ".join("%02X i=%02X" % kv for kv in scps.items())))
        keys = v.get("keyList", [])
        sets = {}
        for k in keys:
            kvn = k["keyVersionNumber"][0]
            kid = k["keyIdentifier"][0]
            if (kvn, kid) in sets:
                rep.error("%s: key %02X/%02X defined twice" % (label, kvn, kid))
            sets[(kvn, kid)] = k
            kuq = k["keyUsageQualifier"][0]
            comps = k["keyComponents"]
            for c in comps:
                if c["keyType"] == b"\x88" and len(c["keyData"]) not in (16, 24, 32):
                    rep.error("%s: AES key %02X/%02X is %d octets"
                              % (label, kvn, kid, len(c["keyData"])))
            role = {1: "ENC/KIc", 2: "MAC/KID", 3: "DEK/KIK"}.get(kid)
            if role == "ENC/KIc" and not (kuq & KUQ_SM_COMMAND and kuq & KUQ_CONFIDENTIAL):
                rep.error("%s: key %02X/01 usage %02X lacks C-ENC (10 and 08)" % (label, kvn, kuq))
            if role == "MAC/KID" and not (kuq & KUQ_SM_COMMAND and kuq & KUQ_CHECKSUM):
                rep.error("%s: key %02X/02 usage %02X lacks C-MAC (10 and 04)" % (label, kvn, kuq))
            if role == "DEK/KIK" and not (kuq & KUQ_CONFIDENTIAL) or (
                    role == "DEK/KIK" and kuq & (KUQ_SM_COMMAND | KUQ_SM_RESPONSE)):
                rep.error("%s: key %02X/03 usage %02X is not a key-encryption key"
                          % (label, kvn, kuq))
            access = k.get("keyAccess", b"\x00")[0]
            if access not in (0x00, 0x01, 0x02):
                rep.error("%s: key access %02X is not a GP value" % (label, access))
            rep.note("%s: key %02X/%02X usage %02X access %02X (%s)"
                     % (label, kvn, kid, kuq, access, role))
        for scp, i in scps.items():
            rng = SCP_KVN.get(scp)
            if rng is None:
                continue
            kvns = {kvn for kvn, _ in sets if kvn in rng}
            if not kvns:
                rep.error("%s: SCP%02X is declared but no key set with a KVN in %02X..%02X"
                          % (label, scp, rng.start, rng.stop - 1))
            for kvn in kvns:
                for kid in (1, 2, 3):
                    if (kvn, kid) not in sets:
                        rep.error("%s: SCP%02X key set %02X lacks key %02X" % (label, scp, kvn, kid))
        for kvn, _ in sets:
            if not any(kvn in SCP_KVN[s] for s in scps if s in SCP_KVN):
                rep.error("%s: key set %02X belongs to no declared SCP" % (label, kvn))


def check_file(spec, path, dump=False):
    rep = Report(path)
    with open(path, "rb") as fh:
        data = fh.read()
    pes = check_schema(spec, data, rep)
    if dump:
        for off, t, v in pes:
            print("--- %s @%d" % (t, off))
            print(repr(v))
    ctx = {"files": {}, "ps_do": []}
    for fn in (check_structure, lambda p, r: check_header(p, r, ctx),
               lambda p, r: check_files(p, r, ctx), lambda p, r: check_pins(p, r, ctx),
               check_aka, check_sd):
        try:
            fn(pes, rep)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            rep.error("check crashed on unexpected content: %r" % (e,))
    return rep, len(pes)


def main(argv):
    dump = "--dump" in argv
    files = [a for a in argv if a != "--dump"]
    if not files or any(a.startswith("-") for a in files):
        sys.stderr.write(__doc__)
        return 2
    spec = compile_spec()
    failed = 0
    for path in files:
        rep, count = check_file(spec, path, dump)
        status = "FAIL" if rep.errors else "ok"
        print("%s: %s (%d profile elements, %d errors)" % (path, status, count, len(rep.errors)))
        for e in rep.errors:
            print("  error: %s" % e)
        if os.environ.get("SAIP_CHECK_VERBOSE"):
            for n in rep.notes:
                print("  note: %s" % n)
        failed += bool(rep.errors)
    print("saip_check: %d packages checked, %d with errors" % (len(files), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
