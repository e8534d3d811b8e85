//! Prometheus metrics of the operator. Labels are bounded: controller names, phases, error
//! reasons and gateway names (gateways are few and set up by facility operators); never a
//! StreamRequest name.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `gateway` or `streamrequest`.
    pub controller: &'static str,
}

/// Labels of a reconcile error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `gateway` or `streamrequest`.
    pub controller: &'static str,
    /// [`crate::error::Error::reason`].
    pub reason: &'static str,
}

/// Labels of a per-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// StreamRequest phase.
    pub phase: String,
}

/// Labels of per-gateway gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// Gateway name.
    pub gateway: String,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles failed, by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations.
    pub duration: Family<ControllerLabels, Histogram>,
    /// StreamRequests by phase.
    pub streams: Family<PhaseLabels, Gauge>,
    /// Ports held per gateway.
    pub ports_in_use: Family<GatewayLabels, Gauge>,
    /// Ports on usable nodes per gateway.
    pub ports_total: Family<GatewayLabels, Gauge>,
    /// Bandwidth promised per gateway (bit/s).
    pub bandwidth_promised: Family<GatewayLabels, Gauge>,
    /// Bandwidth declared per gateway (bit/s).
    pub bandwidth_declared: Family<GatewayLabels, Gauge>,
    /// The control endpoint's calls, errors and latency.
    pub control: scistream_control_endpoint::Metrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("scistream");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let streams = Family::<PhaseLabels, Gauge>::default();
        let ports_in_use = Family::<GatewayLabels, Gauge>::default();
        let ports_total = Family::<GatewayLabels, Gauge>::default();
        let bandwidth_promised = Family::<GatewayLabels, Gauge>::default();
        let bandwidth_declared = Family::<GatewayLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by reason", errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconciles", duration.clone());
        registry.register("streams", "StreamRequests by phase", streams.clone());
        registry.register("gateway_ports_in_use", "Ports held by streams on a gateway", ports_in_use.clone());
        registry.register("gateway_ports_total", "Ports on a gateway's usable nodes", ports_total.clone());
        registry.register(
            "gateway_bandwidth_promised_bits_per_second",
            "Bandwidth promised to streams on a gateway",
            bandwidth_promised.clone(),
        );
        registry.register(
            "gateway_bandwidth_declared_bits_per_second",
            "Bandwidth a gateway declares",
            bandwidth_declared.clone(),
        );
        let control = scistream_control_endpoint::Metrics::new(&mut registry);
        Self {
            registry,
            control,
            reconciles,
            errors,
            duration,
            streams,
            ports_in_use,
            ports_total,
            bandwidth_promised,
            bandwidth_declared,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles.get_or_create(&ControllerLabels { controller }).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create(&ControllerLabels { controller }).clone(),
            start: std::time::Instant::now(),
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::default();
        drop(m.reconcile("streamrequest"));
        m.errors.get_or_create(&ErrorLabels { controller: "streamrequest", reason: "Conflict" }).inc();
        let text = m.render();
        assert!(text.contains("scistream_reconciles_total{controller=\"streamrequest\"} 1"), "{text}");
        assert!(text.contains("reason=\"Conflict\""));
        assert!(text.contains("scistream_reconcile_duration_seconds_count"));
    }
}
