//! Metrics of the control endpoint: calls, errors by gRPC code and latency, per method
//! (`req`, `update`, `release`, `hello`, `http_hello`). Labels are bounded: never a stream id.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels naming a method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `req`, `update`, `release`, `hello` or `http_hello`.
    pub method: &'static str,
}

/// Labels of a failed call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Method.
    pub method: &'static str,
    /// gRPC code name (`NOT_FOUND`, ...).
    pub code: &'static str,
}

/// The endpoint's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Calls, by method.
    pub calls: Family<MethodLabels, Counter>,
    /// Failed calls, by method and code.
    pub errors: Family<ErrorLabels, Counter>,
    /// Call durations in seconds, by method.
    pub latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Default for Metrics {
    /// Metrics registered nowhere.
    fn default() -> Self {
        Self {
            calls: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(histogram as fn() -> Histogram),
        }
    }
}

impl Metrics {
    /// Metrics registered in `registry` under `scistream_control_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("scistream_control");
        sub.register("calls", "Calls to the control endpoint, by method", m.calls.clone());
        sub.register("errors", "Failed calls, by method and gRPC code", m.errors.clone());
        sub.register("latency_seconds", "Duration of calls, by method", m.latency.clone());
        m
    }

    /// Counts one call of `method` that started at `start` and ended with `code`.
    pub fn observe(&self, method: &'static str, start: Instant, code: tonic::Code) {
        self.calls.get_or_create(&MethodLabels { method }).inc();
        if code != tonic::Code::Ok {
            self.errors.get_or_create(&ErrorLabels { method, code: crate::error::code_name(code) }).inc();
        }
        self.latency.get_or_create(&MethodLabels { method }).observe(start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_and_errors() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.observe("hello", Instant::now(), tonic::Code::Ok);
        m.observe("hello", Instant::now(), tonic::Code::NotFound);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("scistream_control_calls_total{method=\"hello\"} 2"), "{text}");
        assert!(text.contains("scistream_control_errors_total{method=\"hello\",code=\"NOT_FOUND\"} 1"), "{text}");
        assert!(text.contains("scistream_control_latency_seconds_count{method=\"hello\"} 2"), "{text}");
    }
}
