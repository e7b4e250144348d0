//! Checking the annotated fn: what a task function may look like, and which
//! argument is the context and which the payload.

use quote::ToTokens;
use syn::{FnArg, PathArguments, PathSegment, ReturnType, Signature, Type};

use crate::errors::Errors;

/// The parts of a valid task signature that the expansion needs.
pub struct TaskSignature {
    /// The arguments before the payload, in the order written.
    pub extractors: Vec<Extractor>,
    pub payload: Type,
    pub output: Type,
}

/// An argument before the payload: what the worker hands the fn besides
/// the job.
pub enum Extractor {
    /// `jobq::Context`, at most once.
    Context(Type),
    /// `jobq::State<T>`, any number of times; the type as written.
    State(Type),
}

const SHAPES: &str = "`async fn name(job: Payload)`, with any of `ctx: jobq::Context` (once) and \
     `State(value): jobq::State<T>` before the payload";

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

    // The payload is always the last argument: the one place a reader (and
    // the macro) looks for the job's type.
    let (payload, before) = match typed.split_last() {
        Some((payload, before)) => (Some(&*payload.ty), before),
        None => {
            // With a receiver, its own error already says what is wrong.
            if !has_receiver {
                errors.push(syn::Error::new(
                    sig.paren_token.span.join(),
                    format!("a task function takes its payload as its last argument: {SHAPES}"),
                ));
            }
            (None, &[][..])
        }
    };
    let mut extractors = Vec::new();
    let mut context_seen = false;
    for arg in before {
        let ty = &*arg.ty;
        if is_named(ty, "Context") {
            if context_seen {
                errors.push(syn::Error::new_spanned(
                    arg,
                    "a task function takes `jobq::Context` at most once",
                ));
            }
            context_seen = true;
            extractors.push(Extractor::Context(ty.clone()));
        } else if is_state(ty) {
            extractors.push(Extractor::State(ty.clone()));
        } else {
            errors.push(syn::Error::new_spanned(
                arg,
                format!(
                    "only `jobq::Context` and `jobq::State<T>` arguments may come \
                     before the payload, which is the last argument: {SHAPES}"
                ),
            ));
        }
    }
    if let Some(payload) =
        payload.filter(|payload| is_state(payload) || is_named(payload, "Context"))
    {
        errors.push(syn::Error::new_spanned(
            payload,
            format!(
                "the last argument is the payload, the job's data; `{}` goes before it: {SHAPES}",
                payload.to_token_stream()
            ),
        ));
    }
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
            extractors,
            payload: payload.clone(),
            output: output.clone(),
        }),
        _ => unreachable!("a missing payload or return type is reported above"),
    }
}

/// Matches on the last path segment only: the context and state types may
/// be named through any import (`Context`, `jobq::Context`,
/// `::jobq::Context`), and a wrong type that merely shares the name still
/// fails type-checking at its span.
fn last_segment(ty: &Type) -> Option<&PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

fn is_named(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|segment| segment.ident == name)
}

/// `State<T>`: with its type argument, so that a payload type of the
/// application's that happens to be called `State` stays a payload.
fn is_state(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|segment| {
        segment.ident == "State" && matches!(segment.arguments, PathArguments::AngleBracketed(_))
    })
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
    use proc_macro2::TokenStream;
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

    /// The extractors as `C` (context) and `S` (state) letters.
    fn shape(sig: &TaskSignature) -> String {
        sig.extractors
            .iter()
            .map(|e| match e {
                Extractor::Context(_) => 'C',
                Extractor::State(_) => 'S',
            })
            .collect()
    }

    #[test]
    fn one_argument_is_the_payload() {
        let sig = valid(quote!(
            async fn f(job: Welcome) -> Result<(), TaskError> {}
        ));
        assert!(sig.extractors.is_empty());
        assert_eq!(sig.payload.to_token_stream().to_string(), "Welcome");
        assert_eq!(
            sig.output.to_token_stream().to_string(),
            "Result < () , TaskError >"
        );
        // An application type that is called `State` is a payload like any.
        let sig = valid(quote!(
            async fn f(job: State) -> Result<(), TaskError> {}
        ));
        assert_eq!(sig.payload.to_token_stream().to_string(), "State");
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
            assert_eq!(shape(&sig), "C");
            assert_eq!(sig.payload.to_token_stream().to_string(), "Report");
        }
    }

    #[test]
    fn states_and_the_context_come_in_any_order_before_the_payload() {
        let sig = valid(quote!(
            async fn f(
                State(a): State<A>,
                ctx: jobq::Context,
                b: ::jobq::State<Arc<B>>,
                job: Report,
            ) -> Result<(), TaskError> {
            }
        ));
        assert_eq!(shape(&sig), "SCS");
        let Extractor::State(third) = &sig.extractors[2] else {
            panic!("the third argument is a state");
        };
        assert_eq!(
            third.to_token_stream().to_string(),
            ":: jobq :: State < Arc < B > >"
        );
        assert_eq!(sig.payload.to_token_stream().to_string(), "Report");
    }

    #[test]
    fn only_context_and_state_come_before_the_payload() {
        for item in [
            quote!(
                async fn f(a: Welcome, b: Report) -> R {}
            ),
            quote!(
                async fn f(ctx: &Context, b: Report) -> R {}
            ),
            quote!(
                async fn f(s: State, b: Report) -> R {}
            ),
        ] {
            let messages = messages(item);
            assert_eq!(messages.len(), 1, "{messages:?}");
            assert!(
                messages[0].starts_with(
                    "only `jobq::Context` and `jobq::State<T>` arguments may come before the payload"
                ),
                "{messages:?}"
            );
        }
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
                "a task function takes its payload as its last argument",
            ),
            (
                quote!(
                    async fn f(ctx: Context, job: W, extra: u8) -> R {}
                ),
                "only `jobq::Context` and `jobq::State<T>` arguments",
            ),
            (
                quote!(
                    async fn f(ctx: Context, c: jobq::Context, job: W) -> R {}
                ),
                "`jobq::Context` at most once",
            ),
            (
                quote!(
                    async fn f(job: W, s: State<M>) -> R {}
                ),
                "only `jobq::Context` and `jobq::State<T>` arguments",
            ),
            (
                quote!(
                    async fn f(s: State<M>) -> R {}
                ),
                "the last argument is the payload, the job's data; `State < M >` goes before it",
            ),
            (
                quote!(
                    async fn f(ctx: jobq::Context) -> R {}
                ),
                "the last argument is the payload",
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
            // A payload put first is also a wrong argument before the
            // payload: two messages there.
            assert!(
                messages.iter().any(|m| m.contains(expected)),
                "{expected:?} not in {messages:?}"
            );
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
