//! Prometheus metrics. Every service counts its units with the same names
//! and labels, so one dashboard reads them all; an error is logged and counted
//! in the same call ([`record_unit`]) so the two never drift apart.

use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnitLabels {
    pub stage: String,
    /// "done", "failed", "requeued".
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

/// The process-wide metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `deepcuts_units_total{stage,outcome}`
    pub units: Family<UnitLabels, Counter>,
    /// `deepcuts_unit_duration_seconds{stage}`
    pub unit_seconds: Family<StageLabels, Histogram>,
    /// `deepcuts_units_in_flight{stage}`
    pub in_flight: Family<StageLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The global metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("deepcuts");
        let units = Family::<UnitLabels, Counter>::default();
        let unit_seconds = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 18))
        });
        let in_flight = Family::<StageLabels, Gauge>::default();
        registry.register(
            "units",
            "Units of work finished, by stage and outcome",
            units.clone(),
        );
        registry.register(
            "unit_duration_seconds",
            "Time to process one unit of work",
            unit_seconds.clone(),
        );
        registry.register(
            "units_in_flight",
            "Units of work being processed",
            in_flight.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            units,
            unit_seconds,
            in_flight,
        }
    })
}

impl Metrics {
    /// Registers a service's own metric under the `deepcuts_` prefix.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .expect("registry lock")
            .register(name, help, metric);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Counts one finished unit.
pub fn record_unit(stage: &str, outcome: &str, seconds: f64) {
    let m = metrics();
    m.units
        .get_or_create(&UnitLabels {
            stage: stage.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    m.unit_seconds
        .get_or_create(&StageLabels {
            stage: stage.to_owned(),
        })
        .observe(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_units_show_in_the_exposition() {
        record_unit("testing", "done", 0.2);
        record_unit("testing", "done", 0.3);
        let text = metrics().encode();
        assert!(
            text.contains("deepcuts_units_total{stage=\"testing\",outcome=\"done\"} 2"),
            "{text}"
        );
        assert!(text.contains("deepcuts_unit_duration_seconds_count{stage=\"testing\"} 2"));
    }
}
