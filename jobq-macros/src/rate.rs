//! Checking `rate = "10/s"` and `key_rate = "2/m"` at compile time.

use syn::LitStr;

use crate::args::Arg;

/// A rate as written: starts per a unit of so many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub starts: u32,
    pub per_secs: u64,
}

/// The rate in `lit`, or an error pointing at it that says what is
/// accepted.
pub fn rate(lit: &LitStr, key: &str) -> syn::Result<Arg<RateSpec>> {
    let text = lit.value();
    let value = parse(&text).map_err(|reason| {
        syn::Error::new_spanned(
            lit,
            format!(
                "invalid rate {text:?} for `{key}` ({reason}): expected starts per second, \
                 minute or hour, like \"10/s\", \"100/m\" or \"5/h\""
            ),
        )
    })?;
    Ok(Arg {
        value,
        span: lit.span(),
    })
}

fn parse(text: &str) -> Result<RateSpec, &'static str> {
    let (starts, unit) = text.trim().split_once('/').ok_or("no `/`")?;
    let starts: u32 = starts
        .trim()
        .parse()
        .map_err(|_| "the number of starts is not a whole number up to 4294967295")?;
    if starts == 0 {
        return Err("the number of starts must be at least 1");
    }
    let per_secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err("the unit must be s, m or h"),
    };
    Ok(RateSpec { starts, per_secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_units_and_refuses_the_rest() {
        assert_eq!(
            parse("10/s"),
            Ok(RateSpec {
                starts: 10,
                per_secs: 1
            })
        );
        assert_eq!(parse(" 2 / m").map(|r| r.per_secs), Ok(60));
        assert_eq!(parse("5/h").map(|r| r.per_secs), Ok(3600));
        for bad in [
            "10",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/d",
            "10/sec",
            "/s",
            "99999999999/s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
