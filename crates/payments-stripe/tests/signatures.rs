//! Every case of the shared signature vectors, decided by Stripe's own Python library, gets
//! the same verdict here (`tests/vectors/stripe-webhook-signatures.json`, copied from the
//! project's shared test vectors).

use payments_stripe::WebhookVerifier;
use serde_json::Value;
use time::OffsetDateTime;

fn cases() -> Vec<Value> {
    let text = include_str!("vectors/stripe-webhook-signatures.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

#[test]
fn every_vector_gets_stripes_verdict() {
    let cases = cases();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let verifier = WebhookVerifier::new([case["secret"].as_str().unwrap().to_owned()])
            .with_tolerance(case["tolerance_s"].as_i64().unwrap());
        let now = OffsetDateTime::from_unix_timestamp(case["now"].as_i64().unwrap()).unwrap();
        let verdict = verifier.verify(
            case["payload"].as_str().unwrap().as_bytes(),
            case["header"].as_str().unwrap(),
            now,
        );
        assert_eq!(
            verdict.is_ok(),
            case["valid"].as_bool().unwrap(),
            "{name}: {verdict:?}"
        );
    }
}

#[test]
fn a_rolled_secret_and_a_new_one_both_verify() {
    let now = OffsetDateTime::from_unix_timestamp(1_764_375_457).unwrap();
    let payload = br#"{"id":"evt_1"}"#;
    let header = |secret: &str| {
        format!(
            "t={},v1={}",
            now.unix_timestamp(),
            payments_stripe::sign(secret, now.unix_timestamp(), payload)
        )
    };
    let both = WebhookVerifier::new(["whsec_old".to_owned(), "whsec_new".to_owned()]);
    assert!(both.verify(payload, &header("whsec_old"), now).is_ok());
    assert!(both.verify(payload, &header("whsec_new"), now).is_ok());
    assert!(both.verify(payload, &header("whsec_other"), now).is_err());
    assert!(!WebhookVerifier::new([String::from("  ")]).is_configured());
}
