//! Handler state: values registered on the builder reach task functions as
//! `State<T>` arguments or through `Context::state`, and a worker missing a
//! state one of its tasks takes refuses to build.
//!
//! Every worker of this binary serves every task below, so each one is
//! given a `Counter`, a `Greeting` and a `Log` (the test of the refusal
//! leaves one out).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobq::{Context, JobState, State, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Visit {
    name: String,
    count: usize,
}

/// Shared between the test and the handlers: the state is an `Arc`, and
/// each attempt's clone points at the same counter.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

#[derive(Clone)]
struct Greeting(&'static str);

/// What the handlers saw, for the test to read.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A state type nobody registers.
#[derive(Clone)]
struct Unregistered;

#[jobq::task(name = "state.count")]
async fn count(State(counter): State<Counter>, job: Visit) -> Result<(), TaskError> {
    counter.0.fetch_add(job.count, Ordering::SeqCst);
    Ok(())
}

#[jobq::task(name = "state.greet")]
async fn greet(
    greeting: State<Greeting>,
    ctx: Context,
    State(log): State<Log>,
    job: Visit,
) -> Result<(), TaskError> {
    // `State` derefs to the value.
    let Greeting(text) = &*greeting;
    log.push(format!("{text}, {} (attempt {})", job.name, ctx.attempt()));
    Ok(())
}

#[jobq::task(name = "state.lookup")]
async fn lookup(ctx: Context, job: Visit) -> Result<(), TaskError> {
    let Some(log) = ctx.state::<Log>() else {
        return Err(TaskError::permanent(std::io::Error::other("no Log")));
    };
    log.push(format!(
        "{}: greeting {:?}, unregistered found: {}",
        job.name,
        ctx.state::<Greeting>().map(|g| g.0),
        ctx.state::<Unregistered>().is_some()
    ));
    Ok(())
}

fn visit(name: &str, count: usize) -> Visit {
    Visit {
        name: name.into(),
        count,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_gets_the_state_the_worker_was_given() {
    let env = support::env().await;
    let counter = Counter::default();
    let handle = env
        .worker()
        .state(counter.clone())
        .state(Greeting("hello"))
        .state(Log::default())
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let ids = count::enqueue_many(&mut conn, &[visit("a", 5), visit("b", 7)])
        .await
        .unwrap();
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
    assert_eq!(counter.0.load(Ordering::SeqCst), 12);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_states_and_the_context_in_one_handler_and_the_last_value_of_a_type_wins() {
    let env = support::env().await;
    let log = Log::default();
    let handle = env
        .worker()
        .state(Counter::default())
        .state(Greeting("replaced"))
        .state(log.clone())
        .state(Greeting("hello"))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let id = greet::enqueue(&mut conn, &visit("ada", 1)).await.unwrap();
    env.wait_state(id, JobState::Completed).await;
    assert_eq!(log.lines(), ["hello, ada (attempt 1)"]);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctx_state_finds_registered_values_and_only_those() {
    let env = support::env().await;
    let log = Log::default();
    let handle = env
        .worker()
        .state(Counter::default())
        .state(Greeting("hi"))
        .state(log.clone())
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let id = lookup::enqueue(&mut conn, &visit("grace", 1))
        .await
        .unwrap();
    env.wait_state(id, JobState::Completed).await;
    assert_eq!(
        log.lines(),
        ["grace: greeting Some(\"hi\"), unregistered found: false"]
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_missing_a_state_a_task_takes_is_refused_at_build() {
    support::init_tracing();
    // Nothing listens on port 1: were the state not checked before
    // connecting, the error would be a connection error instead.
    let result = jobq::Worker::builder()
        .database_url("postgres://jobq@127.0.0.1:1/nothing")
        .connect_timeout(Duration::ZERO)
        .state(Counter::default())
        .state(Log::default())
        .build()
        .await;
    let error = match result {
        Ok(_) => panic!("a worker without a Greeting was built"),
        Err(error) => error,
    };
    let message = error.to_string();
    match error {
        jobq::Error::MissingState {
            task,
            site,
            type_name,
        } => {
            assert_eq!(task, "state.greet");
            assert!(site.contains("state.rs:"), "{site}");
            assert!(type_name.ends_with("::Greeting"), "{type_name}");
            for part in [&task, &site, type_name] {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
            assert!(message.contains(".state("), "{message}");
        }
        other => panic!("expected MissingState, got {other:?}"),
    }
}
