//! The set of tasks linked into this binary, collected through `inventory`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use crate::state::{StateKey, States};
use crate::{Context, Error, Task, TaskError, TaskOptions};

/// The future of one attempt, as the dispatcher runs it: the task fn's
/// output as JSON text (`None` for `()`), checked to be storable.
pub type TaskFuture =
    Pin<Box<dyn Future<Output = Result<Option<String>, TaskError>> + Send + 'static>>;

/// Turns a claimed job's JSON payload into the attempt's future. Decoding
/// happens before the future exists so that a payload that no longer fits
/// the type fails permanently with serde's message.
pub type Handler = fn(Context, &str) -> Result<TaskFuture, serde_json::Error>;

/// What `#[jobq::task]` submits to the registry for each task.
#[derive(Debug)]
pub struct TaskDescriptor {
    pub(crate) name: &'static str,
    pub(crate) options: TaskOptions,
    pub(crate) handler: Handler,
    /// The types of the fn's `State<T>` arguments, checked against the
    /// worker's states when it is built. Functions because `TypeId::of`
    /// is not `const`.
    pub(crate) states: &'static [fn() -> StateKey],
    pub(crate) file: &'static str,
    pub(crate) line: u32,
    pub(crate) column: u32,
    /// The payload's type, to check at run time that a schedule's task
    /// takes a [`crate::Tick`].
    pub(crate) payload_type: fn() -> std::any::TypeId,
    /// The output's type and its name, to check what a handler gives
    /// [`Context::complete_in_with`].
    pub(crate) output_type: fn() -> std::any::TypeId,
    pub(crate) output_type_name: fn() -> &'static str,
}

impl TaskDescriptor {
    /// Describes task `T`, defined at `file:line:column`, whose fn takes
    /// the state types listed in `states`.
    pub const fn new<T: Task>(
        handler: Handler,
        states: &'static [fn() -> StateKey],
        file: &'static str,
        line: u32,
        column: u32,
    ) -> Self {
        Self {
            name: T::NAME,
            options: T::OPTIONS,
            handler,
            states,
            file,
            line,
            column,
            payload_type: std::any::TypeId::of::<T::Payload>,
            output_type: std::any::TypeId::of::<T::Output>,
            output_type_name: std::any::type_name::<T::Output>,
        }
    }

    /// Where the task is defined, as `file:line:column`.
    /// Whether the task's payload is [`crate::Tick`], as periodic tasks'
    /// is.
    pub(crate) fn takes_tick(&self) -> bool {
        (self.payload_type)() == std::any::TypeId::of::<crate::Tick>()
    }

    pub(crate) fn site(&self) -> String {
        format!("{}:{}:{}", self.file, self.line, self.column)
    }
}

inventory::collect!(TaskDescriptor);

/// Decodes a payload and starts the task function on it; called by the
/// handler that `#[jobq::task]` generates.
pub fn prepare<P, O, F, Fut>(
    task: &'static str,
    payload: &str,
    call: F,
) -> Result<TaskFuture, serde_json::Error>
where
    P: serde::de::DeserializeOwned,
    O: serde::Serialize + 'static,
    F: FnOnce(P) -> Fut,
    Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
{
    let job: P = serde_json::from_str(payload)?;
    let attempt = call(job);
    Ok(Box::pin(async move {
        let output = attempt.await?;
        crate::output::to_stored(task, &output)
    }))
}

/// The `T` of a task fn's `Result<T, E>`: what `#[jobq::task]` names as
/// the task's [`Task::Output`](crate::Task::Output). (A wrong error type
/// is reported by [`prepare`]'s bounds.)
pub trait TaskReturn {
    /// The success type.
    type Output;
}

impl<T, E> TaskReturn for Result<T, E> {
    type Output = T;
}

/// The tasks a worker can run, by name.
#[derive(Debug)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, &'static TaskDescriptor>,
}

impl Registry {
    /// Every task linked into the binary; refuses duplicate names, naming
    /// both definition sites.
    pub(crate) fn from_inventory() -> Result<Self, Error> {
        Self::from_descriptors(inventory::iter::<TaskDescriptor>)
    }

    pub(crate) fn from_descriptors(
        descriptors: impl IntoIterator<Item = &'static TaskDescriptor>,
    ) -> Result<Self, Error> {
        let mut tasks: HashMap<&'static str, &'static TaskDescriptor> = HashMap::new();
        for descriptor in descriptors {
            if let Some(previous) = tasks.insert(descriptor.name, descriptor) {
                // inventory's order is unspecified; sort the sites so the
                // message is the same on every run.
                let mut sites = [previous.site(), descriptor.site()];
                sites.sort();
                let [first, second] = sites;
                return Err(Error::DuplicateTask {
                    name: descriptor.name.to_owned(),
                    first,
                    second,
                });
            }
        }
        Ok(Self { tasks })
    }

    /// Refuses a worker whose tasks take a `State<T>` it was not given,
    /// naming the first such task (by name), its definition site and the
    /// type.
    pub(crate) fn check_states(&self, states: &States) -> Result<(), Error> {
        let mut tasks: Vec<&TaskDescriptor> = self.iter().collect();
        tasks.sort_by_key(|t| t.name);
        for task in tasks {
            for key in task.states.iter().map(|key| key()) {
                if !states.contains(key.id) {
                    return Err(Error::MissingState {
                        task: task.name.to_owned(),
                        site: task.site(),
                        type_name: key.name,
                    });
                }
            }
        }
        Ok(())
    }

    /// The same registry restricted to the tasks `names` (a worker told to
    /// serve some of the binary's tasks); refuses a name no task has,
    /// listing those there are.
    pub(crate) fn only(&self, names: &[String]) -> Result<Registry, Error> {
        let mut tasks = HashMap::new();
        for name in names {
            let Some((&key, &descriptor)) = self.tasks.get_key_value(name.as_str()) else {
                return Err(Error::invalid(
                    "tasks",
                    format!(
                        "no task named {name:?} is registered in this binary (registered: {})",
                        self.names().join(", ")
                    ),
                ));
            };
            tasks.insert(key, descriptor);
        }
        if tasks.is_empty() {
            return Err(Error::invalid(
                "tasks",
                "the list of tasks to serve is empty",
            ));
        }
        Ok(Registry { tasks })
    }

    /// The names of the tasks, sorted.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.tasks.keys().copied().collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'static TaskDescriptor> {
        self.tasks.get(name).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static TaskDescriptor> + '_ {
        self.tasks.values().copied()
    }
}
