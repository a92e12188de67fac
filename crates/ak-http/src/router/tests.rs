use super::*;
use lambda_http::Body;
use serde_json::{Value, json};

macro_rules! fixture {
    ($name:literal) => {{
        let event: Value =
            serde_json::from_str(include_str!(concat!("../../../../tests/fixtures/", $name)))
                .unwrap_or_else(|e| panic!("fixture {}: {e}", $name));
        match crate::event::decode(&event, &crate::event::DecodeOptions::default()) {
            crate::event::Incoming::Request { request, .. } => *request,
            other => panic!("fixture {}: {other:?}", $name),
        }
    }};
}

fn reference_router(paths: RoutePaths) -> Router {
    Router::builder(paths)
        .get("/app", |_req: Request| async {
            Ok::<_, ApiError>(json!({"response": "app"}))
        })
        .post("/app_info", |req: Request| async move {
            let body: Value = serde_json::from_slice(req.body().as_ref()).unwrap_or(Value::Null);
            Ok::<_, ApiError>(json!({"response": "app_info", "request": body}))
        })
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn request(method: Method, path: &str) -> Request {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(Body::Empty)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn status_of(result: Result<Route, ApiError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => e.status_code(),
    }
}

#[test]
fn rest_v1_events_route_without_their_stage() {
    let router = reference_router(RoutePaths::default());
    let post: Request = fixture!("apigw_v1_post_chat.json");
    assert!(matches!(router.resolve(&post), Ok(Route::Chat)));
    let poll: Request = fixture!("apigw_v1_get_chat_poll.json");
    assert_eq!(poll.method(), Method::GET);
    assert!(matches!(router.resolve(&poll), Ok(Route::Chat)));
    let app: Request = fixture!("apigw_v1_get_app.json");
    assert!(matches!(router.resolve(&app), Ok(Route::Custom(_))));
}

#[test]
fn http_v2_events_strip_a_named_stage() {
    let router = reference_router(RoutePaths::default());
    let post: Request = fixture!("apigw_v2_post_chat.json");
    assert!(matches!(router.resolve(&post), Ok(Route::Chat)));
    let info: Request = fixture!("apigw_v2_post_app_info.json");
    assert!(matches!(router.resolve(&info), Ok(Route::Custom(_))));
}

#[test]
fn function_url_events_route_with_a_trailing_slash() {
    let router = reference_router(RoutePaths::default());
    let post: Request = fixture!("function_url_post_chat.json");
    assert!(matches!(router.resolve(&post), Ok(Route::Chat)));
    assert_eq!(
        post.body().as_ref(),
        br#"{"prompt": "hello from a function URL"}"#
    );
}

#[test]
fn direct_invokes_are_chat_requests() {
    let router = reference_router(RoutePaths::default());
    let simple: Request = fixture!("direct_invoke_simple.json");
    assert!(matches!(router.resolve(&simple), Ok(Route::Chat)));
    let envelope: Request = fixture!("direct_invoke_envelope.json");
    assert!(matches!(router.resolve(&envelope), Ok(Route::Chat)));
    let parsed = ak_core::request::RunRequest::from_json(
        envelope.body().as_ref(),
        &ak_core::request::Caller::Anonymous,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.request_id, "req-123");
}

#[tokio::test]
async fn custom_routes_answer_with_their_handler() {
    let router = reference_router(RoutePaths::default());
    let info: Request = fixture!("apigw_v2_post_app_info.json");
    let Ok(Route::Custom(handler)) = router.resolve(&info) else {
        panic!("app_info should resolve to its handler");
    };
    let response = handler.call(info).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.body["request"], json!({"hello": "world"}));
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let router = reference_router(RoutePaths::default());
    assert_eq!(
        status_of(router.resolve(&request(Method::GET, "/api/v1/nope"))),
        404
    );
    assert_eq!(status_of(router.resolve(&request(Method::GET, "/"))), 404);
    assert_eq!(
        status_of(router.resolve(&request(Method::GET, "/api/v2/chat"))),
        404
    );
    assert_eq!(
        status_of(router.resolve(&request(Method::GET, "/app"))),
        404
    );

    match router.resolve(&request(Method::POST, "/api/v1/app")) {
        Err(ApiError::MethodNotAllowed { allowed, .. }) => assert_eq!(allowed, vec!["GET"]),
        other => panic!("expected 405, got {other:?}"),
    }
    match router.resolve(&request(Method::DELETE, "/api/v1/chat/")) {
        Err(ApiError::MethodNotAllowed { allowed, .. }) => {
            assert_eq!(allowed, vec!["GET", "POST"])
        }
        other => panic!("expected 405, got {other:?}"),
    }
}

#[test]
fn trailing_slashes_are_tolerated() {
    let router = reference_router(RoutePaths::default());
    assert!(matches!(
        router.resolve(&request(Method::POST, "/api/v1/chat/")),
        Ok(Route::Chat)
    ));
    assert!(matches!(
        router.resolve(&request(Method::GET, "/api/v1/app/")),
        Ok(Route::Custom(_))
    ));
}

#[test]
fn paths_come_from_the_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let paths = RoutePaths::from_lookup(env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((paths.base(), paths.chat()), ("/api/v1", "/api/v1/chat"));

    let paths = RoutePaths::from_lookup(env(&[
        ("API_BASE_PATH", "/prod/"),
        ("API_VERSION", "v2"),
        ("AGENT_ENDPOINT", "ask"),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((paths.base(), paths.chat()), ("/prod/v2", "/prod/v2/ask"));
    let router = reference_router(paths);
    assert!(matches!(
        router.resolve(&request(Method::POST, "/prod/v2/ask")),
        Ok(Route::Chat)
    ));
    assert!(matches!(
        router.resolve(&request(Method::GET, "/prod/v2/app")),
        Ok(Route::Custom(_))
    ));
    assert_eq!(
        status_of(router.resolve(&request(Method::POST, "/api/v1/chat"))),
        404
    );

    let empty =
        RoutePaths::from_lookup(env(&[("API_VERSION", "")])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty.chat(), "/api/v1/chat");
    let bad = RoutePaths::from_lookup(env(&[("AGENT_ENDPOINT", "a b")]));
    assert!(matches!(
        bad,
        Err(RouterError::BadSetting {
            var: "AGENT_ENDPOINT",
            ..
        })
    ));
}

#[test]
fn stages_and_custom_domain_mappings_in_front_of_the_base_do_not_count() {
    let router = reference_router(RoutePaths::default());
    for path in [
        "/assistant/api/v1/chat",
        "/team/assistant/api/v1/chat/",
        "/prod/api/v1/chat",
        "//api//v1/chat",
        "/api/v1/api/v1/chat",
        "/team/api/v1/api/v1/chat",
    ] {
        assert!(
            matches!(
                router.resolve(&request(Method::POST, path)),
                Ok(Route::Chat)
            ),
            "{path}"
        );
    }
    assert!(matches!(
        router.resolve(&request(Method::GET, "/assistant/api/v1/app")),
        Ok(Route::Custom(_))
    ));
    match router.resolve(&request(Method::GET, "/assistant/api/v2/chat")) {
        Err(ApiError::RouteNotFound { path }) => assert_eq!(path, "/assistant/api/v2/chat"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_base_path_named_like_the_stage_still_routes() {
    let paths = RoutePaths::new("prod", "v1", "chat").unwrap_or_else(|e| panic!("{e}"));
    let router = reference_router(paths);
    let mut v2: Request = fixture!("apigw_v2_post_chat.json");
    // The v2 fixture's stage is `prod`; its rawPath is /prod/api/v1/chat.
    assert_eq!(status_of(router.resolve(&v2)), 404);
    *v2.extensions_mut() =
        std::mem::take(v2.extensions_mut()).with_raw_http_path("/prod/prod/v1/chat");
    assert!(matches!(router.resolve(&v2), Ok(Route::Chat)));
    let plain = request(Method::POST, "/prod/v1/chat");
    assert!(matches!(router.resolve(&plain), Ok(Route::Chat)));
}

#[test]
fn the_chat_path_cannot_be_taken_by_a_custom_route() {
    let ok = |_req: Request| async { Ok::<_, ApiError>(json!({})) };
    let err = Router::builder(RoutePaths::default())
        .post("/chat", ok)
        .build()
        .err();
    assert!(matches!(err, Some(RouterError::BadRoute { .. })), "{err:?}");
    assert!(
        err.map(|e| e.to_string())
            .unwrap_or_default()
            .contains("built-in endpoint")
    );
    for taken in ["/chat/stream", "/mcp"] {
        let err = Router::builder(RoutePaths::default())
            .get(taken, ok)
            .build()
            .err();
        assert!(
            matches!(err, Some(RouterError::BadRoute { .. })),
            "{taken}: {err:?}"
        );
    }

    let err = Router::builder(RoutePaths::default())
        .get("/chat/", ok)
        .build()
        .err();
    assert!(
        err.is_some(),
        "a trailing slash does not sneak past the check"
    );

    let dup = Router::builder(RoutePaths::default())
        .get("/app", ok)
        .get("/app", ok)
        .build()
        .err();
    assert!(matches!(dup, Some(RouterError::BadRoute { .. })));

    for bad in ["app", "/a//b", "/a?x=1", ""] {
        let err = Router::builder(RoutePaths::default())
            .get(bad, ok)
            .build()
            .err();
        assert!(err.is_some(), "{bad:?} should be rejected");
    }
    let methods = Router::builder(RoutePaths::default())
        .get("/item", ok)
        .put("/item", ok)
        .delete("/item", ok)
        .patch("/item", ok)
        .post("/item", ok)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for m in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::POST,
    ] {
        assert!(matches!(
            methods.resolve(&request(m, "/api/v1/item")),
            Ok(Route::Custom(_))
        ));
    }
}
