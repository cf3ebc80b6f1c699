//! CloudWatch Embedded Metric Format: the figures as JSON log lines that
//! CloudWatch Logs turns into metrics, for the Lambdas (nothing can scrape
//! a function, and a log line costs no API call).
//!
//! The recorder keeps what was recorded since the last flush; a Lambda
//! flushes at the end of each invocation, before the runtime may freeze
//! it. One line per label set: its labels are the line's dimensions,
//! counters give their increase since the last flush, gauges their value,
//! histograms their samples as a value array (at most 100 per line, the
//! format's limit, so a busy histogram spans several lines). Units come
//! from the catalogue's descriptions. See
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "sound-creator";
/// A label set, sorted by name: one EMF document's dimensions.
type Labels = Vec<(String, String)>;
/// The most values one metric may carry in one EMF document.
const MAX_VALUES: usize = 100;

/// Collects the figures and writes them as EMF lines on [`flush`](Self::flush).
/// Cloning shares the figures: install one clone, flush through another.
#[derive(Clone)]
pub struct EmfRecorder {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    registry: Registry<Key, AtomicStorage>,
    units: Mutex<HashMap<String, Unit>>,
}

impl EmfRecorder {
    pub fn new(namespace: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.to_owned(),
                registry: Registry::atomic(),
                units: Mutex::default(),
            }),
        }
    }

    /// Installs a recorder as the process's metrics recorder, describes the
    /// catalogue to it and returns a handle to flush it. Once per process.
    pub fn install() -> anyhow::Result<EmfRecorder> {
        let recorder = EmfRecorder::new(NAMESPACE);
        metrics::set_global_recorder(recorder.clone())
            .map_err(|e| anyhow::anyhow!("cannot install the EMF metrics recorder: {e}"))?;
        sound_creator_core::metrics::describe();
        Ok(recorder)
    }

    /// The EMF documents of everything recorded since the last flush, one
    /// per label set (more for a histogram with over 100 samples), stamped
    /// `timestamp_ms`. Counters are reset; histograms drained.
    pub fn take_documents(&self, timestamp_ms: i64) -> Vec<Value> {
        // Per label set: (metric name, value) in name order.
        let mut sets: BTreeMap<Labels, Vec<(String, Value)>> = BTreeMap::new();
        let labels = |key: &Key| -> Labels {
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            labels
        };
        let registry = &self.inner.registry;
        registry.visit_counters(|key, counter| {
            let delta = counter.swap(0, Ordering::AcqRel);
            if delta > 0 {
                sets.entry(labels(key))
                    .or_default()
                    .push((key.name().to_owned(), json!(delta)));
            }
        });
        registry.visit_gauges(|key, gauge| {
            let value = f64::from_bits(gauge.load(Ordering::Acquire));
            sets.entry(labels(key))
                .or_default()
                .push((key.name().to_owned(), json!(value)));
        });
        registry.visit_histograms(|key, histogram| {
            let mut values = Vec::new();
            histogram.clear_with(|chunk| values.extend_from_slice(chunk));
            if !values.is_empty() {
                sets.entry(labels(key))
                    .or_default()
                    .push((key.name().to_owned(), json!(values)));
            }
        });

        let units = self.inner.units.lock().unwrap_or_else(|e| e.into_inner());
        let mut documents = Vec::new();
        for (labels, mut metrics) in sets {
            metrics.sort_by(|a, b| a.0.cmp(&b.0));
            // Histograms over the per-document limit continue in further
            // documents with the same dimensions.
            let mut pending: Vec<(String, Value)> = metrics;
            while !pending.is_empty() {
                let mut now = Vec::new();
                let mut later = Vec::new();
                for (name, value) in pending {
                    match value {
                        Value::Array(mut values) if values.len() > MAX_VALUES => {
                            let rest = values.split_off(MAX_VALUES);
                            now.push((name.clone(), Value::Array(values)));
                            later.push((name, Value::Array(rest)));
                        }
                        value => now.push((name, value)),
                    }
                }
                documents.push(self.document(timestamp_ms, &labels, &now, &units));
                pending = later;
            }
        }
        documents
    }

    fn document(
        &self,
        timestamp_ms: i64,
        labels: &[(String, String)],
        metrics: &[(String, Value)],
        units: &HashMap<String, Unit>,
    ) -> Value {
        let definitions: Vec<Value> = metrics
            .iter()
            .map(|(name, _)| {
                json!({"Name": name, "Unit": cloudwatch_unit(units.get(name).copied())})
            })
            .collect();
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.inner.namespace,
                    "Dimensions": [labels.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()],
                    "Metrics": definitions,
                }],
            }),
        );
        for (key, value) in labels {
            document.insert(key.clone(), json!(value));
        }
        for (name, value) in metrics {
            document.insert(name.clone(), value.clone());
        }
        Value::Object(document)
    }

    /// Writes what was recorded since the last flush to `out`, one JSON
    /// document a line.
    pub fn flush_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for document in self.take_documents(now) {
            writeln!(out, "{document}")?;
        }
        out.flush()
    }

    /// Flushes to stdout, where Lambda's log capture takes it to
    /// CloudWatch Logs. A write error is logged, never raised: metrics must
    /// not fail an invocation.
    pub fn flush(&self) {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if let Err(e) = self.flush_to(&mut out) {
            tracing::warn!(error = %e, "cannot write the EMF metrics lines");
        }
    }
}

/// CloudWatch's name for a unit; `None` for what it has no name for.
fn cloudwatch_unit(unit: Option<Unit>) -> &'static str {
    match unit {
        Some(Unit::Count) => "Count",
        Some(Unit::Seconds) => "Seconds",
        Some(Unit::Milliseconds) => "Milliseconds",
        Some(Unit::Microseconds) => "Microseconds",
        Some(Unit::Bytes) => "Bytes",
        Some(Unit::Percent) => "Percent",
        _ => "None",
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.inner
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.inner
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.inner
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

impl EmfRecorder {
    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit {
            self.inner
                .units
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.as_str().to_owned(), unit);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use sound_creator_core::family::ModelFamily;
    use sound_creator_core::metrics as catalogue;

    use super::*;

    fn recorded(record: impl FnOnce()) -> (EmfRecorder, Vec<Value>) {
        let recorder = EmfRecorder::new(NAMESPACE);
        metrics::with_local_recorder(&recorder, || {
            catalogue::describe();
            record();
        });
        let documents = recorder.take_documents(1_700_000_000_000);
        (recorder, documents)
    }

    fn with_dimensions<'a>(documents: &'a [Value], dims: &[&str]) -> Vec<&'a Value> {
        documents
            .iter()
            .filter(|d| d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0] == json!(dims))
            .collect()
    }

    #[test]
    fn each_label_set_is_one_emf_document_with_its_dimensions_units_and_values() {
        let (_, documents) = recorded(|| {
            catalogue::http_response("/v1/call", "POST", 202, Duration::from_millis(12));
            catalogue::http_response("/v1/call", "POST", 202, Duration::from_millis(30));
            catalogue::task_submitted(ModelFamily::Music);
            catalogue::task_submitted(ModelFamily::Music);
            catalogue::batch_generated(ModelFamily::Music, 2, 400, Duration::from_secs(2));
        });
        for document in &documents {
            let aws = &document["_aws"];
            assert_eq!(aws["Timestamp"], 1_700_000_000_000_i64, "{document}");
            let directive = &aws["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], NAMESPACE);
            // Every dimension and every metric the directive names is a
            // member of the document, as the specification requires.
            for dim in directive["Dimensions"][0].as_array().unwrap() {
                assert!(document[dim.as_str().unwrap()].is_string(), "{document}");
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                assert!(!document[name].is_null(), "{name} missing in {document}");
            }
        }

        let http = with_dimensions(&documents, &["method", "route", "status"]);
        assert_eq!(http.len(), 1, "{documents:?}");
        assert_eq!(http[0]["route"], "/v1/call");
        assert_eq!(http[0]["status"], "202");
        assert_eq!(http[0][catalogue::HTTP_REQUESTS.name], 2);
        assert_eq!(
            http[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": catalogue::HTTP_REQUESTS.name, "Unit": "Count"}])
        );
        let latency = with_dimensions(&documents, &["method", "route"]);
        assert_eq!(
            latency[0][catalogue::HTTP_REQUEST_DURATION.name],
            json!([0.012, 0.03])
        );
        assert_eq!(
            latency[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Seconds"
        );

        let music = with_dimensions(&documents, &["family"]);
        assert_eq!(music.len(), 1);
        assert_eq!(music[0]["family"], "music");
        assert_eq!(music[0][catalogue::TASKS_SUBMITTED.name], 2);
        assert_eq!(music[0][catalogue::DECODING_STEPS.name], 400);
        assert_eq!(music[0][catalogue::WORKER_BATCH_SIZE.name], json!([2.0]));
        assert_eq!(music[0][catalogue::DECODING_STEP.name], json!([0.005]));
    }

    #[test]
    fn a_flush_reports_what_happened_since_the_last_one() {
        let (recorder, first) = recorded(|| catalogue::task_submitted(ModelFamily::Audio));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0][catalogue::TASKS_SUBMITTED.name], 1);
        assert!(
            recorder.take_documents(0).is_empty(),
            "nothing new, nothing written"
        );

        metrics::with_local_recorder(&recorder, || {
            catalogue::task_submitted(ModelFamily::Audio);
            catalogue::task_submitted(ModelFamily::Audio);
            catalogue::task_submitted(ModelFamily::Audio);
        });
        let mut out = Vec::new();
        recorder.flush_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0][catalogue::TASKS_SUBMITTED.name], 3);
        assert_eq!(lines[0]["family"], "audio");
    }

    #[test]
    fn a_histogram_of_more_than_100_samples_spans_several_documents() {
        let (_, documents) = recorded(|| {
            for i in 0..250 {
                catalogue::http_response("/health", "GET", 200, Duration::from_millis(i));
            }
        });
        let latency = with_dimensions(&documents, &["method", "route"]);
        let sizes: Vec<usize> = latency
            .iter()
            .map(|d| {
                d[catalogue::HTTP_REQUEST_DURATION.name]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let counts = with_dimensions(&documents, &["method", "route", "status"]);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0][catalogue::HTTP_REQUESTS.name], 250);
    }
}
