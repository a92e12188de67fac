//! Runs paused for a person's approval of tool calls, and their decisions.
//!
//! A run whose model calls a tool that needs approval stops before running anything of that
//! reply. Its state is written to the response store first — record `pause:<request id>:<n>`
//! (`n`: the request's n-th pause), with a pointer `paused:<request id>` → `n` — and only then
//! does the client get the pause: the answer `{"status": "PAUSED", "result" (a sentence naming
//! the waiting calls, for clients that only show `result`), "request_id",
//! "session_id", "agent", "approvals": [{"id", "agent", "tool", "arguments"}], "pause": n,
//! "expires_at", "usage"}` (200; a stream's last event is `approval_required` with it). Nothing
//! runs while it waits: the pause is data.
//!
//! A decision ([`decide`]) is taken once: its registration `decision:<request id>:<n>` is the
//! store's conditional write of the request registry, so of two different decisions racing for
//! one pause one wins and the other is a 409, and the same decision again is a repeat that gets
//! the request's answer. The winner forgets the paused answer (so the request can be claimed
//! again, by a later attempt) and the run resumes from the stored state: approved calls run,
//! rejected ones go back to the model as a tool result saying the user rejected them and why.
//! A redelivered resume message finds the request claimed or answered and runs nothing. A pause
//! past `expires_at` ends the request with [`EXPIRED`] (410), on the first decision or poll
//! after it.

use ak_core::answer::{AgentAnswer, Answer};
use ak_core::error::ApiError;
use ak_core::events::PAUSED;
use ak_core::ports::{Registration, ResponseRecord, ResponseStore, now_epoch_secs};
use ak_core::request::{Caller, RunRequest};
use serde_json::{Map, Value, json};

/// The status of the answer of a request whose pause expired undecided (HTTP `410 Gone`).
pub const EXPIRED: u16 = 410;

/// Longest reason a decision may give, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// The store record holding the state of the request's `n`-th pause.
pub fn pause_key(request_id: &str, n: u64) -> String {
    format!("pause:{request_id}:{n}")
}

fn pointer_key(request_id: &str) -> String {
    format!("paused:{request_id}")
}

fn decision_key(request_id: &str, n: u64) -> String {
    format!("decision:{request_id}:{n}")
}

/// Stores the state of `request`'s paused run (`answer.pause`) and returns what the client
/// gets. Without a store nothing could keep it: the request fails, saying so. A store that
/// does not answer fails it too (503: the client may send it again).
pub async fn pause(
    store: Option<&dyn ResponseStore>,
    request: &RunRequest,
    answer: &AgentAnswer,
) -> Result<Answer, ApiError> {
    let id = &request.request_id;
    let state = answer.pause.clone().unwrap_or(Value::Null);
    let Some(store) = store else {
        return Err(ApiError::internal(
            Some(id),
            "a tool call needs a person's approval, and approvals are kept in the response store: set execution.response_store.type",
        ));
    };
    // Numbered after the request's last pause, whichever run made it (a request sent again
    // after a failed resumed run pauses anew, not as its first pause again).
    let last = match store.pointer(&pointer_key(id)).await {
        Ok(pointer) => pointer.and_then(|p| p.target.parse::<u64>().ok()),
        Err(_) => None,
    };
    let n = last
        .or_else(|| request.resume.as_ref().and_then(|r| r["pause"].as_u64()))
        .unwrap_or(0)
        + 1;
    let now = now_epoch_secs();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // bounded by the config
    let expires_at = now + state["expires_in"].as_f64().unwrap_or(86_400.0).ceil() as u64;
    let mut original = request.clone();
    original.resume = None;
    let record = ResponseRecord {
        request_id: pause_key(id, n),
        session_id: request.session_id.clone(),
        user_id: request.user_id.clone(),
        status_code: 200,
        body: json!({
            "state": state,
            "request": original.queue_body(),
            "pause": n,
            "paused_at": now,
            "expires_at": expires_at,
        }),
        created_at: now,
        attempt: 0,
    };
    let unavailable = |e| ApiError::from(e).with_request_id(id);
    store.put(&record).await.map_err(unavailable)?;
    store
        .set_pointer(&pointer_key(id), &n.to_string(), request.user_id.as_deref())
        .await
        .map_err(unavailable)?;
    // What clients that only read `result` (the protocol surfaces' chat UIs) show.
    let waiting: Vec<String> = state["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} {}",
                a["tool"].as_str().unwrap_or_default(),
                a["arguments"]
            )
        })
        .collect();
    let result = format!(
        "Waiting for a person's approval: {}. Decide with POST .../chat/approvals (request_id {id}).",
        waiting.join("; ")
    );
    Ok(Answer::ok(json!({
        "status": PAUSED,
        "result": result,
        "request_id": id,
        "session_id": request.session_id,
        "agent": answer.agent,
        "approvals": state["approvals"],
        "pause": n,
        "expires_at": expires_at,
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.total_tokens,
        },
    })))
}

/// The answer of a request whose pause expired at `expires_at` undecided.
pub fn expired_answer(request_id: &str, expires_at: u64) -> Answer {
    Answer::new(
        EXPIRED,
        json!({
            "status": "EXPIRED",
            "error": format!("approval expired: no decision by {expires_at} (seconds since the epoch); the run ended without running the calls that waited"),
            "request_id": request_id,
        }),
    )
}

/// Whether `answer` is a pause that expired by now.
pub fn is_expired_pause(answer: &ResponseRecord) -> Option<u64> {
    let expires_at = answer.body["expires_at"].as_u64()?;
    (answer.body["status"] == PAUSED && now_epoch_secs() >= expires_at).then_some(expires_at)
}

/// Ends a request whose stored answer is an expired pause: the pause is forgotten and
/// [`expired_answer`] stored in its place (by a later attempt, so it stands). Returns it.
pub async fn expire(store: &dyn ResponseStore, paused: &ResponseRecord) -> Answer {
    let expires_at = paused.body["expires_at"].as_u64().unwrap_or_default();
    let answer = expired_answer(&paused.request_id, expires_at);
    let record = ResponseRecord {
        status_code: answer.status,
        body: answer.body.clone(),
        created_at: now_epoch_secs(),
        attempt: paused.attempt + 1,
        ..paused.clone()
    };
    if store.forget(paused).await.is_ok()
        && let Err(e) = store.put(&record).await
    {
        tracing::warn!(request_id = %paused.request_id, error = %e, "cannot store the expiry of a pause");
    }
    tracing::info!(request_id = %paused.request_id, "a pause expired undecided");
    answer
}

/// What [`decide`] found.
#[derive(Debug)]
pub enum Decided {
    /// The decision won: resume the run with this request (its `resume` set).
    Resume(Box<RunRequest>),
    /// The same decision was taken before: the request's answer is (or will be) the one to
    /// give.
    Repeat,
}

/// Takes `decisions` (`[{"id", "approve": bool, "reason"?}]`, one per waiting call) on the
/// pause of `request_id`, for `user`. Errors: 404 for a request that is not `user`'s (or
/// unknown), 409 when nothing waits (never paused, already answered, decided otherwise, or
/// expired — the request then ends as expired), 400 for decisions that do not match the
/// waiting calls, 503 when the store does not answer.
pub async fn decide(
    store: &dyn ResponseStore,
    request_id: &str,
    user: Option<&str>,
    decisions: &[Value],
) -> Result<Decided, ApiError> {
    let unavailable = |e| ApiError::from(e).with_request_id(request_id);
    let not_found = || ApiError::ResponseNotFound {
        request_id: request_id.to_owned(),
    };
    let pointer = store
        .pointer(&pointer_key(request_id))
        .await
        .map_err(unavailable)?;
    let Some(pointer) = pointer else {
        return match store.get(request_id).await.map_err(unavailable)? {
            Some(record) if !record.visible_to(user) => Err(not_found()),
            Some(_) => Err(ApiError::Conflict(format!(
                "request {request_id} is not waiting for an approval: it was never paused"
            ))),
            None => Err(not_found()),
        };
    };
    if !pointer.visible_to(user) {
        return Err(not_found());
    }
    let n: u64 = pointer.target.parse().unwrap_or_default();
    let Some(paused) = store
        .get(&pause_key(request_id, n))
        .await
        .map_err(unavailable)?
    else {
        return Err(ApiError::Conflict(format!(
            "the pause of request {request_id} no longer exists (kept as long as answers are)"
        )));
    };
    if !paused.visible_to(user) {
        return Err(not_found());
    }
    let waiting: Vec<&Value> = paused.body["state"]["approvals"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let decision = decision_key(request_id, n);
    let current = store.get(request_id).await.map_err(unavailable)?;
    let still_waiting = current
        .as_ref()
        .filter(|c| c.body["status"] == PAUSED && c.body["pause"] == n);
    let Some(current) = still_waiting.cloned() else {
        // Nothing waits: the decision taken, sent again, gets the request's answer; anything
        // else is a 409 saying why.
        let expired = current
            .as_ref()
            .is_some_and(|c| c.status_code == EXPIRED && c.body["status"] == "EXPIRED");
        let why = if expired {
            format!(
                "the approval of request {request_id} expired; the run ended without the calls that waited"
            )
        } else if current.is_some() {
            format!("request {request_id} is not waiting for an approval: it was answered")
        } else {
            format!(
                "request {request_id} is not waiting for an approval: it was decided and its run is under way (or failed: send the request again to run it anew)"
            )
        };
        let Ok(decided) = check(decisions, &waiting) else {
            return Err(ApiError::Conflict(why));
        };
        let fingerprint = Value::Array(decided).to_string();
        return match store
            .register(&decision, &fingerprint, user)
            .await
            .map_err(unavailable)?
        {
            Registration::Repeat(_) => Ok(Decided::Repeat),
            Registration::Mismatch if !expired => Err(ApiError::Conflict(format!(
                "the pause of request {request_id} was already decided, differently"
            ))),
            _ => Err(ApiError::Conflict(why)),
        };
    };
    let decided = check(decisions, &waiting)?;
    if let Some(expires_at) = is_expired_pause(&current) {
        expire(store, &current).await;
        return Err(ApiError::Conflict(format!(
            "the approval of request {request_id} expired at {expires_at} (seconds since the epoch); the run ended without the calls that waited"
        )));
    }
    let fingerprint = Value::Array(decided.clone()).to_string();
    match store
        .register(&decision, &fingerprint, user)
        .await
        .map_err(unavailable)?
    {
        Registration::New => {}
        Registration::Repeat(_) => return Ok(Decided::Repeat),
        Registration::Mismatch => {
            return Err(ApiError::Conflict(format!(
                "the pause of request {request_id} was already decided, differently"
            )));
        }
    }
    store.forget(&current).await.map_err(unavailable)?;
    let caller = Caller::from_principal(paused.user_id.as_deref());
    let mut request = RunRequest::from_queue_body(paused.body["request"].clone(), &caller)?;
    request.request_id = request_id.to_owned();
    request.session_id.clone_from(&paused.session_id);
    request.user_id.clone_from(&paused.user_id);
    let at = now_epoch_secs();
    let decisions: Vec<Value> = decided
        .into_iter()
        .map(|mut d| {
            d["by"] = json!(user);
            d["at"] = json!(at);
            d
        })
        .collect();
    request.resume = Some(json!({
        "state": paused.body["state"],
        "decisions": decisions,
        "pause": n,
    }));
    tracing::info!(request_id = %request_id, pause = n, "a pause was decided; the run resumes");
    Ok(Decided::Resume(Box::new(request)))
}

/// The decisions checked against the waiting calls, in their order:
/// `{"id", "tool", "approved", "reason"}` each.
fn check(decisions: &[Value], waiting: &[&Value]) -> Result<Vec<Value>, ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    let mut by_id: Map<String, Value> = Map::new();
    for (i, d) in decisions.iter().enumerate() {
        if !d.is_object() {
            return Err(bad(format!(
                "decisions[{i}] must be an object: {{\"id\": \"<call id>\", \"approve\": true | false, \"reason\": \"...\"}}"
            )));
        }
        let id = match &d["id"] {
            Value::String(id) => id.as_str(),
            Value::Null => {
                return Err(bad(format!(
                    "decisions[{i}].id is required (a waiting call's id)"
                )));
            }
            _ => return Err(bad(format!("decisions[{i}].id must be a string"))),
        };
        let approved = match &d["approve"] {
            Value::Bool(b) => *b,
            Value::Null => {
                return Err(bad(format!(
                    "decisions[{i}].approve is required: true to run the call, false to refuse it"
                )));
            }
            _ => return Err(bad(format!("decisions[{i}].approve must be true or false"))),
        };
        let reason = match &d["reason"] {
            Value::Null => None,
            Value::String(r) if r.trim().is_empty() => None,
            Value::String(r) if r.chars().count() <= MAX_REASON_CHARS => Some(r.trim().to_owned()),
            Value::String(_) => {
                return Err(bad(format!(
                    "decisions[{i}].reason is longer than {MAX_REASON_CHARS} characters"
                )));
            }
            _ => return Err(bad(format!("decisions[{i}].reason must be a string"))),
        };
        let Some(call) = waiting.iter().find(|w| w["id"] == id) else {
            let ids: Vec<&str> = waiting.iter().filter_map(|w| w["id"].as_str()).collect();
            let shown: String = id.chars().take(64).collect();
            return Err(bad(format!(
                "decisions[{i}].id {shown:?} is not a waiting call; waiting: {}",
                ids.join(", ")
            )));
        };
        if by_id.contains_key(id) {
            let shown: String = id.chars().take(64).collect();
            return Err(bad(format!("decisions[{i}].id {shown:?} is decided twice")));
        }
        by_id.insert(
            id.to_owned(),
            json!({"id": id, "tool": call["tool"], "approved": approved, "reason": reason}),
        );
    }
    let missing: Vec<&str> = waiting
        .iter()
        .filter_map(|w| w["id"].as_str())
        .filter(|id| !by_id.contains_key(*id))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "decide every waiting call; undecided: {}",
            missing.join(", ")
        )));
    }
    Ok(waiting
        .iter()
        .filter_map(|w| by_id.get(w["id"].as_str()?).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_must_name_each_waiting_call_once() {
        let a = json!({"id": "c1", "tool": "pay"});
        let b = json!({"id": "c2", "tool": "mail"});
        let waiting = [&a, &b];
        let ok = check(
            &[
                json!({"id": "c2", "approve": false, "reason": "no"}),
                json!({"id": "c1", "approve": true}),
            ],
            &waiting,
        )
        .unwrap_or_default();
        assert_eq!(
            ok,
            vec![
                json!({"id": "c1", "tool": "pay", "approved": true, "reason": null}),
                json!({"id": "c2", "tool": "mail", "approved": false, "reason": "no"}),
            ]
        );
        for (decisions, says) in [
            (vec![json!({"id": "c1", "approve": true})], "undecided: c2"),
            (
                vec![json!({"id": "c9", "approve": true})],
                "not a waiting call",
            ),
            (vec![json!({"id": "c1"})], "approve is required"),
            (
                vec![json!({"id": "c1", "approve": "yes"})],
                "must be true or false",
            ),
            (vec![json!("c1")], "must be an object"),
            (
                vec![
                    json!({"id": "c1", "approve": true}),
                    json!({"id": "c1", "approve": false}),
                ],
                "decided twice",
            ),
            (
                vec![json!({"id": "c1", "approve": true, "reason": 5})],
                "must be a string",
            ),
        ] {
            let error = check(&decisions, &waiting)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(says), "{error}");
        }
    }
}
