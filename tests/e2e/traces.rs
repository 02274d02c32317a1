//! Traces: one `GetToken` is one trace with spans from the broker and the registry, exported over
//! OTLP/gRPC to a collector on loopback, continuing the caller's `traceparent`; its log lines carry
//! the trace id; no span attribute holds a token or a secret.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use connect_dev::OtlpCollector;
use connect_proto::broker::v1 as bpb;
use connect_runtime::{LogFormat, telemetry};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::Request;

use crate::harness::{LogSink, Stack};

// One thread: every server of the stack runs on it, under the subscriber this test sets.
#[tokio::test(flavor = "current_thread")]
async fn one_get_token_is_one_trace_across_broker_and_registry_with_no_secret_in_any_span() {
    let collector = OtlpCollector::start().await.unwrap();
    let provider = telemetry::otlp_provider(&collector.endpoint(), "connect-e2e").unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let _traced = tracing::subscriber::set_default(telemetry::subscriber(
        LogFormat::Json,
        Some(&provider),
        move || LogSink(sink.clone()),
    ));
    let stack = Stack::start().await;

    // The caller's trace: the broker continues it.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let oidc_token = stack.acme.token("prj_web", "preview");
    let mut request = Request::new(bpb::GetTokenRequest {
        connector: "api-key/stripe".into(),
        ..Default::default()
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {oidc_token}").parse().unwrap(),
    );
    metadata.insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let answer = stack
        .broker()
        .get_token(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.token, "sk_acme_stripe");

    let trace = hex::decode(trace_id).unwrap();
    let name = |s: &Span| s.name.clone();
    let mut spans = Vec::new();
    for _ in 0..100 {
        let flushing = provider.clone();
        tokio::task::spawn_blocking(move || flushing.force_flush())
            .await
            .unwrap()
            .unwrap();
        spans = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        let names: Vec<String> = spans.iter().map(name).collect();
        if names.iter().any(|n| n.ends_with("TokenBroker/GetToken"))
            && names
                .iter()
                .any(|n| n.ends_with("RegistryRuntime/Authorize"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let find = |n: &str| {
        spans.iter().find(|s| s.name == n).unwrap_or_else(|| {
            panic!(
                "no {n} span in {:?}",
                spans.iter().map(name).collect::<Vec<_>>()
            )
        })
    };
    let get_token = find("/connect.broker.v1.TokenBroker/GetToken");
    let authorize = find("/connect.registry.v1.RegistryRuntime/Authorize");
    // The broker's span continues the caller's; the registry's continues the broker's, through
    // the `traceparent` the broker sent (the registry's span starts in another task).
    assert_eq!(hex::encode(&get_token.parent_span_id), caller_span);
    let broker_span_ids: Vec<&Vec<u8>> = spans
        .iter()
        .filter(|s| s.span_id != authorize.span_id)
        .map(|s| &s.span_id)
        .collect();
    assert!(
        broker_span_ids.contains(&&authorize.parent_span_id),
        "the registry's span is not a child of a broker span"
    );
    // The steps of the request path that wait on something are spans of the same trace: the
    // signature check (the token is new), the registry's answer and the ledger's record (both
    // caches are cold), and the registry's lookup.
    for step in [
        "verify_signature",
        "registry.authorize",
        "registry.record_issuance",
        "store.authorizing",
    ] {
        find(step);
    }
    // The registry's server span is the child of the broker's client span for that call.
    assert_eq!(
        authorize.parent_span_id,
        find("registry.authorize").span_id,
        "the registry's span continues the broker's call"
    );
    // A call answered from the broker's caches is one span, nothing else. (The change feed's
    // first resync may still empty the caches once after the first call: then the next call
    // fills them again.)
    let mut warm = Vec::new();
    for _ in 0..5 {
        let before = collector.count();
        let mut again = Request::new(bpb::GetTokenRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        });
        again.metadata_mut().insert(
            "authorization",
            format!("Bearer {oidc_token}").parse().unwrap(),
        );
        stack.broker().get_token(again).await.unwrap();
        let flushing = provider.clone();
        tokio::task::spawn_blocking(move || flushing.force_flush())
            .await
            .unwrap()
            .unwrap();
        warm = collector.spans()[before..].iter().map(name).collect();
        if warm.len() == 1 {
            break;
        }
    }
    assert_eq!(
        warm,
        ["/connect.broker.v1.TokenBroker/GetToken"],
        "{warm:?}"
    );
    // Span kinds: both RPC spans are server spans.
    assert_eq!(get_token.kind, 2);
    assert_eq!(authorize.kind, 2);

    // No attribute of any exported span holds a token or a secret.
    let every_span = format!("{:?}", collector.spans());
    for secret in [
        "sk_acme_stripe",
        oidc_token.as_str(),
        oidc_token.rsplit('.').next().unwrap(),
    ] {
        assert!(!every_span.contains(secret), "a secret reached a span");
    }

    // The decision's log line carries the trace id.
    let logs = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    let decision = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "connect::decision")
        .expect("the decision was logged");
    assert_eq!(decision["span"]["trace_id"], trace_id, "{decision}");
    assert!(!logs.contains("sk_acme_stripe"));
    stack.stop().await;
}
