//! The playground page of `ak-local serve`, in a real browser: headless Chromium driven through
//! chromedriver (Debian's `chromium` and `chromium-driver`, which `scripts/test.sh` installs).
//! A screenshot goes to `target/playground.png` for review.

use ak_tests::runtime_api::function_binary;
use fantoccini::{ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn until_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port}");
}

/// `ak-local serve` as `scripts/dev.sh` starts it (in-memory queues and store, the offline
/// model), in `mode`.
async fn ak_local(mode: &str) -> (Killed, String) {
    ak_local_with(&[("AK_EXECUTION__MODE", mode)]).await
}

/// `ak-local serve` with in-memory queues and store, and `env`.
async fn ak_local_with(env: &[(&str, &str)]) -> (Killed, String) {
    let port = free_port();
    let binary = function_binary("ak-local", "debug").unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(binary)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AK_EXECUTION__QUEUES__INPUT__URL", "memory://input")
        .env("AK_EXECUTION__QUEUES__OUTPUT__URL", "memory://output")
        .env("AK_EXECUTION__RESPONSE_STORE__TYPE", "memory")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    until_listening(port, "ak-local").await;
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

/// Headless Chromium through a chromedriver of its own.
async fn browser() -> (Killed, fantoccini::Client) {
    let port = free_port();
    let driver = chromedriver(port);
    until_listening(port, "chromedriver").await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1280,860"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("cannot start Chromium: {e}"));
    (driver, browser)
}

fn chromedriver(port: u16) -> Killed {
    let program = ["chromedriver", "/usr/bin/chromedriver"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .unwrap_or_else(|| {
            panic!("chromedriver is missing: scripts/test.sh installs it (apt-get install chromium chromium-driver)")
        });
    Killed(
        Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}")),
    )
}

/// Opens the playground in headless Chromium, asks "what is 12 * 7", and checks the page shows
/// the math agent's answer, the handoff and the tool call, and the request id.
async fn ask_twelve_times_seven(mode: &str, screenshot: Option<&str>) {
    let (_server, base) = ak_local(mode).await;
    let (_driver, browser) = browser().await;
    let result = async {
        browser.goto(&format!("{base}/")).await?;
        let prompt = browser.wait().for_element(Locator::Id("prompt")).await?;
        prompt.send_keys("what is 12 * 7").await?;
        browser.find(Locator::Id("send")).await?.click().await?;
        let done = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(".answer.done"))
            .await?;
        let answer = done.find(Locator::Css(".text")).await?.text().await?;
        let agent = done.find(Locator::Css(".agent")).await?.text().await?;
        let events = done.find(Locator::Css(".events")).await?.text().await?;
        let request = done.find(Locator::Css(".request-id")).await?.text().await?;
        let sessions = browser.find_all(Locator::Css("#sessions li")).await?.len();
        if let Some(path) = screenshot {
            let png = browser.screenshot().await?;
            let _ = std::fs::write(path, png);
        }
        // The conversation again after a reload, from the session list: the same turn.
        browser.refresh().await?;
        browser
            .wait()
            .for_element(Locator::Css("#sessions li"))
            .await?
            .click()
            .await?;
        let again = browser
            .wait()
            .for_element(Locator::Css(".answer.done"))
            .await?;
        let reopened = (
            again.find(Locator::Css(".text")).await?.text().await?,
            again.find(Locator::Css(".events")).await?.text().await?,
        );
        Ok::<_, fantoccini::error::CmdError>((answer, agent, events, request, sessions, reopened))
    }
    .await;
    let _ = browser.close().await;
    let (answer, agent, events, request, sessions, (text_again, events_again)) =
        result.unwrap_or_else(|e| panic!("{mode}: the page did not work: {e}"));
    assert_eq!(
        text_again, answer,
        "{mode}: the reopened turn shows the answer"
    );
    assert!(
        events_again.contains("handed off to math") && !events_again.contains("to triage"),
        "{mode}: the reopened turn shows the handoff as it happened: {events_again:?}"
    );
    assert!(answer.contains("12 * 7 = 84"), "{mode}: answer {answer:?}");
    assert_eq!(agent, "math", "{mode}");
    assert!(events.contains("handed off to math"), "{mode}: {events:?}");
    assert!(
        events.contains("multiply"),
        "{mode}: the tool call is shown: {events:?}"
    );
    assert!(
        request.starts_with("request ") && request.len() > 20,
        "{mode}: {request:?}"
    );
    assert_eq!(
        sessions, 1,
        "{mode}: the conversation is listed to continue"
    );
}

#[tokio::test]
async fn the_playground_shows_a_streamed_answer_with_its_handoff_in_direct_mode() {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&target);
    let shot = target.join("playground.png");
    ask_twelve_times_seven("direct", shot.to_str()).await;
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot at {}",
        shot.display()
    );
}

#[tokio::test]
async fn the_playground_works_through_the_queues_in_rest_async() {
    ask_twelve_times_seven("rest_async", None).await;
}

/// A refund above the example's threshold pauses the run; the page shows the waiting call with
/// Approve and Reject; Approve runs it and the answer follows on the page.
#[tokio::test]
async fn the_playground_approves_a_paused_tool_call_and_shows_the_answer() {
    use ak_tests::model_server::{Reply, ScriptedModel};
    let model = ScriptedModel::start(vec![
        Reply::ToolCall {
            name: "issue_refund".into(),
            arguments: serde_json::json!({"order_id": "o-17", "amount": 250}),
        },
        Reply::Text("Refunded 250 for order o-17.".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let config = std::env::temp_dir().join(ak_tests::unique_name("playground-approvals.yaml"));
    let _ = std::fs::write(
        &config,
        "agents:\n  definitions:\n    - name: billing\n      instructions: You handle refunds.\n      tools: [issue_refund]\n",
    );
    let config = config.display().to_string();
    let (_server, base) = ak_local_with(&[
        ("AK_EXECUTION__MODE", "direct"),
        ("AK_CONFIG_PATH_OVERRIDE", &config),
        ("AK_MODEL__PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-playground"),
        ("OPENAI_BASE_URL", &model.base_url),
    ])
    .await;
    let (_driver, browser) = browser().await;
    let result = async {
        browser.goto(&format!("{base}/")).await?;
        let prompt = browser.wait().for_element(Locator::Id("prompt")).await?;
        prompt.send_keys("refund 250 for order o-17").await?;
        browser.find(Locator::Id("send")).await?.click().await?;
        let approve = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(".approval .approve"))
            .await?;
        let waiting = browser
            .find(Locator::Css(".approval .what"))
            .await?
            .text()
            .await?;
        approve.click().await?;
        let mut text = String::new();
        for _ in 0..200 {
            if let Ok(done) = browser.find(Locator::Css(".answer.done .text")).await {
                text = done.text().await?;
                if !text.is_empty() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = browser
            .find(Locator::Css(".answer .events"))
            .await?
            .text()
            .await?;
        Ok::<_, fantoccini::error::CmdError>((waiting, text, events))
    }
    .await;
    let _ = browser.close().await;
    let (waiting, text, events) = result.unwrap_or_else(|e| panic!("the page did not work: {e}"));
    assert!(waiting.contains("issue_refund"), "{waiting:?}");
    assert_eq!(text, "Refunded 250 for order o-17.", "events: {events:?}");
    assert!(events.contains("approved issue_refund"), "{events:?}");
    assert!(
        events.contains("✓ issue_refund"),
        "the tool ran: {events:?}"
    );
}
