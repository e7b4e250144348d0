//! Application state for task functions: [`State<T>`], and the map of
//! values a worker was given with [`crate::WorkerBuilder::state`].
//!
//! The design follows axum's `State` extractor: values are registered once,
//! by type, on the builder; a task fn declares the types it needs as
//! `State<T>` arguments; and the worker refuses to build when one of them
//! is missing, so a misconfigured deployment fails at start-up rather than
//! on its first job.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::registry::TaskFuture;
use crate::{Context, TaskError};

/// A value of the application's, handed to a task function by type.
///
/// Register the value on the worker with
/// [`WorkerBuilder::state`](crate::WorkerBuilder::state), then take it as an
/// argument of the task fn, before the payload. Each attempt gets its own
/// clone, so wrap anything expensive or shared in an `Arc` (pools and HTTP
/// clients usually are one already).
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Welcome { user_id: i64 }
/// use jobq::State;
///
/// #[derive(Clone)]
/// struct Mailer { from: String }
///
/// #[jobq::task]
/// async fn send_welcome(State(mailer): State<Mailer>, job: Welcome) -> Result<(), jobq::TaskError> {
///     println!("{} welcomes user {}", mailer.from, job.user_id);
///     Ok(())
/// }
///
/// # async fn f() -> Result<(), jobq::Error> {
/// let worker = jobq::Worker::builder()
///     .state(Mailer { from: "hello@example.com".into() })
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
///
/// A worker that was not given a `Mailer` refuses to build, naming the
/// task, where it is defined and the missing type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct State<T>(pub T);

impl<T> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for State<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// One registered value, kept with its type's name for messages.
#[derive(Clone)]
struct Entry {
    type_name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

/// The values a worker was given, by type. Cloning shares them.
#[derive(Clone, Default)]
pub(crate) struct States(Arc<HashMap<TypeId, Entry>>);

impl States {
    /// Adds `value`, replacing an earlier value of the same type.
    pub(crate) fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.0).insert(
            TypeId::of::<T>(),
            Entry {
                type_name: std::any::type_name::<T>(),
                value: Arc::new(value),
            },
        );
    }

    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.value.downcast_ref()
    }

    pub(crate) fn contains(&self, id: TypeId) -> bool {
        self.0.contains_key(&id)
    }
}

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values need not be `Debug`, and may hold secrets: the types
        // say enough.
        let mut names: Vec<&str> = self.0.values().map(|e| e.type_name).collect();
        names.sort_unstable();
        f.debug_set().entries(names).finish()
    }
}

/// A state type a task needs: its id to look it up, its name for messages.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct StateKey {
    pub(crate) id: TypeId,
    pub(crate) name: &'static str,
}

/// What a task fn argument other than the context and the payload may be:
/// implemented by [`State<T>`] only. The code `#[jobq::task]` generates
/// names it as `<Type as StateArg>` at the argument's type (and nothing
/// else with a bound on it), so a wrong argument is reported once, there.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a task function",
    label = "not `jobq::Context`, `jobq::State<T>` or the payload",
    note = "a task fn takes `jobq::Context` and `jobq::State<T>` arguments (any number, any order), then the payload last"
)]
pub trait StateArg: Sized {
    /// The state type this argument needs from the worker.
    fn key() -> StateKey;

    /// This argument's value for one attempt. Without a value of its type
    /// (a worker checks every task's state types when it is built, so only
    /// a bug could get here), the attempt fails permanently with a
    /// message naming the task and the type, instead of a panic.
    fn from_context(ctx: &Context) -> Result<Self, TaskFuture>;
}

impl<T: Clone + Send + Sync + 'static> StateArg for State<T> {
    fn key() -> StateKey {
        StateKey {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }

    fn from_context(ctx: &Context) -> Result<Self, TaskFuture> {
        match ctx.state::<T>() {
            Some(value) => Ok(State(value.clone())),
            None => {
                let message = format!(
                    "task {}: the worker holds no state of type {}; register one with \
                     WorkerBuilder::state",
                    ctx.task(),
                    std::any::type_name::<T>()
                );
                Err(Box::pin(async move {
                    Err(TaskError::permanent(anyhow::Error::msg(message)))
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_type_and_replaced_by_type() {
        let mut states = States::default();
        states.insert(7u32);
        states.insert(String::from("first"));
        states.insert(String::from("second"));
        assert_eq!(states.get::<u32>(), Some(&7));
        assert_eq!(states.get::<String>().map(String::as_str), Some("second"));
        assert_eq!(states.get::<u64>(), None);
        assert!(states.contains(TypeId::of::<String>()));
        assert_eq!(format!("{states:?}"), r#"{"alloc::string::String", "u32"}"#);
    }

    #[test]
    fn a_clone_keeps_its_values_when_the_original_changes() {
        let mut states = States::default();
        states.insert(1u8);
        let shared = states.clone();
        states.insert(2u8);
        assert_eq!(shared.get::<u8>(), Some(&1));
        assert_eq!(states.get::<u8>(), Some(&2));
    }
}
