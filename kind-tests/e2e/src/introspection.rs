//! An OAuth2 token-introspection endpoint (RFC 7662) for the control endpoints' `introspection`
//! mode, answering as Globus Auth does for SciStream 1.x's `s2uc login` tokens: a real HTTP
//! server on 127.0.0.1 (the facilities' operators run in this process), checking the
//! endpoint's client credentials (HTTP Basic) and answering each token it knows with its
//! claims, any other with `{"active": false}`.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Largest request read.
const MAX_REQUEST: usize = 64 * 1024;

/// The server; stops when dropped.
pub struct Introspection {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The claims Globus Auth returns for an access token of `username` with `scope`, issued to
/// the resource server `audience`.
pub fn globus_claims(username: &str, scope: &str, audience: &str) -> Value {
    json!({"active": true, "username": username, "sub": format!("sub-{username}"), "scope": scope,
        "aud": [audience], "client_id": "s2uc-native-app", "token_type": "Bearer",
        "iss": "https://auth.globus.org"})
}

impl Introspection {
    /// Serves `tokens` (token → claims) to the client `client_id`/`client_secret`.
    pub async fn start(client_id: &str, client_secret: &str, tokens: BTreeMap<String, Value>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the introspection server")?;
        let addr = listener.local_addr()?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}"));
        let expected = Arc::new(format!("Basic {basic}"));
        let tokens = Arc::new(tokens);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (expected, tokens) = (expected.clone(), tokens.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &expected, &tokens).await;
                });
            }
        });
        Ok(Introspection { addr, task })
    }

    /// The introspection URL.
    pub fn url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }
}

/// Answers one request (then closes the connection).
async fn serve(mut conn: TcpStream, expected: &str, tokens: &BTreeMap<String, Value>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let (head, body) = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        if buf.len() >= end + 4 + length {
            break (head, buf[end + 4..end + 4 + length].to_vec());
        }
    };
    let (status, answer) = if !head.starts_with("POST /introspect ") {
        ("404 Not Found", json!({"error": "not_found"}))
    } else if header(&head, "authorization").as_deref() != Some(expected) {
        ("401 Unauthorized", json!({"error": "invalid_client"}))
    } else {
        let form = String::from_utf8_lossy(&body).into_owned();
        let token = form.split('&').find_map(|pair| pair.strip_prefix("token=")).map(decode).unwrap_or_default();
        ("200 OK", tokens.get(&token).cloned().unwrap_or_else(|| json!({"active": false})))
    };
    let body = answer.to_string();
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes()).await?;
    conn.shutdown().await
}

/// The value of header `name` (case-insensitive) in an HTTP head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(decode("a+b%2Bc%2F%3D"), "a b+c/=");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = "POST /introspect HTTP/1.1\r\nAuthorization: Basic eA==\r\ncontent-length: 12";
        assert_eq!(header(head, "authorization").as_deref(), Some("Basic eA=="));
        assert_eq!(header(head, "Content-Length").as_deref(), Some("12"));
        assert_eq!(header(head, "accept"), None);
    }

    #[tokio::test]
    async fn answers_known_tokens_to_its_client_only() {
        let tokens = BTreeMap::from([("t1".to_owned(), globus_claims("alice@uni.edu", "s", "c"))]);
        let server = Introspection::start("c", "secret", tokens).await.unwrap();
        let ask = |auth: &str, body: &str| {
            let (addr, auth, body) = (server.addr, auth.to_owned(), body.to_owned());
            async move {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                let req = format!(
                    "POST /introspect HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(req.as_bytes()).await.unwrap();
                let mut reply = String::new();
                conn.read_to_string(&mut reply).await.unwrap();
                reply
            }
        };
        let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("c:secret"));
        let reply = ask(&good, "token=t1&token_type_hint=access_token").await;
        assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("alice@uni.edu"), "{reply}");
        assert!(ask(&good, "token=t2").await.contains(r#"{"active":false}"#));
        assert!(ask("Basic eA==", "token=t1").await.starts_with("HTTP/1.1 401"));
    }
}
