//! Checking the annotated fn: what a task function may look like, and which
//! argument is the context and which the payload.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{FnArg, ReturnType, Signature, Type};

use crate::errors::Errors;

/// The parts of a valid task signature that the expansion needs.
pub struct TaskSignature {
    /// The first argument's type, when the fn takes the context.
    pub context: Option<Type>,
    pub payload: Type,
    pub output: Type,
}

const SHAPES: &str =
    "`async fn name(job: Payload)` or `async fn name(ctx: jobq::Context, job: Payload)`";

/// Checks `sig`, reporting every problem at once.
pub fn check(sig: &Signature) -> syn::Result<TaskSignature> {
    let mut errors = Errors::default();

    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("`#[jobq::task]` functions must be `async`: {SHAPES}"),
        ));
    }
    if let Some(unsafety) = sig.unsafety {
        // The worker calls the fn from safe code; there is no caller to
        // uphold its contract.
        errors.push(syn::Error::new_spanned(
            unsafety,
            "`#[jobq::task]` functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "`#[jobq::task]` functions cannot declare an ABI",
        ));
    }
    // The worker decodes the payload by the type named in the fn, so that
    // type (and the fn's whole signature) must be concrete.
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "`#[jobq::task]` functions cannot have generic parameters: \
             the worker must know the concrete payload type",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "`#[jobq::task]` functions cannot have a `where` clause",
        ));
    }

    let mut typed = Vec::new();
    let mut has_receiver = false;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                has_receiver = true;
                errors.push(syn::Error::new_spanned(
                    receiver,
                    format!(
                        "`#[jobq::task]` functions cannot take `self`: \
                         a task is a free function, {SHAPES}"
                    ),
                ));
            }
            FnArg::Typed(arg) => typed.push(arg),
        }
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "`#[jobq::task]` functions cannot be variadic",
        ));
    }

    let (context, payload) = match typed.as_slice() {
        [] => {
            // With a receiver, its own error already says what is wrong.
            if !has_receiver {
                errors.push(syn::Error::new(
                    sig.paren_token.span.join(),
                    format!("a task function takes its payload as an argument: {SHAPES}"),
                ));
            }
            (None, None)
        }
        [payload] => (None, Some(&*payload.ty)),
        [context, payload, extra @ ..] => {
            if !extra.is_empty() {
                let extra: TokenStream = extra.iter().map(ToTokens::to_token_stream).collect();
                errors.push(syn::Error::new_spanned(
                    extra,
                    format!(
                        "a task function takes at most two arguments, \
                         the context and the payload: {SHAPES}"
                    ),
                ));
            }
            if !is_context(&context.ty) {
                errors.push(syn::Error::new_spanned(
                    &context.ty,
                    "the first of two arguments must be `jobq::Context`",
                ));
            }
            (Some(&*context.ty), Some(&*payload.ty))
        }
    };
    if let Some(payload) = payload {
        check_payload(payload, &mut errors);
    }

    let output = match &sig.output {
        ReturnType::Type(_, output) => Some(&**output),
        ReturnType::Default => {
            errors.push(syn::Error::new_spanned(
                &sig.ident,
                format!(
                    "`{}` has no return type: task functions return \
                     `Result<(), jobq::TaskError>`",
                    sig.ident
                ),
            ));
            None
        }
    };

    if let Some(error) = errors.finish() {
        return Err(error);
    }
    match (payload, output) {
        (Some(payload), Some(output)) => Ok(TaskSignature {
            context: context.cloned(),
            payload: payload.clone(),
            output: output.clone(),
        }),
        _ => unreachable!("a missing payload or return type is reported above"),
    }
}

/// Matches on the last path segment only: the context may be named through
/// any import (`Context`, `jobq::Context`, `::jobq::Context`), and a wrong
/// type that merely shares the name still fails type-checking at its span.
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Context"),
        Type::Group(group) => is_context(&group.elem),
        Type::Paren(paren) => is_context(&paren.elem),
        _ => false,
    }
}

/// The payload is decoded fresh for each attempt and moved into the fn, so
/// it must be an owned, nameable type; catching the common mistakes here
/// gives a clearer message than the trait errors they would cause.
fn check_payload(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => errors.push(syn::Error::new_spanned(
            reference,
            format!(
                "the payload is passed by value: take `{}` instead of a reference",
                reference.elem.to_token_stream()
            ),
        )),
        Type::ImplTrait(_) | Type::Infer(_) => errors.push(syn::Error::new_spanned(
            ty,
            "the payload must be a concrete type that implements \
             `serde::Serialize` and `serde::Deserialize`",
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn messages(item: TokenStream) -> Vec<String> {
        let item: syn::ItemFn = syn::parse2(item).unwrap();
        let Err(error) = check(&item.sig) else {
            panic!("expected an error");
        };
        error.into_iter().map(|error| error.to_string()).collect()
    }

    fn valid(item: TokenStream) -> TaskSignature {
        let item: syn::ItemFn = syn::parse2(item).unwrap();
        match check(&item.sig) {
            Ok(sig) => sig,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    #[test]
    fn one_argument_is_the_payload() {
        let sig = valid(quote!(
            async fn f(job: Welcome) -> Result<(), TaskError> {}
        ));
        assert!(sig.context.is_none());
        assert_eq!(sig.payload.to_token_stream().to_string(), "Welcome");
        assert_eq!(
            sig.output.to_token_stream().to_string(),
            "Result < () , TaskError >"
        );
    }

    #[test]
    fn two_arguments_are_context_and_payload() {
        for context in [
            quote!(Context),
            quote!(jobq::Context),
            quote!(::jobq::Context),
        ] {
            let sig = valid(quote!(
                async fn f(ctx: #context, job: Report) -> Result<(), TaskError> {}
            ));
            assert!(sig.context.is_some());
            assert_eq!(sig.payload.to_token_stream().to_string(), "Report");
        }
    }

    #[test]
    fn first_of_two_must_be_context() {
        assert_eq!(
            messages(quote!(
                async fn f(a: Welcome, b: Report) -> R {}
            )),
            ["the first of two arguments must be `jobq::Context`"]
        );
        assert_eq!(
            messages(quote!(
                async fn f(ctx: &Context, b: Report) -> R {}
            )),
            ["the first of two arguments must be `jobq::Context`"]
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                quote!(
                    fn f(job: W) -> R {}
                ),
                "`#[jobq::task]` functions must be `async`",
            ),
            (
                quote!(
                    async unsafe fn f(job: W) -> R {}
                ),
                "cannot be `unsafe`",
            ),
            (
                quote!(
                    async fn f() -> R {}
                ),
                "a task function takes its payload as an argument",
            ),
            (
                quote!(
                    async fn f(ctx: Context, job: W, extra: u8) -> R {}
                ),
                "at most two arguments",
            ),
            (
                quote!(
                    async fn f(&self, job: W) -> R {}
                ),
                "cannot take `self`",
            ),
            (
                quote!(
                    async fn f<T>(job: T) -> R {}
                ),
                "generic parameters",
            ),
            (
                quote!(
                    async fn f(job: W) -> R
                    where
                        W: Copy,
                    {
                    }
                ),
                "`where` clause",
            ),
            (
                quote!(
                    async fn f(job: W) {}
                ),
                "`f` has no return type",
            ),
            (
                quote!(
                    async fn f(job: &W) -> R {}
                ),
                "take `W` instead",
            ),
            (
                quote!(
                    async fn f(job: impl Tr) -> R {}
                ),
                "concrete type",
            ),
        ];
        for (item, expected) in cases {
            let messages = messages(item);
            assert_eq!(messages.len(), 1, "{messages:?}");
            assert!(messages[0].contains(expected), "{messages:?}");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let messages = messages(quote!(
            fn f<T>(self, a: u8, b: u8, c: u8) {}
        ));
        assert_eq!(messages.len(), 6, "{messages:?}");
    }
}
