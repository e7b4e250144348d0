//! Reading query strings and form bodies, where a key may repeat
//! (`id=1&id=2` from a list of checkboxes).

/// The pairs of a `application/x-www-form-urlencoded` string.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(input: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(input)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first non-blank value of `key`, trimmed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
