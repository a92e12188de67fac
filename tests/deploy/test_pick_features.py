"""What deploy.sh builds each function with (scripts/pick_features.py), for settings written the
ways Terraform accepts them: a function built without a feature its settings need fails at cold
start in AWS, so each case here is one a user can write. Run by scripts/test.sh:
    python3 tests/deploy/test_pick_features.py
"""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "pick_features.py")


def write_settings(d, tfvars, env, auto):
    """Writes terraform.tfvars and the *.auto.tfvars files into d; the environment to run with."""
    if tfvars is not None:
        with open(os.path.join(d, "terraform.tfvars"), "w") as f:
            f.write(textwrap.dedent(tfvars))
    for name, text in (auto or {}).items():
        with open(os.path.join(d, name), "w") as f:
            f.write(textwrap.dedent(text))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_")}
    environ.update(env or {})
    return environ


def pick(tfvars=None, config="", env=None, forced=None, auto=None):
    """(features per function, why, stderr) for these files and TF_VAR_* variables."""
    with tempfile.TemporaryDirectory() as d:
        environ = write_settings(d, tfvars, env, auto)
        config_path = os.path.join(d, "config.yaml")
        with open(config_path, "w") as f:
            f.write(textwrap.dedent(config))
        args = [sys.executable, SCRIPT, config_path, d] + ([forced] if forced is not None else [])
        done = subprocess.run(args, capture_output=True, text=True, env=environ, check=True)
    lines = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in done.stdout.splitlines())
    functions = {k: lines[k].split() for k in ("request-handler", "agent-runner", "response-handler")}
    return functions, lines["why"], done.stderr


def architecture(tfvars=None, env=None, auto=None):
    """What deploy.sh builds for, from these files and TF_VAR_* variables."""
    with tempfile.TemporaryDirectory() as d:
        environ = write_settings(d, tfvars, env, auto)
        args = [sys.executable, SCRIPT, "--architecture", d]
        done = subprocess.run(args, capture_output=True, text=True, env=environ)
    if done.returncode != 0:
        return None, done.stderr
    value, source = done.stdout.rstrip("\n").split("\n")
    return value, source


class PickFeatures(unittest.TestCase):
    def test_the_architecture_is_read_where_terraform_reads_it(self):
        self.assertEqual(architecture(None), ("arm64", "the module's default"))
        self.assertEqual(architecture('architecture = "x86_64" # Graviton later\n'), ("x86_64", "terraform.tfvars"))
        # terraform.tfvars outranks TF_VAR_, as in Terraform; the source says so.
        shipped = architecture('architecture = "arm64"\n', env={"TF_VAR_architecture": "x86_64"})
        self.assertEqual(shipped, ("arm64", "terraform.tfvars"))
        self.assertEqual(architecture(None, env={"TF_VAR_architecture": "x86_64"}), ("x86_64", "TF_VAR_architecture"))
        auto = {"arch.auto.tfvars.json": '{"architecture": "x86_64"}'}
        self.assertEqual(architecture('architecture = "arm64"\n', auto=auto), ("x86_64", "arch.auto.tfvars.json"))
        # null is the module's default, as in Terraform.
        self.assertEqual(architecture(None, auto={"a.auto.tfvars.json": '{"architecture": null}'})[0], "arm64")

    def test_expressions_elsewhere_do_not_stop_the_reading_and_errors_name_file_and_line(self):
        tfvars = """
        architecture = "x86_64"
        extra = { timeout = 60 * 5, memory = (128 + 128), mode = 1 > 0 ? "a" : "b" }
        model_provider = "bedrock"
        """
        self.assertEqual(architecture(tfvars), ("x86_64", "terraform.tfvars"))
        functions, _, warnings = pick(tfvars)
        self.assertEqual(functions["agent-runner"], ["bedrock", "dynamodb"])
        self.assertEqual(warnings, "")
        value, said = architecture(None, auto={"my.auto.tfvars": 'a = 1\nb = join(",", ["x"])\n'})
        self.assertIsNone(value)
        self.assertIn("my.auto.tfvars, line 2", said)

    def test_the_shipped_settings_build_dynamodb_only(self):
        with open(os.path.join(ROOT, "terraform", "deploy", "terraform.tfvars")) as f:
            functions, why, _ = pick(f.read())
        self.assertEqual(functions["request-handler"], ["dynamodb"])
        self.assertEqual(functions["agent-runner"], ["dynamodb"])
        self.assertEqual(functions["response-handler"], ["dynamodb"])
        self.assertIn("response_store in terraform.tfvars", why)

    def test_no_settings_take_the_modules_defaults(self):
        functions, why, _ = pick(None)
        self.assertEqual(functions["agent-runner"], ["dynamodb"])
        self.assertIn("(the module's default)", why)

    def test_agents_features_reach_the_request_handler_in_direct_mode_only(self):
        queue, _, _ = pick('model_provider = "bedrock"\n', "mcp:\n  servers:\n    - name: a\n      url: http://x\n")
        self.assertEqual(queue["request-handler"], ["dynamodb"])
        self.assertEqual(queue["agent-runner"], ["bedrock", "mcp", "dynamodb"])
        direct, _, _ = pick('execution_mode = "direct"\nmodel_provider = "bedrock"\n')
        self.assertEqual(direct["request-handler"], ["bedrock", "dynamodb"])

    def test_every_comment_form_is_ignored(self):
        functions, _, _ = pick('''
            /* execution_mode = "rest_sync"
               response_store = { type = "dynamodb" } */
            execution_mode = "direct" // agents in the request handler
            model_provider = "bedrock" # the role authorises it
            session_store = {
              // type = "dynamodb"
              type = "redis"
            }
            response_store = { type = "redis", redis_url = "rediss://cache#1:6379" }
        ''')
        self.assertEqual(functions["request-handler"], ["bedrock", "redis"])
        self.assertEqual(functions["response-handler"], ["redis"])

    def test_quoted_and_colon_keys_and_string_booleans(self):
        functions, _, _ = pick('''
            response_store = { "type" = "redis" }
            session_store = { type: "redis", ttl: 60 }
            mcp_endpoint = "true"
            protocol_endpoints = [
              "openai", // ] not the end
              "a2a",
            ]
        ''')
        self.assertEqual(functions["request-handler"], ["mcp-endpoint", "openai", "a2a", "redis"])

    def test_tf_var_environment_and_auto_tfvars_count_as_terraform_counts_them(self):
        functions, why, _ = pick(
            'session_store = { type = "dynamodb" }\n',
            env={"TF_VAR_model_provider": "bedrock", "TF_VAR_response_store": '{ type = "redis" }'},
            auto={"z.auto.tfvars": 'session_store = { type = "redis" }\n'},
        )
        self.assertEqual(functions["agent-runner"], ["bedrock", "redis"])
        self.assertIn("model_provider in TF_VAR_model_provider", why)
        self.assertIn("session_store in z.auto.tfvars", why)

    def test_a_functions_own_environment_counts(self):
        functions, _, _ = pick('''
            functions = {
              agent_runner = { package_path = "x.zip", environment = { ak_model__provider = "bedrock", AK_SESSION__TYPE = "redis" } }
            }
        ''')
        self.assertEqual(functions["agent-runner"], ["bedrock", "redis", "dynamodb"])

    def test_json_variable_files_count_as_terraform_counts_them(self):
        functions, why, _ = pick(
            'response_store = { type = "dynamodb" }\n',
            auto={
                "terraform.tfvars.json": '{"model_provider": "bedrock", "execution_mode": "direct", "protocol_endpoints": ["openai"]}',
                "b.auto.tfvars.json": '{"response_store": {"type": "redis"}}',
            },
        )
        self.assertEqual(functions["request-handler"], ["bedrock", "openai", "redis", "dynamodb"])
        self.assertIn("response_store in b.auto.tfvars.json", why)

    def test_mcp_servers_in_every_yaml_style(self):
        for config in (
            "mcp:\n  servers:\n    - name: a\n",
            "mcp: {servers: [{name: a, url: 'http://x'}]}\n",
            "\ufeffmcp:\n  servers:\n    -\n      name: a\n",
            "mcp:\n  servers: [{name: a}]\n",
        ):
            functions, _, _ = pick("", config)
            self.assertIn("mcp", functions["agent-runner"], config)
        for config in ("mcp:\n  servers: [ ]\n", "mcp:\n  # servers:\n  #   - name: a\n", ""):
            functions, _, _ = pick("", config)
            self.assertNotIn("mcp", functions["agent-runner"], config)

    def test_heredocs_are_skipped_and_what_cannot_be_read_builds_everything(self):
        functions, _, _ = pick('tags = {\n  note = <<-EOT\n    execution_mode = "direct"\n  EOT\n}\n')
        self.assertEqual(functions["request-handler"], ["dynamodb"])
        functions, _, stderr = pick('name = join("-", ["a", "b"])\n')
        self.assertIn("building with every feature", stderr)
        self.assertIn("bedrock", functions["agent-runner"])
        self.assertIn("a2a", functions["request-handler"])

    def test_ak_features_replaces_the_choice_and_warns_of_what_it_leaves_out(self):
        functions, why, stderr = pick('mcp_endpoint = true\nprotocol_endpoints = ["openai"]\n', forced="mcp")
        self.assertEqual(functions["request-handler"], ["mcp", "redis", "dynamodb"])
        self.assertEqual(why, "mcp: AK_FEATURES; redis: AK_FEATURES; dynamodb: AK_FEATURES")
        self.assertIn("leaves out mcp-endpoint", stderr)
        self.assertIn("leaves out openai", stderr)
        _, _, stderr = pick("", forced="bedrock redis")
        self.assertIn("leaves out dynamodb", stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
