use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jobq::{Context, State};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[derive(Clone)]
struct Mailer {
    from: &'static str,
}

#[jobq::task]
async fn send_welcome(State(mailer): State<Mailer>, job: Welcome) -> Result<(), jobq::TaskError> {
    let _ = (mailer.from, job.user_id);
    Ok(())
}

// Several states, the context between them, paths and plain bindings.
#[jobq::task(name = "welcome.counted")]
async fn counted(
    counter: jobq::State<Arc<AtomicUsize>>,
    ctx: Context,
    State(mailer): ::jobq::State<Mailer>,
    _job: Welcome,
) -> Result<(), jobq::TaskError> {
    // `State` derefs to the value.
    counter.fetch_add(1, Ordering::Relaxed);
    let _ = (ctx.attempt(), mailer.from);
    Ok(())
}

// An application type called `State` is an ordinary payload.
#[derive(Serialize, Deserialize)]
enum Phase {
    Start,
}

#[derive(Serialize, Deserialize)]
struct StatePayload {
    phase: Phase,
}

mod app {
    pub type State = super::StatePayload;
}

#[jobq::task]
async fn advance(job: app::State) -> Result<(), jobq::TaskError> {
    let _ = job.phase;
    Ok(())
}

// The fns stay callable with their arguments as written (type-checked
// only: a `Context` comes from the worker).
#[allow(dead_code)]
fn call_directly(ctx: Context) {
    let counter = Arc::new(AtomicUsize::new(0));
    let _future = counted(
        State(Arc::clone(&counter)),
        ctx,
        State(Mailer { from: "a@b" }),
        Welcome { user_id: 1 },
    );
    let _future = send_welcome(State(Mailer { from: "a@b" }), Welcome { user_id: 2 });
    let _future = advance(StatePayload { phase: Phase::Start });
}

fn main() {
    // `State` derefs to its value both ways.
    let mut state = State(1u8);
    *state += 1;
    assert_eq!(*state, 2);
}
