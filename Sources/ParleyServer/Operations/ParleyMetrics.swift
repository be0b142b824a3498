import Metrics
import Prometheus

/// The process-wide Prometheus registry behind swift-metrics. Touch `registry` before creating any
/// metric: the first access bootstraps the metrics system exactly once.
public enum ParleyMetrics {
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}
