//! The arguments of `#[jobq::task(...)]`, parsed and checked.
//!
//! Every argument is looked at even after one fails, so that a single build
//! reports every mistake in the attribute at once.

use proc_macro2::TokenTree;
use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::Parser;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{token, Expr, Lit, LitInt, LitStr, Path, Token, UnOp};

use crate::cron;
use crate::duration::{self, ACCEPTED_FORMS};
use crate::errors::Errors;
use crate::rate::{self, RateSpec};

/// The argument names, in the order the docs list them.
const ARGUMENTS: [&str; 16] = [
    "name",
    "queue",
    "concurrency",
    "retry",
    "max_attempts",
    "timeout",
    "priority",
    "global_concurrency",
    "key_concurrency",
    "rate",
    "key_rate",
    "burst",
    // Periodic tasks.
    "cron",
    "timezone",
    "catch_up",
    // Follow-up jobs.
    "then",
];

/// A checked value and where it was written, so that the generated code that
/// uses it can point back at it.
#[derive(Debug, Clone)]
pub struct Arg<T> {
    pub value: T,
    pub span: Span,
}

/// The attribute's arguments; `None` where the argument was not given (or was
/// refused), leaving the default to the runtime.
#[derive(Debug, Default)]
pub struct TaskArgs {
    pub name: Option<Arg<String>>,
    pub queue: Option<Arg<String>>,
    pub concurrency: Option<Arg<u32>>,
    /// Milliseconds.
    pub retry: Option<Arg<u64>>,
    pub max_attempts: Option<Arg<u32>>,
    /// Milliseconds.
    pub timeout: Option<Arg<u64>>,
    pub priority: Option<Arg<i16>>,
    /// Fleet-wide limit of running attempts.
    pub global_concurrency: Option<Arg<u32>>,
    /// Fleet-wide limit of running attempts per partition key.
    pub key_concurrency: Option<Arg<u32>>,
    /// Fleet-wide starts per unit of time, of the task and per key, and the
    /// starts allowed at once beyond them.
    pub rate: Option<Arg<RateSpec>>,
    pub key_rate: Option<Arg<RateSpec>>,
    pub burst: Option<Arg<u32>>,
    /// Periodic tasks: the expression, its time zone, and the catch-up
    /// window in milliseconds.
    pub cron: Option<Arg<String>>,
    pub timezone: Option<Arg<String>>,
    pub catch_up: Option<Arg<u64>>,
    /// The follow-up task, as written; the generated code checks that it
    /// is a task taking `jobq::Finished`.
    pub then: Option<Arg<Path>>,
}

/// One `key = value` of the attribute, or a key written in another form.
struct RawArg {
    path: Path,
    /// `None` for `key` or `key(...)`; the tokens are kept for the error.
    value: Result<Expr, TokenStream>,
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let path = input.call(Path::parse_mod_style)?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            // Parsed as an expression rather than through `syn::Meta`, which
            // folds `-4` into a single literal whose span covers only the
            // `-`; here a negative number stays two tokens and errors
            // underline all of it.
            let value = input.parse()?;
            return Ok(Self {
                path,
                value: Ok(value),
            });
        }
        let mut rest = path.to_token_stream();
        if input.peek(token::Paren) || input.peek(token::Bracket) || input.peek(token::Brace) {
            rest.extend([input.parse::<TokenTree>()?]);
        }
        Ok(Self {
            path,
            value: Err(rest),
        })
    }
}

/// Parses the attribute's tokens. The arguments that are valid are returned
/// even when others are not, so that the expansion can still produce the task
/// type and the errors are not buried under "cannot find type" follow-ups.
pub fn parse(tokens: TokenStream) -> (TaskArgs, Option<syn::Error>) {
    let mut args = TaskArgs::default();
    let raw = match Punctuated::<RawArg, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(raw) => raw,
        Err(error) => return (args, Some(error)),
    };
    let mut errors = Errors::default();
    let mut seen: Vec<String> = Vec::new();
    for RawArg { path, value } in raw {
        let Some(key) = path.get_ident().map(ToString::to_string) else {
            errors.push(unknown(&path));
            continue;
        };
        if !ARGUMENTS.contains(&key.as_str()) {
            errors.push(unknown(&path));
            continue;
        }
        let value = match value {
            Ok(value) => value,
            Err(written) => {
                errors.push(syn::Error::new_spanned(
                    written,
                    format!("expected `{key} = ...`, e.g. {}", example(&key)),
                ));
                continue;
            }
        };
        if seen.contains(&key) {
            errors.push(syn::Error::new_spanned(
                &path,
                format!("duplicate argument `{key}`"),
            ));
            continue;
        }
        seen.push(key.clone());
        if let Err(error) = apply(&mut args, &key, &value) {
            errors.push(error);
        }
    }
    // A time zone or catch-up window means nothing without a schedule.
    if args.cron.is_none() && !seen.iter().any(|k| k == "cron") {
        for (key, span) in [
            ("timezone", args.timezone.as_ref().map(|a| a.span)),
            ("catch_up", args.catch_up.as_ref().map(|a| a.span)),
        ] {
            if let Some(span) = span {
                errors.push(syn::Error::new(
                    span,
                    format!("`{key}` applies to periodic tasks only; add `cron = \"...\"`"),
                ));
            }
        }
    }
    // A burst adds to a rate; alone it would mean nothing.
    if let Some(burst) = &args.burst {
        if !seen.iter().any(|k| k == "rate" || k == "key_rate") {
            errors.push(syn::Error::new(
                burst.span,
                "`burst` adds to a rate limit; add `rate = \"10/s\"` or `key_rate = \"2/s\"`",
            ));
        }
    }
    (args, errors.finish())
}

fn apply(args: &mut TaskArgs, key: &str, value: &Expr) -> syn::Result<()> {
    match key {
        "name" => args.name = Some(name(value, key)?),
        "queue" => args.queue = Some(name(value, key)?),
        "concurrency" => args.concurrency = Some(positive_i32(value, key)?),
        "max_attempts" => args.max_attempts = Some(positive_i32(value, key)?),
        // Zero would never run a job: refused here rather than left to
        // wait forever at run time.
        "global_concurrency" => args.global_concurrency = Some(positive_i32(value, key)?),
        "key_concurrency" => args.key_concurrency = Some(positive_i32(value, key)?),
        "rate" => args.rate = Some(rate::rate(string(value, key)?, key)?),
        "key_rate" => args.key_rate = Some(rate::rate(string(value, key)?, key)?),
        "burst" => args.burst = Some(non_negative_i32(value, key)?),
        "retry" => {
            let retry = duration(value, key)?;
            // The backoff doubles this base; from zero every retry would be
            // immediate, hammering whatever made the attempt fail.
            if retry.value == 0 {
                return Err(syn::Error::new_spanned(
                    value,
                    "`retry` must be greater than zero: it is the base of the backoff between attempts",
                ));
            }
            args.retry = Some(retry);
        }
        "timeout" => {
            let timeout = duration(value, key)?;
            // A zero time limit would fail every attempt before it starts.
            if timeout.value == 0 {
                return Err(syn::Error::new_spanned(
                    value,
                    "`timeout` must be greater than zero; leave it out for no time limit",
                ));
            }
            args.timeout = Some(timeout);
        }
        "priority" => {
            let (number, span) = integer(value, key, "i16")?;
            let priority = i16::try_from(number).map_err(|_| {
                syn::Error::new_spanned(
                    value,
                    format!(
                        "`priority` must fit in an i16 ({} to {})",
                        i16::MIN,
                        i16::MAX
                    ),
                )
            })?;
            args.priority = Some(Arg {
                value: priority,
                span,
            });
        }
        "cron" => args.cron = Some(cron::expression(value, string(value, key)?)?),
        "timezone" => args.timezone = Some(cron::timezone(value, string(value, key)?)?),
        "catch_up" => args.catch_up = Some(duration(value, key)?),
        "then" => args.then = Some(task_path(value, key)?),
        _ => unreachable!("`{key}` is checked against ARGUMENTS first"),
    }
    Ok(())
}

fn unknown(path: &syn::Path) -> syn::Error {
    let name = path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect::<Vec<_>>()
        .join("::");
    let valid = ARGUMENTS
        .iter()
        .map(|arg| format!("`{arg}`"))
        .collect::<Vec<_>>()
        .join(", ");
    syn::Error::new_spanned(
        path,
        format!("unknown argument `{name}`; the valid arguments are {valid}"),
    )
}

/// How each argument is written, for the messages.
fn example(key: &str) -> &'static str {
    match key {
        "name" => "`name = \"reports.nightly\"`",
        "queue" => "`queue = \"reports\"`",
        "concurrency" => "`concurrency = 4`",
        "retry" => "`retry = \"30s\"`",
        "max_attempts" => "`max_attempts = 5`",
        "timeout" => "`timeout = \"5m\"`",
        "priority" => "`priority = -5`",
        "global_concurrency" => "`global_concurrency = 2`",
        "key_concurrency" => "`key_concurrency = 1`",
        "rate" => "`rate = \"10/s\"`",
        "key_rate" => "`key_rate = \"2/s\"`",
        "burst" => "`burst = 5`",
        "cron" => "`cron = \"0 */5 * * * *\"`",
        "timezone" => "`timezone = \"Europe/Berlin\"`",
        "catch_up" => "`catch_up = \"1h\"`",
        "then" => "`then = notify_client`",
        _ => "",
    }
}

/// Sees through the invisible groups that `macro_rules!` wraps around an
/// `$value:expr`, so the attribute also works when generated by a macro.
fn strip_groups(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => strip_groups(&group.expr),
        other => other,
    }
}

/// Longest task or queue name, in characters: the jobs table's
/// `CHECK (char_length(..) BETWEEN 1 AND 200)`.
const MAX_NAME_CHARS: usize = 200;

fn name(expr: &Expr, key: &str) -> syn::Result<Arg<String>> {
    let lit: &LitStr = match strip_groups(expr) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        _ => {
            return Err(syn::Error::new_spanned(
                expr,
                format!(
                    "expected a string literal for `{key}`, e.g. {}",
                    example(key)
                ),
            ))
        }
    };
    let value = lit.value();
    if value.is_empty() {
        return Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` must not be empty"),
        ));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(syn::Error::new_spanned(
            lit,
            format!(
                "`{key}` is {chars} characters long; the jobs table holds at most {MAX_NAME_CHARS}"
            ),
        ));
    }
    Ok(Arg {
        value,
        span: lit.span(),
    })
}

/// A `u32` in the runtime's API, stored or bound as a PostgreSQL `int4`,
/// so at most `i32::MAX`.
fn positive_i32(expr: &Expr, key: &str) -> syn::Result<Arg<u32>> {
    let (number, span) = integer(expr, key, "u32")?;
    if number < 1 {
        return Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` must be at least 1"),
        ));
    }
    if number > i128::from(i32::MAX) {
        return Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` must be at most {} (i32::MAX)", i32::MAX),
        ));
    }
    let value = u32::try_from(number).map_err(|_| {
        syn::Error::new_spanned(expr, format!("`{key}` must be at most {}", i32::MAX))
    })?;
    Ok(Arg { value, span })
}

/// A count that may be zero, bound as an `int4`.
fn non_negative_i32(expr: &Expr, key: &str) -> syn::Result<Arg<u32>> {
    let (number, span) = integer(expr, key, "u32")?;
    if !(0..=i128::from(i32::MAX)).contains(&number) {
        return Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` must be between 0 and {} (i32::MAX)", i32::MAX),
        ));
    }
    let value = u32::try_from(number).map_err(|_| {
        syn::Error::new_spanned(expr, format!("`{key}` must be at most {}", i32::MAX))
    })?;
    Ok(Arg { value, span })
}

/// An integer literal, possibly negated. Negative numbers are parsed for
/// every integer argument so that `concurrency = -1` gets "must be at least
/// 1" rather than a confusing "expected an integer".
fn integer(expr: &Expr, key: &str, ty: &str) -> syn::Result<(i128, Span)> {
    let wrong_kind = || {
        syn::Error::new_spanned(
            expr,
            format!(
                "expected an integer literal for `{key}`, e.g. {}",
                example(key)
            ),
        )
    };
    let (negative, lit): (bool, &LitInt) = match strip_groups(expr) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => (false, lit),
        Expr::Unary(unary) if matches!(unary.op, UnOp::Neg(_)) => match strip_groups(&unary.expr) {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Int(lit), ..
            }) => (true, lit),
            _ => return Err(wrong_kind()),
        },
        _ => return Err(wrong_kind()),
    };
    let suffix = lit.suffix();
    if !suffix.is_empty() && suffix != ty {
        return Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` is a {ty}; remove the `{suffix}` suffix"),
        ));
    }
    // Anything beyond i128 is out of range for every argument; saturating
    // keeps the range checks of the callers the single source of messages.
    let magnitude: i128 = lit.base10_parse().unwrap_or(i128::MAX);
    let number = if negative { -magnitude } else { magnitude };
    Ok((number, expr.span()))
}

/// A string literal, for the arguments that check their text elsewhere.
fn string<'a>(expr: &'a Expr, key: &str) -> syn::Result<&'a LitStr> {
    match strip_groups(expr) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!(
                "expected a string literal for `{key}`, e.g. {}",
                example(key)
            ),
        )),
    }
}

/// The path of a task (the type `#[jobq::task]` generates), such as
/// `notify_client` or `crate::callbacks::notify_client`.
fn task_path(expr: &Expr, key: &str) -> syn::Result<Arg<Path>> {
    match strip_groups(expr) {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => Ok(Arg {
            value: path.path.clone(),
            span: path.span(),
        }),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!(
                "expected the path of a task for `{key}`, e.g. {}",
                example(key)
            ),
        )),
    }
}

fn duration(expr: &Expr, key: &str) -> syn::Result<Arg<u64>> {
    let lit: &LitStr = match strip_groups(expr) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        _ => {
            return Err(syn::Error::new_spanned(
                expr,
                format!(
                    "expected a duration string for `{key}`, e.g. {}",
                    example(key)
                ),
            ))
        }
    };
    let text = lit.value();
    let millis = duration::parse_millis(&text).map_err(|error| {
        syn::Error::new_spanned(
            lit,
            format!("invalid duration {text:?} ({error}): expected {ACCEPTED_FORMS}"),
        )
    })?;
    Ok(Arg {
        value: millis,
        span: lit.span(),
    })
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn ok(tokens: TokenStream) -> TaskArgs {
        let (args, error) = parse(tokens);
        if let Some(error) = error {
            panic!("unexpected error: {error}");
        }
        args
    }

    fn messages(tokens: TokenStream) -> Vec<String> {
        let (_, error) = parse(tokens);
        error
            .expect("expected an error")
            .into_iter()
            .map(|error| error.to_string())
            .collect()
    }

    #[test]
    fn no_arguments() {
        let args = ok(quote!());
        assert!(args.name.is_none() && args.queue.is_none() && args.concurrency.is_none());
        assert!(args.retry.is_none() && args.max_attempts.is_none());
        assert!(args.timeout.is_none() && args.priority.is_none());
    }

    #[test]
    fn every_argument() {
        let args = ok(quote!(
            name = "reports.nightly",
            queue = "reports",
            concurrency = 4,
            retry = "30s",
            max_attempts = 3,
            timeout = "5m",
            priority = -5,
        ));
        assert_eq!(args.name.unwrap().value, "reports.nightly");
        assert_eq!(args.queue.unwrap().value, "reports");
        assert_eq!(args.concurrency.unwrap().value, 4);
        assert_eq!(args.retry.unwrap().value, 30_000);
        assert_eq!(args.max_attempts.unwrap().value, 3);
        assert_eq!(args.timeout.unwrap().value, 300_000);
        assert_eq!(args.priority.unwrap().value, -5);
    }

    #[test]
    fn range_limits_are_inclusive() {
        let args = ok(quote!(
            concurrency = 2147483647u32,
            max_attempts = 2147483647,
            priority = -32768
        ));
        assert_eq!(args.concurrency.unwrap().value, i32::MAX as u32);
        assert_eq!(args.max_attempts.unwrap().value, i32::MAX as u32);
        assert_eq!(args.priority.unwrap().value, i16::MIN);
        let args = ok(quote!(max_attempts = 1, priority = 32767i16, retry = "1ms"));
        assert_eq!(args.max_attempts.unwrap().value, 1);
        assert_eq!(args.priority.unwrap().value, i16::MAX);
        assert_eq!(args.retry.unwrap().value, 1);
        let longest = "é".repeat(200);
        let args = ok(quote!(name = #longest, queue = #longest));
        assert_eq!(args.name.unwrap().value.chars().count(), 200);
        assert_eq!(args.queue.unwrap().value.chars().count(), 200);
    }

    #[test]
    fn fleet_limits_are_positive_int4s() {
        let args = ok(quote!(global_concurrency = 3, key_concurrency = 1));
        assert_eq!(args.global_concurrency.unwrap().value, 3);
        assert_eq!(args.key_concurrency.unwrap().value, 1);
        assert_eq!(
            messages(quote!(global_concurrency = 0)),
            ["`global_concurrency` must be at least 1"]
        );
        assert_eq!(
            messages(quote!(key_concurrency = -1)),
            ["`key_concurrency` must be at least 1"]
        );
        assert!(messages(quote!(key_concurrency = "1"))[0].contains("expected an integer"));
        assert!(messages(quote!(global_concurrency = 2147483648))[0].contains("at most"));
    }

    #[test]
    fn rates_and_burst() {
        let args = ok(quote!(rate = "10/s", key_rate = "2/m", burst = 0));
        assert_eq!(args.rate.unwrap().value.starts, 10);
        assert_eq!(args.key_rate.unwrap().value.per_secs, 60);
        assert_eq!(args.burst.unwrap().value, 0);
        assert!(messages(quote!(rate = "10/d"))[0].contains("the unit must be s, m or h"));
        assert!(messages(quote!(key_rate = "0/s"))[0].contains("at least 1"));
        assert!(messages(quote!(rate = 10))[0].contains("expected a string literal"));
        assert!(messages(quote!(rate = "1/s", burst = -1))[0].contains("between 0 and"));
        assert!(messages(quote!(burst = 3))[0].contains("`burst` adds to a rate limit"));
    }

    #[test]
    fn unknown_argument_lists_the_valid_ones() {
        assert_eq!(
            messages(quote!(concurency = 4)),
            [
                "unknown argument `concurency`; the valid arguments are `name`, `queue`, \
              `concurrency`, `retry`, `max_attempts`, `timeout`, `priority`, \
              `global_concurrency`, `key_concurrency`, `rate`, `key_rate`, `burst`, `cron`, \
              `timezone`, `catch_up`, `then`"
            ]
        );
        assert!(messages(quote!(jobq::queue = "x"))[0].contains("unknown argument `jobq::queue`"));
    }

    #[test]
    fn duplicate_argument() {
        assert_eq!(
            messages(quote!(retry = "1s", retry = "2s")),
            ["duplicate argument `retry`"]
        );
    }

    #[test]
    fn flag_or_list_form() {
        assert_eq!(
            messages(quote!(concurrency)),
            ["expected `concurrency = ...`, e.g. `concurrency = 4`"]
        );
        assert_eq!(
            messages(quote!(queue("x"))),
            ["expected `queue = ...`, e.g. `queue = \"reports\"`"]
        );
    }

    #[test]
    fn wrong_literal_kind() {
        assert_eq!(
            messages(quote!(concurrency = "4")),
            ["expected an integer literal for `concurrency`, e.g. `concurrency = 4`"]
        );
        assert_eq!(
            messages(quote!(name = send_welcome)),
            ["expected a string literal for `name`, e.g. `name = \"reports.nightly\"`"]
        );
        assert_eq!(
            messages(quote!(retry = 30)),
            ["expected a duration string for `retry`, e.g. `retry = \"30s\"`"]
        );
        assert_eq!(
            messages(quote!(timeout = 30s)),
            ["expected a duration string for `timeout`, e.g. `timeout = \"5m\"`"]
        );
        assert_eq!(
            messages(quote!(priority = -"1")),
            ["expected an integer literal for `priority`, e.g. `priority = -5`"]
        );
        assert_eq!(
            messages(quote!(max_attempts = 3u8)),
            ["`max_attempts` is a u32; remove the `u8` suffix"]
        );
    }

    #[test]
    fn out_of_range() {
        assert_eq!(
            messages(quote!(concurrency = 0)),
            ["`concurrency` must be at least 1"]
        );
        assert_eq!(
            messages(quote!(max_attempts = -3)),
            ["`max_attempts` must be at least 1"]
        );
        for key in ["concurrency", "max_attempts"] {
            let key = syn::Ident::new(key, Span::call_site());
            for too_large in [
                quote!(2147483648),
                quote!(4294967296),
                quote!(999999999999999999999999999999999999999999),
            ] {
                assert_eq!(
                    messages(quote!(#key = #too_large)),
                    [format!("`{key}` must be at most 2147483647 (i32::MAX)")]
                );
            }
        }
        assert_eq!(
            messages(quote!(max_attempts = 0)),
            ["`max_attempts` must be at least 1"]
        );
        assert_eq!(
            messages(quote!(retry = "0s")),
            ["`retry` must be greater than zero: it is the base of the backoff between attempts"]
        );
        for priority in [quote!(32768), quote!(-32769)] {
            assert_eq!(
                messages(quote!(priority = #priority)),
                ["`priority` must fit in an i16 (-32768 to 32767)"]
            );
        }
        assert_eq!(
            messages(quote!(timeout = "0s")),
            ["`timeout` must be greater than zero; leave it out for no time limit"]
        );
    }

    #[test]
    fn empty_strings() {
        assert_eq!(messages(quote!(name = "")), ["`name` must not be empty"]);
        assert_eq!(messages(quote!(queue = "")), ["`queue` must not be empty"]);
    }

    #[test]
    fn names_the_table_cannot_hold() {
        let long = "x".repeat(201);
        assert_eq!(
            messages(quote!(name = #long)),
            ["`name` is 201 characters long; the jobs table holds at most 200"]
        );
        assert_eq!(
            messages(quote!(queue = #long)),
            ["`queue` is 201 characters long; the jobs table holds at most 200"]
        );
    }

    #[test]
    fn malformed_duration_says_what_is_accepted() {
        assert_eq!(
            messages(quote!(retry = "30 s")),
            [
                "invalid duration \"30 s\" (unknown unit ` s`): expected an unsigned integer \
              followed by `ms`, `s`, `m` or `h`, e.g. \"250ms\", \"30s\", \"5m\", \"1h\""
            ]
        );
    }

    #[test]
    fn every_error_is_reported_and_valid_arguments_are_kept() {
        let (args, error) = parse(quote!(
            concurrency = 0,
            queue = "reports",
            bogus = 1,
            retry = "soon",
            queue = "other",
        ));
        let messages: Vec<String> = error.unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(args.queue.unwrap().value, "reports");
        assert!(args.concurrency.is_none());
    }

    #[test]
    fn syntax_error() {
        let (_, error) = parse(quote!(concurrency = ));
        assert!(error.is_some());
    }

    #[test]
    fn cron_arguments() {
        let args = ok(quote!(
            cron = "0 */5 * * * *",
            timezone = "Europe/Berlin",
            catch_up = "1h"
        ));
        assert_eq!(args.cron.unwrap().value, "0 */5 * * * *");
        assert_eq!(args.timezone.unwrap().value, "Europe/Berlin");
        assert_eq!(args.catch_up.unwrap().value, 3_600_000);
        // Five fields: seconds are optional.
        assert_eq!(
            ok(quote!(cron = "*/5 * * * *")).cron.unwrap().value,
            "*/5 * * * *"
        );
    }

    #[test]
    fn bad_cron_arguments() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "every minute",
            "\0",
        ] {
            let m = messages(quote!(cron = #bad));
            assert!(
                m[0].starts_with("invalid cron expression"),
                "{bad:?}: {m:?}"
            );
        }
        assert_eq!(
            messages(quote!(cron = "* * * * *", timezone = "Mars/Olympus")),
            ["unknown time zone \"Mars/Olympus\": expected an IANA name like \"Europe/Berlin\" or \"UTC\""]
        );
        assert_eq!(
            messages(quote!(cron = 5)),
            ["expected a string literal for `cron`, e.g. `cron = \"0 */5 * * * *\"`"]
        );
        assert_eq!(
            messages(quote!(timezone = "UTC", catch_up = "1h")),
            [
                "`timezone` applies to periodic tasks only; add `cron = \"...\"`",
                "`catch_up` applies to periodic tasks only; add `cron = \"...\"`"
            ]
        );
    }

    #[test]
    fn then_takes_a_path() {
        let args = ok(quote!(then = notify_client));
        assert!(args.then.unwrap().value.is_ident("notify_client"));
        let args = ok(quote!(then = crate::callbacks::notify));
        assert_eq!(args.then.unwrap().value.segments.len(), 3);
        for bad in [
            quote!(then = "notify"),
            quote!(then = notify()),
            quote!(then = 5),
        ] {
            assert_eq!(
                messages(bad),
                ["expected the path of a task for `then`, e.g. `then = notify_client`"]
            );
        }
        assert_eq!(
            messages(quote!(then)),
            ["expected `then = ...`, e.g. `then = notify_client`"]
        );
    }
}
