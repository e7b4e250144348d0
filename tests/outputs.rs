//! Typed outputs: what a task fn returns is stored with its completed job,
//! shown in `JobInfo`, and read back typed; an output that cannot be
//! stored fails its attempt without holding up other outcomes.

mod support;

use jobq::{EnqueueOptions, JobState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resize {
    width: u32,
    /// Which output to return: "ok", "nan", "nul", "huge", "null", "fail".
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Thumbnail {
    path: String,
    bytes: u64,
    ratio: f64,
    tags: Vec<String>,
}

#[jobq::task(queue = "outputs", max_attempts = 3)]
async fn resize(job: Resize) -> Result<Thumbnail, jobq::TaskError> {
    let mut thumb = Thumbnail {
        path: format!("thumbs/{}.png", job.width),
        bytes: u64::from(job.width) * 10,
        ratio: 1.5,
        tags: vec!["ünïcode ✓".into(), "quote \" and \\ backslash".into()],
    };
    match job.kind.as_str() {
        "nan" => thumb.ratio = f64::NAN,
        "nul" => thumb.tags.push("a\0b".into()),
        "huge" => thumb.path = "x".repeat(jobq::MAX_OUTPUT_SIZE),
        "fail" => return Err(jobq::TaskError::msg("no luck")),
        _ => {}
    }
    Ok(thumb)
}

#[jobq::task(queue = "outputs")]
async fn maybe(job: Resize) -> Result<Option<u32>, jobq::TaskError> {
    Ok((job.kind != "null").then_some(job.width))
}

#[jobq::task(queue = "outputs")]
async fn nothing(job: Resize) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

fn resize_job(width: u32, kind: &str) -> Resize {
    Resize {
        width,
        kind: kind.into(),
    }
}

fn worker(env: &support::Env) -> jobq::WorkerBuilder {
    env.worker().queues(["outputs"])
}

#[tokio::test]
async fn an_output_round_trips_typed_and_shows_in_job_info() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = resize::enqueue(&mut conn, &resize_job(64, "ok"))
        .await
        .unwrap();
    // Not run yet: no output.
    assert_eq!(resize::output(&mut conn, id).await.unwrap(), None);
    assert_eq!(env.job(id).await.output, None);

    let handle = worker(&env).build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();

    let expected = Thumbnail {
        path: "thumbs/64.png".into(),
        bytes: 640,
        ratio: 1.5,
        tags: vec!["ünïcode ✓".into(), "quote \" and \\ backslash".into()],
    };
    assert_eq!(
        info.output,
        Some(serde_json::to_value(&expected).unwrap()),
        "JobInfo shows the output as JSON"
    );
    assert_eq!(
        resize::output(&mut conn, id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        jobq::output::<resize>(&mut conn, id).await.unwrap(),
        Some(expected)
    );
    // A job of another task is not read as this one's.
    let error = maybe::output(&mut conn, id).await.unwrap_err().to_string();
    assert!(error.contains("is a job of task \"resize\""), "{error}");
    // No such job: no output.
    assert_eq!(
        resize::output(&mut conn, jobq::JobId::from(i64::MAX))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn json_null_unit_and_failed_jobs_are_told_apart() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let some = maybe::enqueue(&mut conn, &resize_job(5, "ok"))
        .await
        .unwrap();
    let none = maybe::enqueue(&mut conn, &resize_job(5, "null"))
        .await
        .unwrap();
    let unit = nothing::enqueue(&mut conn, &resize_job(5, "ok"))
        .await
        .unwrap();
    let failed = resize::enqueue_with(
        &mut conn,
        &resize_job(5, "fail"),
        EnqueueOptions::new().max_attempts(1),
    )
    .await
    .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    for id in [some, none, unit] {
        env.wait_state(id, JobState::Completed).await;
    }
    let failed_info = env.wait_state(failed, JobState::Failed).await;
    handle.shutdown().await.unwrap();

    assert_eq!(maybe::output(&mut conn, some).await.unwrap(), Some(Some(5)));
    assert_eq!(maybe::output(&mut conn, none).await.unwrap(), Some(None));
    assert_eq!(env.job(none).await.output, Some(serde_json::Value::Null));
    assert_eq!(nothing::output(&mut conn, unit).await.unwrap(), None);
    assert_eq!(env.job(unit).await.output, None, "unit tasks store nothing");
    assert_eq!(failed_info.output, None);
    assert_eq!(resize::output(&mut conn, failed).await.unwrap(), None);
}

#[tokio::test]
async fn unstorable_outputs_fail_their_attempt_and_the_rest_of_the_batch_completes() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    // One statement, so one claim: the good and the bad outcomes come
    // back together.
    let kinds = ["ok", "nan", "ok", "nul", "ok", "huge", "ok"];
    let payloads: Vec<Resize> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| resize_job(i as u32, k))
        .collect();
    let ids = resize::enqueue_many(&mut conn, &payloads).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let mut infos = Vec::new();
    for id in &ids {
        infos.push(
            env.wait_job(*id, "finished", |j| j.state.is_terminal())
                .await,
        );
    }
    handle.shutdown().await.unwrap();

    for ((kind, info), width) in kinds.iter().zip(&infos).zip(0u32..) {
        if *kind == "ok" {
            assert_eq!(info.state, JobState::Completed, "{kind}: {info:#?}");
            let output = resize::output(&mut conn, info.id).await.unwrap().unwrap();
            assert_eq!(output.bytes, u64::from(width) * 10);
            continue;
        }
        // Failed for good, at the first attempt: running the handler again
        // would repeat its effects for the same unstorable output.
        assert_eq!(info.state, JobState::Failed, "{kind}: {info:#?}");
        assert_eq!(info.attempt, 1, "{kind}");
        assert_eq!(info.output, None, "{kind}");
        let message = &info.errors[0].message;
        assert!(
            message.contains("task resize: the handler succeeded but its output cannot be stored"),
            "{kind}: {message}"
        );
        let reason = match *kind {
            "nan" => "$.ratio is NaN",
            "nul" => "$.tags[2] contains the character U+0000",
            "huge" => "over the limit of 1048576 bytes",
            _ => unreachable!(),
        };
        assert!(message.contains(reason), "{kind}: {message}");
        assert!(message.len() < 2_000, "{kind}: the message is short");
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shape {
    kind: String,
}

/// Outputs of every class of content, built by the handler (a payload
/// could not carry some of them).
#[jobq::task(queue = "outputs")]
async fn shaped(job: Shape) -> Result<std::collections::BTreeMap<String, String>, jobq::TaskError> {
    let limit = jobq::MAX_OUTPUT_SIZE;
    // `{"k":"<value>"}` is the value plus 8 bytes.
    let (key, value) = match job.kind.as_str() {
        "controls" => ("k".to_owned(), "\u{1}\u{1b}[31m\r\n\t\u{7f}".to_owned()),
        "json-looking" => ("k".to_owned(), "{\"a\":1}\\\"".to_owned()),
        "unicode key" => ("ключ🔑\u{200b}".to_owned(), "鍵".to_owned()),
        "at the limit" => ("k".to_owned(), "x".repeat(limit - 8)),
        "nul in a key" => ("a\0b".to_owned(), "v".to_owned()),
        "one byte over" => ("k".to_owned(), "x".repeat(limit - 7)),
        other => return Err(jobq::TaskError::msg(format!("unknown kind {other}"))),
    };
    Ok([(key, value)].into_iter().collect())
}

#[tokio::test]
async fn every_class_of_output_round_trips_or_fails_clearly() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let stored = ["controls", "json-looking", "unicode key", "at the limit"];
    let refused = [
        ("nul in a key", "contains the character U+0000"),
        (
            "one byte over",
            "1048577 bytes, over the limit of 1048576 bytes",
        ),
    ];
    let kinds: Vec<Shape> = stored
        .iter()
        .chain(refused.iter().map(|(k, _)| k))
        .map(|k| Shape { kind: (*k).into() })
        .collect();
    let ids = shaped::enqueue_many(&mut conn, &kinds).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let mut infos = Vec::new();
    for id in &ids {
        infos.push(
            env.wait_job(*id, "finished", |j| j.state.is_terminal())
                .await,
        );
    }
    handle.shutdown().await.unwrap();
    for (kind, info) in stored.iter().zip(&infos) {
        assert_eq!(info.state, JobState::Completed, "{kind}: {:?}", info.errors);
        let output = shaped::output(&mut conn, info.id).await.unwrap().unwrap();
        let expected = shaped(Shape {
            kind: (*kind).into(),
        })
        .await
        .unwrap();
        assert_eq!(output, expected, "{kind}");
    }
    for ((kind, reason), info) in refused.iter().zip(&infos[stored.len()..]) {
        assert_eq!(info.state, JobState::Failed, "{kind}");
        assert_eq!(info.output, None, "{kind}");
        let message = &info.errors[0].message;
        assert!(
            message.contains("output cannot be stored"),
            "{kind}: {message}"
        );
        assert!(message.contains(reason), "{kind}: {message}");
    }
}
