//! The one way the Gateway's status is written: read it fresh, change it, and replace it
//! with the `resourceVersion` we read. A concurrent writer (the other controller, or another
//! operator replica that wrongly believes it leads) makes the API answer 409 Conflict and we
//! start over from a fresh read, so two writers never both hand out the same port.

use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use scistream_api::{Gateway, GatewayStatus};

use crate::{
    error::{Error, Result},
    gateway::status::summarize,
};

/// Attempts before giving up on a gateway that keeps changing under us.
const ATTEMPTS: usize = 8;

/// Applies `change` to the named Gateway's status with optimistic concurrency; `change`
/// returns whether it changed anything (no write otherwise). Counters and summaries are
/// recomputed on every write, so they always agree with the reservations. Returns the
/// Gateway as stored afterwards, or `None` if it does not exist.
pub async fn update_gateway_status(
    client: &Client,
    name: &str,
    mut change: impl FnMut(&Gateway, &mut GatewayStatus) -> bool,
) -> Result<Option<Gateway>> {
    let api: Api<Gateway> = Api::all(client.clone());
    for _ in 0..ATTEMPTS {
        let Some(mut gateway) = api.get_opt(name).await.map_err(Error::kube(format!("read Gateway {name}")))? else {
            return Ok(None);
        };
        let before = gateway.status.clone().unwrap_or_default();
        let mut status = before.clone();
        if !change(&gateway, &mut status) {
            return Ok(Some(gateway));
        }
        summarize(&gateway.spec, &mut status);
        if status == before {
            return Ok(Some(gateway));
        }
        gateway.status = Some(status);
        match api.replace_status(&gateway.name_any(), &PostParams::default(), &gateway).await {
            Ok(stored) => return Ok(Some(stored)),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(gateway = name, "gateway status changed concurrently; retrying");
            }
            Err(e) => return Err(Error::kube(format!("write the status of Gateway {name}"))(e)),
        }
    }
    Err(Error::Contended(name.to_owned()))
}
