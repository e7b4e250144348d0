//! The code `#[jobq::task]` generates next to the annotated fn.
//!
//! Generated code names the runtime only through `::jobq::...` paths, so the
//! user's crate needs no other dependency and no imports.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Item, ItemFn};

use crate::args::{self, TaskArgs};
use crate::errors::Errors;
use crate::signature::{self, Extractor, TaskSignature};

/// Expands `#[jobq::task(<attr>)] <item>`.
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => function,
        Ok(other) => {
            let error = syn::Error::new_spanned(
                &other,
                "`#[jobq::task]` goes on an `async fn`, e.g. \
                 `async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError>`",
            );
            return with_errors(item, Some(error));
        }
        // Hand the tokens back untouched: rustc's own parse error is better
        // than a second report of the same problem.
        Err(_) => return item,
    };

    let (args, args_error) = args::parse(attr);
    let mut errors = Errors::default();
    errors.extend(args_error);
    match signature::check(&function.sig) {
        Ok(sig) => {
            // Bad arguments still expand, without them: the task type exists,
            // so code using `send_welcome::enqueue` reports nothing extra.
            with_errors(generate(&function, &args, &sig), errors.finish())
        }
        Err(error) => {
            // Without a valid signature there is no payload type to build the
            // task from; keep the fn so calls to it still resolve.
            errors.push(error);
            with_errors(quote!(#function), errors.finish())
        }
    }
}

fn with_errors(mut tokens: TokenStream, errors: Option<syn::Error>) -> TokenStream {
    if let Some(errors) = errors {
        tokens.extend(errors.to_compile_error());
    }
    tokens
}

fn generate(function: &ItemFn, args: &TaskArgs, sig: &TaskSignature) -> TokenStream {
    let vis = &function.vis;
    let ident = &function.sig.ident;
    let fn_name = ident.unraw().to_string();
    let name = args
        .name
        .as_ref()
        .map_or_else(|| fn_name.clone(), |name| name.value.clone());
    // A task fn under `#[cfg(...)]` must take its generated items with it.
    let cfgs: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect();
    let payload = &sig.payload;
    let options = options(args);

    let struct_doc = format!(
        "The jobq task `{name}`, run by the function `{fn_name}`.\n\n\
         Enqueue a job with `{fn_name}::enqueue` (or `enqueue_with`, `enqueue_unique`, `enqueue_many`, `enqueue_many_with`); \
         read a completed job's output with `{fn_name}::output`; \
         the name, payload type and options are on its `jobq::Task` implementation."
    );

    // Mixed-site locals cannot collide with the user's fn name (a task fn
    // called `job` or `payload` must still work) while still reading well in
    // rustdoc. Where a type error can occur, they are located at the user's
    // type so that the caret lands in the user's code.
    let conn = local("conn", Span::call_site());
    let payload_arg = local("payload", Span::call_site());
    let payloads = local("payloads", Span::call_site());
    let enqueue_options = local("options", Span::call_site());
    let job_id = local("id", Span::call_site());
    let waiter = local("waiter", Span::call_site());
    let timeout = local("timeout", Span::call_site());
    let context_span = sig
        .extractors
        .iter()
        .find_map(|e| match e {
            Extractor::Context(ty) => Some(ty.span()),
            Extractor::State(_) => None,
        })
        .unwrap_or_else(Span::call_site);
    let ctx = local("ctx", context_span);
    let job = local("job", payload.span());

    // Each `State<T>` argument is taken from the context before the call,
    // through `StateArg`, so that a type that is not `jobq::State<T>` (or a
    // `T` that is not `Clone + Send + Sync`) is reported at the argument.
    let mut call_args = Vec::new();
    let mut extract_states = Vec::new();
    let mut state_keys = Vec::new();
    for (i, extractor) in sig.extractors.iter().enumerate() {
        match extractor {
            Extractor::Context(_) => call_args.push(quote!(#ctx)),
            Extractor::State(ty) => {
                let value = local(&format!("state{i}"), ty.span());
                extract_states.push(quote_spanned! {ty.span()=>
                    let #value = match <#ty as ::jobq::__private::StateArg>::from_context(&#ctx) {
                        ::core::result::Result::Ok(#value) => #value,
                        ::core::result::Result::Err(fail) => return ::core::result::Result::Ok(fail),
                    };
                });
                state_keys.push(quote_spanned! {ty.span()=>
                    <#ty as ::jobq::__private::StateArg>::key
                });
                call_args.push(quote!(#value));
            }
        }
    }
    call_args.push(quote!(#job));
    let call = quote!(#ident(#(#call_args),*));
    let ignore_ctx = if sig
        .extractors
        .iter()
        .any(|e| matches!(e, Extractor::Context(_)))
    {
        quote!()
    } else {
        quote!(let _ = #ctx;)
    };
    // The bounds on `prepare` (the output type, a `Send + 'static` future)
    // are what a wrong task fn violates; rustc reports them at the callee's
    // name, so give it the return type's span to land in the user's code.
    let prepare = quote_spanned! {sig.output.span()=>
        ::jobq::__private::prepare::<#payload, _, _, _>(#name, #payload_arg, move |#job| #call)
    };
    // `Task::Payload` carries the serde bounds; a payload type without them
    // is reported at the payload type.
    let payload_assoc = quote_spanned! {payload.span()=> type Payload = #payload;};
    // The success type of the fn's `Result<T, E>`, through a trait so that
    // type aliases of `Result` work too; a `T` without the serde bounds is
    // reported at the return type.
    let output_ty = &sig.output;
    let output_assoc = quote_spanned! {sig.output.span()=>
        type Output = <#output_ty as ::jobq::__private::TaskReturn>::Output;
    };
    // `line!()` spanned at the fn name gives the fn's own line for the
    // duplicate-name error, not the attribute's.
    let site = quote_spanned! {ident.span()=>
        ::core::file!(), ::core::line!(), ::core::column!()
    };
    // A periodic task's jobs carry a `jobq::Tick`; any other payload type
    // is reported at the payload.
    let cron_payload = if args.cron.is_some() {
        quote_spanned! {payload.span()=>
            #[allow(dead_code)]
            fn __jobq_cron_payload() {
                ::jobq::__private::cron_payload::<#payload>();
            }
        }
    } else {
        quote!()
    };

    quote! {
        #function

        #(#cfgs)*
        #[doc = #struct_doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        // Braced, so it lives in the type namespace only and the fn of the
        // same name stays callable.
        #vis struct #ident {}

        #(#cfgs)*
        impl ::jobq::Task for #ident {
            #payload_assoc
            #output_assoc
            const NAME: &'static str = #name;
            const OPTIONS: ::jobq::TaskOptions = #options;
        }

        #(#cfgs)*
        impl #ident {
            /// Enqueues one job on `conn`. It commits or rolls back with the
            /// caller's transaction, if `conn` is in one.
            #[allow(dead_code)]
            #vis async fn enqueue(
                #conn: &mut ::jobq::__private::AsyncPgConnection,
                #payload_arg: &#payload,
            ) -> ::core::result::Result<::jobq::JobId, ::jobq::Error> {
                ::jobq::__private::enqueue::<Self>(#conn, #payload_arg).await
            }

            /// Enqueues one job on `conn` with per-job options (queue,
            /// priority, run time, ...) that override the task's.
            #[allow(dead_code)]
            #vis async fn enqueue_with(
                #conn: &mut ::jobq::__private::AsyncPgConnection,
                #payload_arg: &#payload,
                #enqueue_options: ::jobq::EnqueueOptions,
            ) -> ::core::result::Result<::jobq::JobId, ::jobq::Error> {
                ::jobq::__private::enqueue_with::<Self>(#conn, #payload_arg, #enqueue_options).await
            }

            /// Submits one job idempotently under the unique key of
            /// `options` (`EnqueueOptions::unique_key`): creates it unless a
            /// job of this task holds the key, and returns the id of the
            /// job holding it, with whether this call created it.
            #[allow(dead_code)]
            #vis async fn enqueue_unique(
                #conn: &mut ::jobq::__private::AsyncPgConnection,
                #payload_arg: &#payload,
                #enqueue_options: ::jobq::EnqueueOptions,
            ) -> ::core::result::Result<::jobq::Enqueued, ::jobq::Error> {
                ::jobq::__private::enqueue_unique::<Self>(#conn, #payload_arg, #enqueue_options).await
            }

            /// The output of job `id` of this task, decoded: `None` until
            /// the job completed (or if it does not exist).
            #[allow(dead_code)]
            #vis async fn output(
                #conn: &mut ::jobq::__private::AsyncPgConnection,
                #job_id: ::jobq::JobId,
            ) -> ::core::result::Result<
                ::core::option::Option<<Self as ::jobq::Task>::Output>,
                ::jobq::Error,
            > {
                ::jobq::__private::output::<Self>(#conn, #job_id).await
            }

            /// Waits until job `id` of this task finishes, for at most
            /// `timeout`: its output when it completed, else why not
            /// (failed, cancelled, timed out, no such job).
            #[allow(dead_code)]
            #vis async fn wait(
                #waiter: &::jobq::Waiter,
                #job_id: ::jobq::JobId,
                #timeout: ::core::time::Duration,
            ) -> ::core::result::Result<<Self as ::jobq::Task>::Output, ::jobq::WaitError> {
                ::jobq::__private::wait::<Self>(#waiter, #job_id, #timeout).await
            }

            /// Enqueues one job per payload on `conn` in a single statement,
            /// returning their ids in the payloads' order.
            #[allow(dead_code)]
            #vis async fn enqueue_many(
                #conn: &mut ::jobq::__private::AsyncPgConnection,
                #payloads: &[#payload],
            ) -> ::core::result::Result<::std::vec::Vec<::jobq::JobId>, ::jobq::Error> {
                ::jobq::__private::enqueue_many::<Self>(#conn, #payloads).await
            }

            /// Enqueues one job per payload on `conn` in a single statement,
            /// all with the same per-job options (a dedupe key is refused),
            /// returning their ids in the payloads' order.
            #[allow(dead_code)]
            #vis async fn enqueue_many_with(
                #conn: &mut ::jobq::__private::AsyncPgConnection,
                #payloads: &[#payload],
                #enqueue_options: ::jobq::EnqueueOptions,
            ) -> ::core::result::Result<::std::vec::Vec<::jobq::JobId>, ::jobq::Error> {
                ::jobq::__private::enqueue_many_with::<Self>(#conn, #payloads, #enqueue_options).await
            }
        }

        #(#cfgs)*
        const _: () = {
            #cron_payload

            fn __jobq_handler(
                #ctx: ::jobq::Context,
                #payload_arg: &str,
            ) -> ::core::result::Result<
                ::jobq::__private::TaskFuture,
                ::jobq::__private::serde_json::Error,
            > {
                #(#extract_states)*
                #ignore_ctx
                #prepare
            }

            // A const, so that the slice is 'static inside `submit!`.
            const __JOBQ_STATES: &[fn() -> ::jobq::__private::StateKey] = &[#(#state_keys),*];

            ::jobq::__private::inventory::submit! {
                ::jobq::__private::TaskDescriptor::new::<#ident>(__jobq_handler, __JOBQ_STATES, #site)
            }
        };
    }
}

fn local(name: &str, location: Span) -> Ident {
    Ident::new(name, Span::mixed_site().located_at(location))
}

/// The `TaskOptions` builder chain, with only the options that were given:
/// the defaults live in the runtime, in one place.
fn options(args: &TaskArgs) -> TokenStream {
    let mut chain = quote!(::jobq::TaskOptions::new());
    if let Some(queue) = &args.queue {
        let value = &queue.value;
        chain = quote_spanned!(queue.span=> #chain.queue(#value));
    }
    if let Some(concurrency) = &args.concurrency {
        let value = concurrency.value;
        chain = quote_spanned!(concurrency.span=> #chain.concurrency(#value));
    }
    if let Some(retry) = &args.retry {
        let value = retry.value;
        chain = quote_spanned!(retry.span=>
            #chain.retry(::core::time::Duration::from_millis(#value)));
    }
    if let Some(max_attempts) = &args.max_attempts {
        let value = max_attempts.value;
        chain = quote_spanned!(max_attempts.span=> #chain.max_attempts(#value));
    }
    if let Some(timeout) = &args.timeout {
        let value = timeout.value;
        chain = quote_spanned!(timeout.span=>
            #chain.timeout(::core::time::Duration::from_millis(#value)));
    }
    if let Some(priority) = &args.priority {
        let value = priority.value;
        chain = quote_spanned!(priority.span=> #chain.priority(#value));
    }
    if let Some(limit) = &args.global_concurrency {
        let value = limit.value;
        chain = quote_spanned!(limit.span=> #chain.global_concurrency(#value));
    }
    if let Some(limit) = &args.key_concurrency {
        let value = limit.value;
        chain = quote_spanned!(limit.span=> #chain.key_concurrency(#value));
    }
    let burst = args.burst.as_ref().map_or(0, |b| b.value);
    for (method, rate) in [("rate", &args.rate), ("key_rate", &args.key_rate)] {
        if let Some(rate) = rate {
            let method = Ident::new(method, rate.span);
            let (starts, per) = (rate.value.starts, rate.value.per_secs);
            chain = quote_spanned!(rate.span=>
                #chain.#method(::jobq::Rate::new(#starts, ::core::time::Duration::from_secs(#per))
                    .with_burst(#burst)));
        }
    }
    if let Some(cron) = &args.cron {
        let value = &cron.value;
        chain = quote_spanned!(cron.span=> #chain.cron(#value));
    }
    if let Some(timezone) = &args.timezone {
        let value = &timezone.value;
        chain = quote_spanned!(timezone.span=> #chain.timezone(#value));
    }
    if let Some(catch_up) = &args.catch_up {
        let value = catch_up.value;
        chain = quote_spanned!(catch_up.span=>
            #chain.catch_up(::core::time::Duration::from_millis(#value)));
    }
    if let Some(then) = &args.then {
        // Spanned at the path, so that a path that is not a task taking
        // `jobq::Finished` is reported there. The inline const makes the
        // reference 'static.
        let path = &then.value;
        chain = quote_spanned!(then.span=>
            #chain.then(const { &::jobq::__private::follow_up::<#path>() }));
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expansion as one whitespace-normalised string.
    fn expand(attr: TokenStream, item: TokenStream) -> String {
        task(attr, item).to_string()
    }

    #[test]
    fn one_argument_task() {
        let out = expand(
            quote!(concurrency = 4, retry = "30s"),
            quote!(
                /// Says hello.
                async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
                    Ok(())
                }
            ),
        );
        // The fn itself, docs included.
        assert!(
            out.contains("# [doc = r\" Says hello.\"] async fn send_welcome"),
            "{out}"
        );
        assert!(out.contains("struct send_welcome { }"), "{out}");
        assert!(
            out.contains("impl :: jobq :: Task for send_welcome"),
            "{out}"
        );
        assert!(out.contains("type Payload = Welcome ;"), "{out}");
        assert!(
            out.contains("const NAME : & 'static str = \"send_welcome\" ;"),
            "{out}"
        );
        assert!(
            out.contains(
                "const OPTIONS : :: jobq :: TaskOptions = :: jobq :: TaskOptions :: new () \
                 . concurrency (4u32) \
                 . retry (:: core :: time :: Duration :: from_millis (30000u64)) ;"
            ),
            "{out}"
        );
        assert!(out.contains("async fn enqueue (conn : & mut :: jobq :: __private :: AsyncPgConnection , payload : & Welcome"), "{out}");
        assert!(out.contains("payloads : & [Welcome]"), "{out}");
        assert!(
            out.contains("type Output = < Result < () , jobq :: TaskError > as :: jobq :: __private :: TaskReturn > :: Output ;"),
            "{out}"
        );
        assert!(out.contains("async fn enqueue_unique"), "{out}");
        assert!(
            out.contains(
                "-> :: core :: result :: Result < :: jobq :: Enqueued , :: jobq :: Error >"
            ),
            "{out}"
        );
        assert!(
            out.contains("async fn output (conn : & mut :: jobq :: __private :: AsyncPgConnection , id : :: jobq :: JobId ,)"),
            "{out}"
        );
        assert!(
            out.contains("async fn wait (waiter : & :: jobq :: Waiter , id : :: jobq :: JobId , timeout : :: core :: time :: Duration ,)"),
            "{out}"
        );
        assert!(out.contains("let _ = ctx ;"), "{out}");
        assert!(
            out.contains(
                "prepare :: < Welcome , _ , _ , _ > (\"send_welcome\" , payload , move | job | send_welcome (job))"
            ),
            "{out}"
        );
        assert!(
            out.contains("TaskDescriptor :: new :: < send_welcome > (__jobq_handler"),
            "{out}"
        );
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn two_argument_task_with_every_option() {
        let out = expand(
            quote!(
                name = "reports.nightly",
                queue = "reports",
                max_attempts = 3,
                timeout = "5m",
                priority = -5
            ),
            quote!(
                pub async fn nightly(
                    ctx: jobq::Context,
                    job: Report,
                ) -> Result<(), jobq::TaskError> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains("pub struct nightly { }"), "{out}");
        assert!(out.contains("\"reports.nightly\""), "{out}");
        assert!(
            out.contains(
                ":: jobq :: TaskOptions :: new () . queue (\"reports\") . max_attempts (3u32) \
                 . timeout (:: core :: time :: Duration :: from_millis (300000u64)) \
                 . priority (- 5i16)"
            ) || out.contains(". priority (-5i16)"),
            "{out}"
        );
        assert!(out.contains("pub async fn enqueue_with"), "{out}");
        assert!(out.contains("move | job | nightly (ctx , job)"), "{out}");
        assert!(!out.contains("let _ = ctx"), "{out}");
    }

    #[test]
    fn state_arguments_are_extracted_and_listed() {
        let out = expand(
            quote!(),
            quote!(
                async fn send(
                    State(mailer): State<Mailer>,
                    ctx: jobq::Context,
                    db: jobq::State<Db>,
                    job: Welcome,
                ) -> Result<(), jobq::TaskError> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains("let state0 = match < State < Mailer > as :: jobq :: __private :: StateArg > :: from_context (& ctx)"),
            "{out}"
        );
        assert!(
            out.contains("let state2 = match < jobq :: State < Db > as :: jobq :: __private :: StateArg > :: from_context (& ctx)"),
            "{out}"
        );
        assert!(
            out.contains(
                "const __JOBQ_STATES : & [fn () -> :: jobq :: __private :: StateKey] = \
                 & [< State < Mailer > as :: jobq :: __private :: StateArg > :: key , \
                 < jobq :: State < Db > as :: jobq :: __private :: StateArg > :: key] ;"
            ),
            "{out}"
        );
        assert!(
            out.contains("move | job | send (state0 , ctx , state2 , job)"),
            "{out}"
        );
        assert!(!out.contains("let _ = ctx"), "{out}");
        assert!(
            out.contains("TaskDescriptor :: new :: < send > (__jobq_handler , __JOBQ_STATES ,"),
            "{out}"
        );
        assert!(out.contains("async fn enqueue_many_with"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn no_options_and_a_raw_ident() {
        let out = expand(
            quote!(),
            quote!(
                async fn r#type(job: W) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains("const NAME : & 'static str = \"type\" ;"),
            "{out}"
        );
        assert!(
            out.contains("= :: jobq :: TaskOptions :: new () ;"),
            "{out}"
        );
    }

    #[test]
    fn cfg_attributes_follow_the_fn() {
        let out = expand(
            quote!(),
            quote!(
                #[cfg(feature = "x")]
                async fn f(job: W) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(out.matches("# [cfg (feature = \"x\")]").count(), 5, "{out}");
    }

    #[test]
    fn bad_arguments_still_expand_the_task() {
        let out = expand(
            quote!(concurrency = 0, queue = "q"),
            quote!(
                async fn f(job: W) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains("impl :: jobq :: Task for f"), "{out}");
        assert!(out.contains(". queue (\"q\")"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
    }

    #[test]
    fn a_bad_signature_keeps_only_the_fn() {
        let out = expand(
            quote!(bogus = 1),
            quote!(
                fn f(job: W) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.starts_with("fn f (job : W)"), "{out}");
        assert!(!out.contains("Task for"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
    }

    #[test]
    fn not_a_fn() {
        let out = expand(
            quote!(),
            quote!(
                struct S;
            ),
        );
        assert!(out.contains("goes on an `async fn`"), "{out}");
    }

    #[test]
    fn a_periodic_task_checks_its_payload_and_carries_its_schedule() {
        let out = expand(
            quote!(
                cron = "0 */5 * * * *",
                timezone = "Europe/Berlin",
                catch_up = "1h"
            ),
            quote!(
                async fn refresh(job: jobq::Tick) -> Result<(), jobq::TaskError> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains(
                ":: jobq :: TaskOptions :: new () . cron (\"0 */5 * * * *\") \
                 . timezone (\"Europe/Berlin\") \
                 . catch_up (:: core :: time :: Duration :: from_millis (3600000u64))"
            ),
            "{out}"
        );
        assert!(
            out.contains(":: jobq :: __private :: cron_payload :: < jobq :: Tick > ()"),
            "{out}"
        );
        assert!(!out.contains("compile_error"), "{out}");
        // Tasks without a schedule get no payload check.
        let out = expand(
            quote!(),
            quote!(
                async fn f(job: W) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(!out.contains("cron_payload"), "{out}");
    }

    #[test]
    fn a_follow_up_is_checked_at_its_path_and_carried_in_the_options() {
        let out = expand(
            quote!(then = callbacks::notify_client, queue = "payments"),
            quote!(
                async fn charge(job: Charge) -> Result<(), jobq::TaskError> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains(
                ":: jobq :: TaskOptions :: new () . queue (\"payments\") \
                 . then (const { & :: jobq :: __private :: follow_up :: < callbacks :: notify_client > () })"
            ),
            "{out}"
        );
        assert!(!out.contains("compile_error"), "{out}");
    }
}
