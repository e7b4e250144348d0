//! Collecting several `syn::Error`s into one.

/// Accumulates errors so a single expansion can report all of them; rustc
/// shows each part at its own span.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn extend(&mut self, error: Option<syn::Error>) {
        if let Some(error) = error {
            self.push(error);
        }
    }

    pub fn finish(self) -> Option<syn::Error> {
        self.0
    }
}
