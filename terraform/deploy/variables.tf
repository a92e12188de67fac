variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "agent-kernel"
}

variable "execution_mode" {
  description = "direct, rest_sync or rest_async."
  type        = string
  default     = "rest_sync"
}

variable "stage_name" {
  description = "API Gateway stage."
  type        = string
  default     = "agents"
}

variable "architecture" {
  description = "arm64 or x86_64; deploy.sh builds the packages to match."
  type        = string
  default     = "arm64"
}

variable "functions" {
  description = "Per-function packages and sizes (see the module's variable)."
  type        = any
}

variable "authorizer" {
  description = "Optional authorizer object (see the module's variable)."
  type        = any
  default     = null
}

variable "queue" {
  description = "Queue settings (see the module's variable)."
  type        = any
  default     = {}
}

variable "response_store" {
  description = "Response store settings."
  type        = any
  default     = {}
}

variable "session_store" {
  description = "Session store settings."
  type        = any
  default     = {}
}

variable "keep_warm" {
  description = "Optional keep-warm schedule, e.g. rate(5 minutes)."
  type        = string
  default     = null
}

variable "gateway_endpoints" {
  description = "Custom routes: path => methods."
  type        = map(list(string))
  default     = { app = ["GET"], app_info = ["POST"] }
}

variable "openai_api_key" {
  description = "OPENAI_API_KEY for the functions that run agents; pass it as TF_VAR_openai_api_key, not in a file."
  type        = string
  default     = ""
  sensitive   = true
}

variable "openai_base_url" {
  description = "OPENAI_BASE_URL of another OpenAI-compatible server (empty: OpenAI)."
  type        = string
  default     = ""
}

variable "model_name" {
  description = "Model name (empty: config.yaml's); with model_provider = bedrock, a Bedrock model id, inference profile id or ARN."
  type        = string
  default     = ""
}

variable "model_provider" {
  description = "openai (an OpenAI-compatible server and its key) or bedrock (Amazon Bedrock's Converse API, authorised by the functions' IAM role)."
  type        = string
  default     = "openai"
}

variable "bedrock_models" {
  description = "More Bedrock model ids or ARNs the functions may invoke (agents' own model overrides)."
  type        = list(string)
  default     = []
}

variable "mcp_endpoint" {
  description = "Serve the agents as an MCP server at /api/v1/mcp."
  type        = bool
  default     = false
}

variable "protocol_endpoints" {
  description = "Protocol surfaces to serve: openai (/api/v1/openai/v1, for OpenAI clients, Open WebUI, LibreChat), agui (/api/v1/agui, for CopilotKit), ai-sdk (/api/v1/ai-sdk/chat, for useChat), a2a (/api/v1/a2a, A2A 1.0)."
  type        = set(string)
  default     = []
}

variable "tracing" {
  description = "Traces (see the module's variable): xray_active, collector_layer_arn (the ADOT collector layer for your region and architecture), otlp_endpoint, capture_content, environment (more OTEL_* variables)."
  type = object({
    xray_active         = optional(bool, true)
    collector_layer_arn = optional(string)
    otlp_endpoint       = optional(string)
    capture_content     = optional(bool, false)
    environment         = optional(map(string), {})
  })
  default = {}
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { project = "agent-kernel" }
}

variable "response_streaming" {
  description = "Stream answers through Lambda response streaming (see the module's variable)."
  type        = bool
  default     = true
}

variable "function_url" {
  description = "Optional function URL for the request handler (see the module's variable)."
  type        = any
  default     = {}
}
