//! Protocol constants of the control endpoint (the SciStream 1.x gRPC interface and the JSON
//! Hello), shared by the endpoint, the kubectl plugin's `hello` and the tests, so each has
//! one definition. See `shared/PROTOCOL.md`.

/// Port SciStream 1.x clients (`s2uc`, `appctrl`) connect to.
pub const DEFAULT_PORT: u16 = 5000;
/// gRPC metadata (and HTTP header) carrying the token or Hello key: the bare value (1.x) or
/// `Bearer <value>`.
pub const METADATA_AUTHORIZATION: &str = "authorization";
/// What a 1.x client sends when it is not logged in (accepted only in the `none` auth mode).
pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
/// Largest request message accepted (gRPC message or JSON Hello body), in bytes; larger ones
/// are refused with `RESOURCE_EXHAUSTED` (HTTP 413 for the JSON Hello).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Path of the JSON Hello.
pub const HELLO_PATH: &str = "/v1/hello";
/// `role` of a producer's Hello or `req`.
pub const ROLE_PROD: &str = "PROD";
/// `role` of a consumer's Hello or `req`.
pub const ROLE_CONS: &str = "CONS";

#[cfg(test)]
mod tests {
    #[test]
    fn hello_path_is_absolute() {
        assert!(super::HELLO_PATH.starts_with('/'));
        assert_eq!(super::MAX_MESSAGE_BYTES, 65_536);
    }
}
