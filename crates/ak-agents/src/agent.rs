//! Agents and the set of agents a deployment serves.

use crate::tool::{Tool, ToolRegistry};
use ak_core::config::AgentsSettings;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Instructions of the agent served when the configuration defines none.
const DEFAULT_INSTRUCTIONS: &str = "You are a helpful assistant. Answer clearly and concisely.";

/// One agent: who it is, what it may call, and whom it may hand off to.
#[derive(Clone)]
pub struct Agent {
    /// Unique name (what requests put in `agent`).
    pub name: String,
    /// System instructions.
    pub instructions: String,
    /// What agents handing off to this one are told about it.
    pub handoff_description: Option<String>,
    /// Names of the agents this one may hand off to.
    pub handoffs: Vec<String>,
    /// Tools this agent may call.
    pub tools: Vec<Arc<dyn Tool>>,
    /// Model name overriding the deployment's.
    pub model: Option<String>,
    /// MCP servers (by `mcp.servers[].name`) whose tools this agent may call.
    pub mcp_servers: Vec<String>,
    /// Tools whose every call waits for a person's approval (`approval` in `config.yaml`).
    pub approval: Vec<String>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("handoffs", &self.handoffs)
            .field(
                "tools",
                &self.tools.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent with no instructions, handoffs or tools yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            instructions: String::new(),
            handoff_description: None,
            handoffs: Vec::new(),
            tools: Vec::new(),
            model: None,
            mcp_servers: Vec::new(),
            approval: Vec::new(),
        }
    }

    /// Sets the system instructions.
    pub fn instructions(mut self, text: &str) -> Self {
        self.instructions = text.to_owned();
        self
    }

    /// Sets what handing-off agents are told about this one.
    pub fn handoff_description(mut self, text: &str) -> Self {
        self.handoff_description = Some(text.to_owned());
        self
    }

    /// Allows handing off to `agent`.
    pub fn handoff(mut self, agent: &str) -> Self {
        self.handoffs.push(agent.to_owned());
        self
    }

    /// Gives this agent a tool.
    pub fn tool(mut self, tool: impl Tool + 'static) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }

    /// Uses this model name for this agent.
    pub fn model(mut self, name: &str) -> Self {
        self.model = Some(name.to_owned());
        self
    }
}

/// The function tool name for a handoff: `transfer_to_<name>`, lower-cased, anything but
/// letters and digits replaced by `_` (the OpenAI Agents SDK convention).
pub fn handoff_tool_name(agent: &str) -> String {
    let name: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("transfer_to_{name}")
}

/// An agent set that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentError {
    /// Two agents share a name.
    #[error("agent {0:?} is defined twice; names must be unique")]
    Duplicate(String),
    /// A handoff names an agent that does not exist.
    #[error("agent {agent:?} hands off to {target:?}, which is not defined")]
    UnknownHandoff {
        /// The agent.
        agent: String,
        /// The missing target.
        target: String,
    },
    /// An agent hands off to itself: a loop that never makes progress.
    #[error("agent {0:?} hands off to itself, a loop that can never finish")]
    SelfHandoff(String),
    /// Two handoff targets of one agent map to the same tool name.
    #[error("agent {agent:?}: handoffs to {first:?} and {second:?} both become the tool {tool}")]
    AmbiguousHandoff {
        /// The agent.
        agent: String,
        /// One target.
        first: String,
        /// The other.
        second: String,
        /// The shared tool name.
        tool: String,
    },
    /// A tool name in the configuration is not registered in Rust.
    #[error("agent {agent:?} uses tool {tool:?}, which is not registered; registered: {known}")]
    UnknownTool {
        /// The agent.
        agent: String,
        /// The tool.
        tool: String,
        /// Registered tool names.
        known: String,
    },
    /// The default agent does not exist.
    #[error("the default agent {0:?} is not defined")]
    UnknownDefault(String),
    /// No agent at all.
    #[error("no agent is defined")]
    Empty,
    /// An MCP server cannot be used as configured (a header's source is missing).
    #[error(transparent)]
    Mcp(#[from] crate::mcp::McpConfigError),
}

/// The agents a deployment serves, validated.
#[derive(Debug, Clone)]
pub struct AgentSet {
    agents: BTreeMap<String, Agent>,
    default: String,
}

impl AgentSet {
    /// Validates `agents` (handoff targets exist, names unique, no self-handoff) with
    /// `default` as the agent for requests that name none.
    ///
    /// Cycles through several agents (triage → math → triage) are allowed: every agent can
    /// answer in text, and `max_turns` bounds a run.
    pub fn new(agents: Vec<Agent>, default: &str) -> Result<Self, AgentError> {
        if agents.is_empty() {
            return Err(AgentError::Empty);
        }
        let mut map = BTreeMap::new();
        for agent in agents {
            if map.contains_key(&agent.name) {
                return Err(AgentError::Duplicate(agent.name));
            }
            map.insert(agent.name.clone(), agent);
        }
        for agent in map.values() {
            let mut tools: BTreeMap<String, &str> = BTreeMap::new();
            for target in &agent.handoffs {
                if target == &agent.name {
                    return Err(AgentError::SelfHandoff(agent.name.clone()));
                }
                if !map.contains_key(target) {
                    return Err(AgentError::UnknownHandoff {
                        agent: agent.name.clone(),
                        target: target.clone(),
                    });
                }
                let tool = handoff_tool_name(target);
                if let Some(first) = tools.insert(tool.clone(), target) {
                    return Err(AgentError::AmbiguousHandoff {
                        agent: agent.name.clone(),
                        first: first.to_owned(),
                        second: target.clone(),
                        tool,
                    });
                }
            }
        }
        if !map.contains_key(default) {
            return Err(AgentError::UnknownDefault(default.to_owned()));
        }
        Ok(Self {
            agents: map,
            default: default.to_owned(),
        })
    }

    /// The agents of `agents` in the configuration, with tools looked up in `tools`. With no
    /// definitions, one general `assistant` agent.
    pub fn from_settings(
        settings: &AgentsSettings,
        tools: &ToolRegistry,
    ) -> Result<Self, AgentError> {
        if settings.definitions.is_empty() {
            let default = settings.default.as_deref().unwrap_or("assistant");
            return Self::new(
                vec![Agent::new(default).instructions(DEFAULT_INSTRUCTIONS)],
                default,
            );
        }
        let mut agents = Vec::new();
        for def in &settings.definitions {
            let mut agent = Agent::new(&def.name).instructions(&def.instructions);
            agent.handoff_description = def.handoff_description.clone();
            agent.handoffs = def.handoffs.clone();
            agent.model = def.model.clone();
            agent.mcp_servers = def.mcp_servers.clone();
            agent.approval = def.approval.clone();
            for name in &def.tools {
                let tool = tools.get(name).ok_or_else(|| AgentError::UnknownTool {
                    agent: def.name.clone(),
                    tool: name.clone(),
                    known: if tools.names().is_empty() {
                        "none".to_owned()
                    } else {
                        tools.names().join(", ")
                    },
                })?;
                agent.tools.push(tool);
            }
            agents.push(agent);
        }
        let default = settings.default_agent().unwrap_or("assistant").to_owned();
        Self::new(agents, &default)
    }

    /// The agent of this name.
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// The agent for requests that name none.
    pub fn default_agent(&self) -> &Agent {
        // `new` checked that the default exists.
        self.agents
            .get(&self.default)
            .unwrap_or_else(|| unreachable!("default agent checked at construction"))
    }

    /// Whether `tool` is the handoff tool of some agent's handoff (`transfer_to_<name>`).
    pub fn is_handoff_tool(&self, tool: &str) -> bool {
        self.agents
            .values()
            .flat_map(|a| &a.handoffs)
            .any(|target| handoff_tool_name(target) == tool)
    }

    /// Every agent name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ak_core::config::AgentDefinition;

    fn def(name: &str, handoffs: &[&str], tools: &[&str]) -> AgentDefinition {
        AgentDefinition {
            name: name.into(),
            instructions: format!("be {name}"),
            handoff_description: Some(format!("Specialist agent for {name} questions")),
            handoffs: handoffs.iter().map(|s| (*s).to_owned()).collect(),
            tools: tools.iter().map(|s| (*s).to_owned()).collect(),
            model: None,
            mcp_servers: Vec::new(),
            approval: Vec::new(),
        }
    }

    fn settings(defs: Vec<AgentDefinition>, default: Option<&str>) -> AgentsSettings {
        AgentsSettings {
            default: default.map(str::to_owned),
            definitions: defs,
            ..AgentsSettings::default()
        }
    }

    #[test]
    fn handoff_tool_names_follow_the_sdk_convention() {
        assert_eq!(handoff_tool_name("math"), "transfer_to_math");
        assert_eq!(
            handoff_tool_name("Billing-Agent 2"),
            "transfer_to_billing_agent_2"
        );
    }

    #[test]
    fn the_reference_triage_set_is_valid() {
        let set = AgentSet::from_settings(
            &settings(
                vec![
                    def("triage", &["history", "math"], &[]),
                    def("math", &[], &[]),
                    def("history", &[], &[]),
                ],
                Some("triage"),
            ),
            &ToolRegistry::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.default_agent().name, "triage");
        assert_eq!(set.names(), vec!["history", "math", "triage"]);
    }

    #[test]
    fn invalid_sets_name_the_agent() {
        let tools = ToolRegistry::new();
        let err = |defs, default| AgentSet::from_settings(&settings(defs, default), &tools).err();
        assert_eq!(
            err(vec![def("triage", &["poetry"], &[])], None),
            Some(AgentError::UnknownHandoff {
                agent: "triage".into(),
                target: "poetry".into()
            })
        );
        assert_eq!(
            err(vec![def("a", &[], &[]), def("a", &[], &[])], None),
            Some(AgentError::Duplicate("a".into()))
        );
        assert_eq!(
            err(vec![def("loop", &["loop"], &[])], None),
            Some(AgentError::SelfHandoff("loop".into()))
        );
        assert_eq!(
            err(vec![def("a", &[], &[])], Some("zed")),
            Some(AgentError::UnknownDefault("zed".into()))
        );
        assert!(matches!(
            err(vec![def("a", &[], &["clock"])], None),
            Some(AgentError::UnknownTool { ref agent, ref tool, .. }) if agent == "a" && tool == "clock"
        ));
        assert!(matches!(
            err(
                vec![
                    def("a", &["b-c", "b_c"], &[]),
                    def("b-c", &[], &[]),
                    def("b_c", &[], &[])
                ],
                None
            ),
            Some(AgentError::AmbiguousHandoff { .. })
        ));
        let cycle = AgentSet::from_settings(
            &settings(vec![def("a", &["b"], &[]), def("b", &["a"], &[])], None),
            &tools,
        );
        assert!(
            cycle.is_ok(),
            "a cycle through two agents can end: either may answer"
        );
    }

    #[test]
    fn no_definitions_means_one_assistant() {
        let set = AgentSet::from_settings(&AgentsSettings::default(), &ToolRegistry::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.default_agent().name, "assistant");
    }
}
