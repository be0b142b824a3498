import Metrics
import Prometheus

/// The process-wide Prometheus registry behind swift-metrics. Touch `registry` before creating any
/// metric: the first access bootstraps the metrics system exactly once.
public enum ParleyMetrics {
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Commit-to-Kafka lag: fine buckets around the 100 ms that matters.
        factory.durationHistogramBuckets["parley_outbox_lag_seconds"] = [1, 2, 5, 10, 20, 50, 75, 100, 150, 250, 500, 1000, 5000, 30_000]
            .map { Duration.milliseconds($0) }
        MetricsSystem.bootstrap(factory)
        return registry
    }()
}
