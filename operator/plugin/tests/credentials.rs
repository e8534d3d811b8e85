//! Logging in as kubectl does, through the kubeconfig: an `exec` credential plugin (a script
//! printing an ExecCredential with a bearer token) and the `oidc` auth-provider's id-token,
//! against the embedded API server, which knows those tokens as users. A failing plugin, a
//! rejected token and an expired id-token each give a clear message and exit code 6.
//!
//! The embedded server maps bearer tokens to users (a static token table), so for OIDC it
//! checks that the plugin sends the configured id-token, not the JWT's signature, which a
//! real API server verifies against the issuer's keys. kube-rs refreshes an expired id-token
//! only from an HTTPS issuer trusted by the system roots, which this test cannot provide;
//! the expired case is therefore the "cannot refresh" error.

mod cli;

use std::{os::unix::fs::PermissionsExt, path::Path};

use base64::Engine;
use cli::{plugin, text};
use scistream_testkit::{Facility, GATEWAY_NS};
use serde_json::{Value, json};

const EXEC_TOKEN: &str = "exec-token-6d1f0b2a";

fn jwt(subject: &str, exp: i64) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT", "kid": "test"})),
        b64(json!({"iss": "https://login.facility.example", "sub": subject, "aud": "kubernetes", "exp": exp})),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"not-verified-by-the-test-cluster")
    )
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An executable script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn exec_user(command: &str) -> Value {
    json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": command,
                    "interactiveMode": "Never"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_oidc_credentials_log_in_and_failures_say_why() {
    let id_token = jwt("dana", now() + 3600);
    let expired = jwt("dana", now() - 3600);
    let f = Facility::builder("login")
        .user(EXEC_TOKEN, "carol", &["system:masters"])
        .user(&id_token, "oidc:dana", &["system:masters"])
        .start()
        .await;
    f.apply_gateway(json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "20Gbps",
        "podNamespace": GATEWAY_NS, "portRange": {"start": 5100, "end": 5119}}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("exec-ran");
    let credential = |token: &str| {
        format!(
            "echo \"$KUBERNETES_EXEC_INFO\" >> '{}'\n\
             echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\
             \"status\":{{\"token\":\"{token}\"}}}}'",
            ran.display()
        )
    };
    let good = script(dir.path(), "login-ok", &credential(EXEC_TOKEN));
    let wrong = script(dir.path(), "login-wrong", &credential("nobody-knows-this-token"));
    let failing =
        script(dir.path(), "login-fails", "echo 'facility-login: session expired, run facility-login' >&2\nexit 3");
    let admin_kc: Value = serde_yaml::from_str(&std::fs::read_to_string(f.cluster.kubeconfig_path()).unwrap()).unwrap();
    let cluster = admin_kc["clusters"][0]["cluster"].clone();
    let users = [
        ("exec-ok", exec_user(&good)),
        ("exec-wrong", exec_user(&wrong)),
        ("exec-fails", exec_user(&failing)),
        (
            "oidc-ok",
            json!({"auth-provider": {"name": "oidc", "config": {"client-id": "kubernetes", "id-token": id_token}}}),
        ),
        (
            "oidc-expired",
            json!({"auth-provider": {"name": "oidc", "config": {"client-id": "kubernetes", "id-token": expired}}}),
        ),
    ];
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec-ok",
        "clusters": [{"name": "login", "cluster": cluster}],
        "users": users.iter().map(|(n, u)| json!({"name": n, "user": u})).collect::<Vec<_>>(),
        "contexts": users.iter().map(|(n, _)| json!({"name": n, "context": {"cluster": "login", "user": n}})).collect::<Vec<_>>(),
    });
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();

    // The exec plugin's token logs in (the kubeconfig holds no other credential).
    let out = plugin(&kc, &["gateways", "--context", "exec-ok"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim_start().starts_with("dtn ")), "{}", text(&out));
    let info = std::fs::read_to_string(&ran).unwrap();
    assert!(info.contains("\"kind\":\"ExecCredential\"") && info.contains("\"interactive\":false"), "{info}");

    // A token the cluster does not know: 401, said as such.
    let out = plugin(&kc, &["gateways", "--context", "exec-wrong"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("rejected the credentials (401 Unauthorized)"), "{}", text(&out));

    // The plugin itself fails: its message and exit status, not a byte dump.
    let out = plugin(&kc, &["gateways", "--context", "exec-fails"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("exec credential plugin") && said.contains("login-fails"), "{said}");
    assert!(said.contains("session expired, run facility-login") && said.contains("exit status: 3"), "{said}");
    assert!(!said.contains("stderr: ["), "no raw bytes: {said}");

    // OIDC: the id-token is sent as the bearer token.
    let out = plugin(&kc, &["gateways", "--context", "oidc-ok", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let gateways: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gateways[0]["metadata"]["name"], "dtn");
    // An expired id-token without refresh settings: a clear login error, nothing sent.
    let out = plugin(&kc, &["gateways", "--context", "oidc-expired"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("OIDC") && text(&out).contains("expired"), "{}", text(&out));
    f.shutdown().await;
}
