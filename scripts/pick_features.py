#!/usr/bin/env python3
"""The cargo features each Lambda function of a deployment is built with (deploy.sh).

    pick_features.py CONFIG_YAML DEPLOY_DIR [FEATURES]
    pick_features.py --architecture DEPLOY_DIR

Reads what the deployment sets, as Terraform reads it: `TF_VAR_<name>` in the environment,
then DEPLOY_DIR/terraform.tfvars(.json), then DEPLOY_DIR/*.auto.tfvars(.json) in name order (a later source
replaces a variable's whole value), with the defaults of terraform/deploy; and `mcp.servers`
in CONFIG_YAML. FEATURES (deploy.sh's AK_FEATURES) replaces the choice; naming no store there
means both.

Prints four lines on stdout: `request-handler: <features>`, `agent-runner: ...`,
`response-handler: ...`, `why: <feature: reason; ...>`; warnings on stderr (a setting it
cannot read, a feature FEATURES leaves out that the settings need). Exit status 2 when a file
cannot be read at all.

With --architecture it prints the deployment's `architecture` variable instead, read the same
way, and on a second line where it comes from (`arm64` and "the module's default" when no source sets it
or it is null).

Features: bedrock, mcp (MCP tools), mcp-endpoint, openai, agui, ai-sdk, a2a, redis, dynamodb
(see docs/deploying.md#building-the-lambda-packages).
"""

import glob
import json
import os
import re
import sys

SURFACES = ("openai", "agui", "ai-sdk", "a2a")
STORES = ("redis", "dynamodb")
ORDER = ("bedrock", "mcp", "mcp-endpoint") + SURFACES + STORES


class HclError(ValueError):
    """A construct of HCL this reader does not understand."""


def strip_comments(text):
    """HCL without its comments (`#`, `//`, `/* */`), strings left alone."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i2 = n if j < 0 else j + 2
            out.append(" " + "\n" * text.count("\n", i, i2))
            i = i2
        elif text.startswith("<<", i):
            m = re.compile(r"<<-?([A-Za-z_]\w*)[ \t]*\n").match(text, i)
            if not m:
                raise HclError(f"cannot read {text[i:i + 20]!r}")
            end = re.compile(r"(?m)^[ \t]*" + m.group(1) + r"[ \t]*$").search(text, m.end())
            if not end:
                raise HclError(f"the heredoc {m.group(1)} does not end")
            out.append('""' + "\n" * text.count("\n", i, end.end()))
            i = end.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([{}\[\]=:,()])|([^\s{}\[\]=:,()"]+))', re.S)


# Operators of HCL's expressions: a value followed by one is an expression (`60 * 5`).
OPERATORS = {"*", "/", "%", "+", "-", "==", "!=", "<", ">", "<=", ">=", "&&", "||", "?"}


class Expression(str):
    """An expression (arithmetic, a conditional) kept as its text: no setting this reader
    needs is one."""


def tokens(text):
    """(kind, text, line) of each token: `str`, `p` (punctuation) or `word`."""
    at, out = 0, []
    text = strip_comments(text)
    line = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
    while at < len(text):
        m = TOKEN.match(text, at)
        if not m or m.end() == at:
            if text[at:].strip():
                raise HclError(f"line {line(at)}: cannot read {text[at:at + 20].strip()!r}")
            break
        at = m.end()
        string, punct, word = m.groups()
        start = m.start(m.lastindex)
        if string is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", string[1:-1]), line(start)))
        elif punct is not None:
            out.append(("p", punct, line(start)))
        elif word is not None:
            out.append(("word", word, line(start)))
    return out


class Parser:
    """Attributes (`name = value`) of a .tfvars file, objects and lists as Python values;
    anything else (an expression) as its text."""

    def __init__(self, text):
        self.toks, self.at = tokens(text), 0

    def peek(self):
        return self.toks[self.at][:2] if self.at < len(self.toks) else (None, None)

    def line(self):
        """The line of the next token (or the last), for messages."""
        if not self.toks:
            return 1
        return self.toks[min(self.at, len(self.toks) - 1)][2]

    def error(self, message):
        return HclError(f"line {self.line()}: {message}")

    def take(self):
        tok = self.peek()
        self.at += 1
        return tok

    def body(self, end=None):
        values = {}
        while True:
            kind, tok = self.peek()
            if kind is None:
                if end:
                    raise self.error(f"missing {end!r}")
                return values
            if (kind, tok) == ("p", end):
                self.take()
                return values
            if (kind, tok) == ("p", ","):
                self.take()
                continue
            if kind not in ("word", "str"):
                raise self.error(f"a name expected, not {tok!r}")
            self.take()
            if self.peek() not in (("p", "="), ("p", ":")):
                raise self.error(f"'=' expected after {tok!r}")
            self.take()
            values[tok] = self.value()

    def value(self):
        """A value; one followed by an operator is an [`Expression`]."""
        first = self.at
        value = self.primary()
        while self.peek()[0] == "word" and self.peek()[1] in OPERATORS:
            _, op = self.take()
            self.primary()
            if op == "?":
                if self.take() != ("p", ":"):
                    raise self.error("':' expected in a conditional expression")
                self.primary()
            value = Expression(" ".join(str(t[1]) for t in self.toks[first:self.at]))
        return value

    def primary(self):
        kind, tok = self.take()
        if (kind, tok) == ("p", "{"):
            return self.body("}")
        if (kind, tok) == ("p", "["):
            items = []
            while self.peek() != ("p", "]"):
                if self.peek()[0] is None:
                    raise self.error("missing ']'")
                if self.peek() == ("p", ","):
                    self.take()
                    continue
                items.append(self.value())
            self.take()
            return items
        if (kind, tok) == ("p", "("):
            inner = self.value()
            if self.take() != ("p", ")"):
                raise self.error("missing ')'")
            return Expression(f"({inner})")
        if kind == "str":
            return tok
        if kind == "word":
            if self.peek() == ("p", "("):
                raise self.error(f"the expression {tok}(...) is not read here")
            return {"true": True, "false": False, "null": None}.get(tok, tok)
        raise self.error(f"a value expected, not {tok!r}")


def truthy(value):
    return value is True or (isinstance(value, str) and value.lower() == "true")


def terraform_settings(deploy_dir, environ):
    """The variables the deployment sets, each with where it came from."""
    settings = {}
    for name, raw in sorted(environ.items()):
        if name.startswith("TF_VAR_"):
            var = name[len("TF_VAR_"):]
            try:
                value = Parser(f"v = {raw}").body()["v"] if raw.strip()[:1] in "[{" else raw
            except HclError:
                value = raw
            settings[var] = (value, name)
    files = [os.path.join(deploy_dir, name) for name in ("terraform.tfvars", "terraform.tfvars.json")]
    files += sorted(
        glob.glob(os.path.join(deploy_dir, "*.auto.tfvars")) + glob.glob(os.path.join(deploy_dir, "*.auto.tfvars.json"))
    )
    for path in files:
        try:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        if path.endswith(".json"):
            try:
                values = json.loads(text)
            except ValueError as e:
                raise HclError(f"{os.path.basename(path)} is not JSON: {e}") from None
            if not isinstance(values, dict):
                raise HclError(f"{os.path.basename(path)} is not a JSON object")
        else:
            try:
                values = Parser(text).body()
            except HclError as e:
                raise HclError(f"{os.path.basename(path)}, {e}") from None
        for var, value in values.items():
            settings[var] = (value, os.path.basename(path))
    return settings


def mcp_servers_listed(config_path):
    """Whether config.yaml lists MCP servers (`mcp.servers`, block or flow style)."""
    try:
        with open(config_path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return False
    section, servers_at = None, None
    for raw in lines:
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if indent == 0:
            section, _, rest = text.partition(":")
            section, servers_at = section.strip().strip("\"'"), None
            if section == "mcp" and re.search(r"servers\s*:\s*\[\s*[^\]\s]", rest):
                return True
            continue
        if section != "mcp":
            continue
        listed = re.fullmatch(r"[\"']?servers[\"']?\s*:\s*(.*)", text)
        if listed:
            servers_at = indent
            if re.sub(r"\s", "", listed.group(1)) not in ("", "[]"):
                return True
        elif servers_at is not None and indent >= servers_at and (text == "-" or text.startswith("- ")):
            return True
    return False


def pick(config_path, deploy_dir, environ, forced=None):
    """(features per function, reasons, warnings)."""
    why, warnings = {}, []

    def need(feature, reason):
        why.setdefault(feature, [])
        if reason not in why[feature]:
            why[feature].append(reason)

    try:
        tf = terraform_settings(deploy_dir, environ)
    except HclError as e:
        warnings.append(f"cannot read the Terraform variables ({e}): building with every feature")
        tf = None
    if mcp_servers_listed(config_path):
        need("mcp", f"mcp.servers in {os.path.basename(config_path)}")
    if tf is None:
        for feature in ORDER:
            need(feature, "every feature (unreadable settings)")
        direct = True
    else:
        def setting(name, default):
            """The variable's value, and where it comes from in words."""
            if name in tf:
                return tf[name][0], f"{name} in {tf[name][1]}"
            return default, f"{name} (the module's default)"

        provider, source = setting("model_provider", "openai")
        if provider == "bedrock":
            need("bedrock", source)
        mode, _ = setting("execution_mode", "rest_sync")
        direct = mode == "direct"
        endpoint, source = setting("mcp_endpoint", False)
        if truthy(endpoint):
            need("mcp-endpoint", source)
        surfaces, source = setting("protocol_endpoints", [])
        for surface in surfaces if isinstance(surfaces, list) else []:
            if surface in SURFACES:
                need(surface, source)
        response, source = setting("response_store", {})
        response = response if isinstance(response, dict) else {}
        if not direct or truthy(response.get("in_direct_mode", True)):
            need(response.get("type", "dynamodb"), source)
        session, source = setting("session_store", {})
        session = session if isinstance(session, dict) else {}
        if session.get("type", "dynamodb") in STORES:
            need(session.get("type", "dynamodb"), source)
        functions, source = setting("functions", {})
        for function, options in (functions.items() if isinstance(functions, dict) else []):
            env = options.get("environment", {}) if isinstance(options, dict) else {}
            env = {str(k).upper(): v for k, v in env.items()} if isinstance(env, dict) else {}
            where = f"{source}: {function}.environment"
            if env.get("AK_MODEL__PROVIDER") == "bedrock":
                need("bedrock", where)
            for key in ("AK_EXECUTION__RESPONSE_STORE__TYPE", "AK_SESSION__TYPE"):
                if env.get(key) in STORES:
                    need(env[key], where)
    if forced is not None:
        chosen = [f for f in forced.split() if f]
        unknown = [f for f in chosen if f not in ORDER]
        if unknown:
            raise SystemExit(f"unknown feature {' '.join(unknown)} (known: {', '.join(ORDER)})")
        if not any(f in STORES for f in chosen):
            chosen += STORES
        for feature in ORDER:
            if feature in why and feature not in chosen:
                warnings.append(f"AK_FEATURES leaves out {feature}, which {'; '.join(why[feature])} needs")
        why = {f: ["AK_FEATURES"] for f in chosen}
        direct = True
    elif not any(f in why for f in STORES):
        for store in STORES:
            need(store, "no store is used: both built")
    handler = [f for f in ORDER if f in why and (direct or f not in ("bedrock", "mcp"))]
    runner = [f for f in ORDER if f in why and f in ("bedrock", "mcp") + STORES]
    responses = [f for f in ORDER if f in why and f in STORES]
    reasons = "; ".join(f"{f}: {', '.join(why[f])}" for f in ORDER if f in why)
    return {"request-handler": handler, "agent-runner": runner, "response-handler": responses}, reasons, warnings


def architecture(deploy_dir, environ):
    """The `architecture` variable of the deployment as Terraform would read it, and where it
    comes from: (value, source). Unset or null: the module's default, arm64."""
    value, source = terraform_settings(deploy_dir, environ).get("architecture", (None, None))
    if value is None:
        return "arm64", "the module's default"
    if not isinstance(value, str) or isinstance(value, Expression):
        return json.dumps(value) if not isinstance(value, str) else value, source
    return value, source


def main(argv):
    if len(argv) == 3 and argv[1] == "--architecture":
        try:
            print("\n".join(architecture(argv[2], os.environ)))
        except (OSError, UnicodeDecodeError, HclError) as e:
            print(f"cannot read the deployment's settings: {e}", file=sys.stderr)
            return 2
        return 0
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        functions, reasons, warnings = pick(argv[1], argv[2], os.environ, argv[3] if len(argv) == 4 else None)
    except (OSError, UnicodeDecodeError) as e:
        print(f"cannot read the deployment's settings: {e}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for function, features in functions.items():
        print(f"{function}: {' '.join(features)}")
    print(f"why: {reasons}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
