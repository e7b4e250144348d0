//! Error messages for logs: the whole source chain on one line, since
//! a driver's top-level message alone ("connection error") says too little.

/// `e` and its sources, joined by `": "`. A source whose text its parent
/// already showed (wrappers such as bb8's print their inner error and give
/// it as their source too) is said once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut shown = out.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !shown.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        shown = text;
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn joins_the_chain_and_says_a_repeated_message_once() {
        let chain = E(
            "claiming failed",
            Some(Box::new(E(
                "connection refused",
                Some(Box::new(E("connection refused", None))),
            ))),
        );
        assert_eq!(error_chain(&chain), "claiming failed: connection refused");
        let wrapper = E("pool: timed out", Some(Box::new(E("timed out", None))));
        assert_eq!(error_chain(&wrapper), "pool: timed out");
    }
}
