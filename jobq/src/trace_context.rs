//! W3C trace context across the queue (feature `opentelemetry`).
//!
//! An enqueue made inside a traced span stores that span's context as the
//! job's `traceparent` and `tracestate` headers, and the attempt's `job`
//! span takes it as its parent, so one trace runs from the request that
//! enqueued to every attempt of the job. The context is read from the
//! current `tracing` span through `tracing-opentelemetry`, which the
//! application installs with its exporter; without that layer, or outside
//! any span, nothing is stored.
//!
//! Headers the caller set win: an explicit `traceparent` is kept as given.
//! A stored context that does not parse (a raw SQL insert, a hostile
//! header) is ignored: the attempt's span is then a root, and the attempt
//! runs as usual.
//!
//! Without the feature these functions do nothing and cost nothing.

use std::borrow::Cow;

/// The enqueue's headers, with the current span's trace context added
/// where the caller did not set it.
#[cfg(feature = "opentelemetry")]
pub(crate) fn with_current(headers: &[(String, String)]) -> Cow<'_, [(String, String)]> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Cow::Borrowed(headers);
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    let mut added: Vec<(String, String)> = carrier
        .into_iter()
        .filter(|(name, _)| !headers.iter().any(|(given, _)| given == name))
        .collect();
    if added.is_empty() {
        return Cow::Borrowed(headers);
    }
    // Sorted, so the stored headers do not depend on a hash order.
    added.sort();
    let mut all = headers.to_vec();
    all.extend(added);
    Cow::Owned(all)
}

#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn with_current(headers: &[(String, String)]) -> Cow<'_, [(String, String)]> {
    Cow::Borrowed(headers)
}

/// Makes the stored trace context (headers as the JSON text of an object)
/// the parent of an attempt's span, before the span is first entered.
#[cfg(feature = "opentelemetry")]
pub(crate) fn adopt(span: &tracing::Span, headers: Option<&str>) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    // Most jobs have no headers, and most headers no trace context: only
    // then is the JSON read.
    let Some(json) = headers.filter(|json| json.contains("traceparent")) else {
        return;
    };
    let headers = crate::headers::parse(Some(json));
    let context = TraceContextPropagator::new().extract(&Carrier(&headers));
    if context.span().span_context().is_valid() {
        if let Err(e) = span.set_parent(context) {
            tracing::debug!(error = %e, "the attempt's span cannot take the job's trace context");
        }
    }
}

#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn adopt(_span: &tracing::Span, _headers: Option<&str>) {}

#[cfg(feature = "opentelemetry")]
struct Carrier<'a>(&'a std::collections::BTreeMap<String, String>);

#[cfg(feature = "opentelemetry")]
impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
