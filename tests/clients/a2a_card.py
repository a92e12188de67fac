"""Validates an A2A 1.0 agent card against the specification's JSON Schema
(tests/fixtures/a2a/a2a-v1.0.1.schema.json) and the fields the proto marks REQUIRED (which the
schema does not list), and prints the card and the problems as JSON.

    python a2a_card.py CARD_URL [TOKEN]
"""

import json
import os
import sys
import urllib.request

import jsonschema

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "a2a", "a2a-v1.0.1.schema.json")

# field_behavior = REQUIRED in specification/a2a.proto (v1.0.1); required repeated fields need
# at least one element (specification §5.7).
REQUIRED = {
    "card": ["name", "description", "supportedInterfaces", "version", "capabilities", "defaultInputModes", "defaultOutputModes", "skills"],
    "interface": ["url", "protocolBinding", "protocolVersion"],
    "skill": ["id", "name", "description", "tags"],
}


def problems(card, schema):
    root = {k: v for k, v in schema.items() if k != "$comment"}
    validator = jsonschema.Draft202012Validator({**root, "$ref": "#/definitions/Agent%20Card"})
    found = [f"schema: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(card)]

    def need(obj, keys, where):
        for k in keys:
            v = obj.get(k) if isinstance(obj, dict) else None
            if v in (None, "", []) or (v == {} and k != "capabilities"):
                found.append(f"required: {where}.{k} missing or empty")

    need(card, REQUIRED["card"], "card")
    for i, itf in enumerate(card.get("supportedInterfaces") or []):
        need(itf, REQUIRED["interface"], f"supportedInterfaces[{i}]")
    for i, skill in enumerate(card.get("skills") or []):
        need(skill, REQUIRED["skill"], f"skills[{i}]")
    for i, req in enumerate(card.get("securityRequirements") or []):
        for name in req.get("schemes") or {}:
            if name not in (card.get("securitySchemes") or {}):
                found.append(f"securityRequirements[{i}] names undeclared scheme {name!r}")
    return found


if __name__ == "__main__":
    url = sys.argv[1]
    headers = {"A2A-Version": "1.0"}
    if len(sys.argv) > 2:
        headers["Authorization"] = f"Bearer {sys.argv[2]}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
        card = json.load(response)
    with open(SCHEMA) as f:
        schema = json.load(f)
    print(json.dumps({"card": card, "problems": problems(card, schema)}))
