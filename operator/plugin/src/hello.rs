//! `kubectl scistream hello`: an application controller's Hello over the SciStream gRPC
//! interface (TLS, the Hello key as `authorization` metadata), so the whole protocol can be
//! driven from the command line.

use scistream_api::endpoint::parse_list;
use scistream_control_proto::{Hello, control_client::ControlClient};
use serde_json::json;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig},
};

use crate::{
    cli::{Cli, HelloArgs},
    error::{Error, Result},
};

/// Maps a gRPC status to the plugin's errors (and so its exit codes).
pub fn classify(status: &tonic::Status) -> Error {
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::NotFound => Error::NotFound(text),
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument | Code::FailedPrecondition => {
            Error::Refused(text)
        }
        _ => Error::Failed(text),
    }
}

/// Runs `hello`.
pub async fn run(cli: &Cli, args: &HelloArgs) -> Result<()> {
    parse_list(&args.listeners).map_err(|(i, e)| Error::Usage(format!("--listeners[{i}]: {e}")))?;
    if args.role == scistream_api::control::ROLE_CONS && !args.listeners.is_empty() {
        return Err(Error::Usage("--listeners is for the producer's Hello (--role PROD)".to_owned()));
    }
    let inputs = crate::control::hello_inputs(cli, args).await?;
    let control = &inputs.control;
    let (host, _) =
        control.rsplit_once(':').ok_or_else(|| Error::Usage(format!("--control {control:?} is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let trusted = &inputs.trusted;
    let tls = ClientTlsConfig::new().domain_name(host).ca_certificate(Certificate::from_pem(&trusted.pem));
    let endpoint = Channel::from_shared(format!("https://{control}"))
        .map_err(|e| Error::Usage(format!("--control: {e}")))?
        .tls_config(tls)
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?
        .connect_timeout(args.connect_timeout);
    let channel = match tokio::time::timeout(args.connect_timeout * 2, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        // Find out why, step by step, and say what to fix.
        failed => {
            let why =
                failed.map_or_else(|_| "timed out".to_owned(), |r| r.err().map(|e| e.to_string()).unwrap_or_default());
            return Err(match crate::reach::probe(control, trusted, args.connect_timeout).await {
                Err(said) => said,
                Ok(_) => Error::Failed(format!(
                    "cannot reach the control endpoint {control}: TLS works, but the gRPC connection failed ({why})"
                )),
            });
        }
    };
    let mut request = tonic::Request::new(Hello {
        uid: args.stream_id.clone(),
        prod_listeners: args.listeners.clone(),
        role: args.role.clone(),
    });
    let key = inputs
        .key
        .parse()
        .map_err(|_| Error::Usage("the Hello key has characters not allowed in gRPC metadata".to_owned()))?;
    request.metadata_mut().insert(scistream_api::control::METADATA_AUTHORIZATION, key);
    let reply = ControlClient::new(channel).hello(request).await.map_err(|s| classify(&s))?.into_inner();
    let value = json!({"message": reply.message, "listeners": reply.listeners});
    crate::out::document(crate::out::Format::of(cli), &value, &[], |_| {
        let connect = if reply.listeners.is_empty() {
            String::new()
        } else {
            format!("connect to: {}\n", reply.listeners.join(","))
        };
        format!("{}\n{connect}", reply.message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_exit_codes() {
        use crate::error::{EXIT_FAILED, EXIT_NOT_FOUND, EXIT_REFUSED};
        assert_eq!(classify(&tonic::Status::not_found("x")).exit_code(), EXIT_NOT_FOUND);
        assert_eq!(classify(&tonic::Status::unauthenticated("x")).exit_code(), EXIT_REFUSED);
        assert_eq!(classify(&tonic::Status::deadline_exceeded("x")).exit_code(), EXIT_FAILED);
    }
}
