//! `cron = ...` and `timezone = ...`: checked with the parser the worker
//! uses, so that an expression the worker would refuse never compiles.

use std::str::FromStr;

use syn::{Expr, LitStr};

use crate::args::Arg;

/// A cron expression croner accepts (five fields, or six with seconds
/// first).
pub fn expression(expr: &Expr, lit: &LitStr) -> syn::Result<Arg<String>> {
    let text = lit.value();
    croner::Cron::from_str(&text).map_err(|error| {
        syn::Error::new_spanned(
            expr,
            format!(
                "invalid cron expression {text:?}: {error}; expected five fields \
                 (minute hour day-of-month month day-of-week) or six with seconds first, \
                 e.g. \"0 */5 * * * *\""
            ),
        )
    })?;
    Ok(Arg {
        value: text,
        span: lit.span(),
    })
}

/// An IANA time zone name.
pub fn timezone(expr: &Expr, lit: &LitStr) -> syn::Result<Arg<String>> {
    let text = lit.value();
    if chrono_tz::Tz::from_str(&text).is_err() {
        return Err(syn::Error::new_spanned(
            expr,
            format!(
                "unknown time zone {text:?}: expected an IANA name like \"Europe/Berlin\" or \"UTC\""
            ),
        ));
    }
    Ok(Arg {
        value: text,
        span: lit.span(),
    })
}
