//! TLS as libpq's `sslmode` and `sslrootcert` say, against private
//! servers with `ssl = on` whose certificates come from a throw-away CA
//! made here.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use jobq::{ConnectOptions, JobState};
use jobq_testkit::{PrivateServer, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------ certificates

/// A certificate authority of the test's own, its certificate in a file
/// (removed on drop) for `sslrootcert`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    file: PathBuf,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let file = std::env::temp_dir().join(format!(
            "jobq-tls-test-{}-{:016x}.crt",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&file, issuer.pem()).expect("writing the CA file");
        Ca { issuer, file }
    }

    /// A server certificate for these names, signed by this CA.
    fn server_cert(&self, names: &[&str]) -> ServerTls {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "jobq test server");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        ServerTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn path(&self) -> &Path {
        &self.file
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A private server with `ssl = on`, its certificate for `localhost` and
/// `127.0.0.1`, signed by `ca`.
async fn tls_server(ca: &Ca) -> PrivateServer {
    PrivateServer::start_with_tls(ca.server_cert(&["localhost", "127.0.0.1"]))
        .await
        .expect("private server with TLS")
}

// ----------------------------------------------------------------- helpers

/// `server`'s URL with these query parameters.
fn url(server: &PrivateServer, params: &str) -> String {
    format!("{}?{params}", server.url())
}

async fn connect(url: &str) -> Result<AsyncPgConnection, String> {
    let options = ConnectOptions::parse(url).map_err(|e| e.to_string())?;
    options.connect().await.map_err(|e| e.to_string())
}

#[derive(diesel::QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Whether this connection is encrypted, by the server's account.
async fn encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(conn)
        .await
        .expect("pg_stat_ssl")
        .ssl
}

async fn connects_encrypted(url: &str) -> bool {
    let mut conn = connect(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    encrypted(&mut conn).await
}

// ------------------------------------------------------------------- modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_connects_or_refuses_as_libpq_does() {
    support::init_tracing();
    let ca = Ca::new("jobq test CA");
    let other_ca = Ca::new("someone else's CA");
    let server = tls_server(&ca).await;
    let root = format!("sslrootcert={}", ca.path().display());
    let other_root = format!("sslrootcert={}", other_ca.path().display());

    // Encrypted, certificate unchecked.
    assert!(connects_encrypted(&url(&server, "sslmode=require")).await);
    // libpq's default is prefer: TLS when the server offers it.
    assert!(connects_encrypted(server.url()).await);
    assert!(connects_encrypted(&url(&server, "sslmode=prefer")).await);
    // Plain when told so.
    assert!(!connects_encrypted(&url(&server, "sslmode=disable")).await);

    // The right CA: by IP address and by host name.
    assert!(connects_encrypted(&url(&server, &format!("sslmode=verify-full&{root}"))).await);
    let by_name = server.url().replace("127.0.0.1", "localhost");
    assert!(connects_encrypted(&format!("{by_name}?sslmode=verify-full&{root}")).await);
    assert!(connects_encrypted(&url(&server, &format!("sslmode=verify-ca&{root}"))).await);

    // Another CA: refused, whatever the mode that checks, and the error
    // says what was checked against what.
    for mode in ["verify-full", "verify-ca", "require"] {
        let err = connect(&url(&server, &format!("sslmode={mode}&{other_root}")))
            .await
            .map(drop)
            .expect_err(mode);
        assert!(err.contains("invalid peer certificate"), "{mode}: {err}");
        assert!(err.contains(&other_root), "{mode}: {err}");
    }

    // A name the certificate does not carry (reaching the same server
    // through hostaddr): verify-full refuses, verify-ca does not look.
    let port = server.port();
    let elsewhere = format!(
        "host=db.jobq.invalid hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres"
    );
    let err = connect(&format!("{elsewhere} sslmode=verify-full {root}"))
        .await
        .map(drop)
        .expect_err("a name not in the certificate");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(connects_encrypted(&format!("{elsewhere} sslmode=verify-ca {root}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_goes_plain_and_require_refuses_a_server_without_tls() {
    support::init_tracing();
    let server = PrivateServer::start().await.expect("private server");
    assert!(!connects_encrypted(server.url()).await);
    assert!(!connects_encrypted(&url(&server, "sslmode=prefer")).await);

    // Refused at once: waiting does not give a server TLS.
    let started = Instant::now();
    let err = jobq::Worker::builder()
        .database_url(url(&server, "sslmode=require"))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect_err("the server has no TLS");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, jobq::Error::Connect { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(
        support_chain(&err).contains("server does not support TLS"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_build_at_once_and_clearly() {
    support::init_tracing();
    let ca = Ca::new("jobq test CA");
    let other_ca = Ca::new("someone else's CA");
    let server = tls_server(&ca).await;
    let started = Instant::now();
    let err = jobq::Worker::builder()
        .database_url(url(
            &server,
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                other_ca.path().display()
            ),
        ))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect_err("the certificate is not signed by that CA");
    // Not after the 30 s of retries meant for a database still starting.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, jobq::Error::Connect { attempts: 1, .. }),
        "{err:?}"
    );
    let chain = support_chain(&err);
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    assert!(chain.contains("sslmode=verify-full"), "{chain}");
    assert!(
        chain.contains(&other_ca.path().display().to_string()),
        "{chain}"
    );
}

/// The error and its sources on one line, as a user would print them.
fn support_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

// ------------------------------------------------------------------ worker

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Greeting {
    to: String,
}

#[jobq::task(queue = "tls")]
async fn greet_over_tls(job: Greeting) -> Result<(), jobq::TaskError> {
    assert!(!job.to.is_empty());
    Ok(())
}

#[derive(diesel::QueryableByName, Debug)]
struct Backend {
    #[diesel(sql_type = Text)]
    application_name: String,
    #[diesel(sql_type = Text)]
    query: String,
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_jobs_over_tls_on_every_connection_it_opens() {
    support::init_tracing();
    let ca = Ca::new("jobq test CA");
    let server = tls_server(&ca).await;
    let root = format!("sslrootcert={}", ca.path().display());
    let worker_url = url(&server, &format!("sslmode=verify-full&{root}"));
    let worker = || {
        jobq::Worker::builder()
            .database_url(&worker_url)
            .queues(&["tls"])
            // Only a notification can start a job in time.
            .poll_interval(Duration::from_secs(60))
            .shutdown_timeout(Duration::from_secs(5))
    };
    // One worker's listener is a dedicated connection of its pool...
    let pooled = worker().build().await.expect("worker over TLS").spawn();
    // ...the other's has a URL of its own, named so that it can be found.
    let listen_url = url(
        &server,
        &format!("sslmode=verify-full&{root}&application_name=jobq_listener"),
    );
    let own_url = worker()
        .listen_url(&listen_url)
        .build()
        .await
        .expect("worker over TLS, listener with its own URL")
        .spawn();

    let mut app = connect(&url(&server, "sslmode=disable&application_name=test"))
        .await
        .expect("test connection");
    // Both listeners are up once their LISTEN ran.
    let deadline = Instant::now() + support::SOON;
    loop {
        let listening: Vec<String> = backends(&mut app)
            .await
            .into_iter()
            .filter(|b| b.query.starts_with("LISTEN"))
            .map(|b| b.application_name)
            .collect();
        if listening.iter().any(|a| a == "jobq") && listening.iter().any(|a| a == "jobq_listener") {
            break;
        }
        assert!(Instant::now() < deadline, "listening: {listening:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = Vec::new();
    for n in 0..4 {
        let to = format!("tls {n}");
        ids.push(
            greet_over_tls::enqueue(&mut app, &Greeting { to })
                .await
                .expect("enqueue"),
        );
    }
    // Well before the 60 s poll: the notifications came over TLS.
    for id in ids {
        while !jobq::job(&mut app, id)
            .await
            .expect("job lookup")
            .is_some_and(|j| j.state == JobState::Completed)
        {
            assert!(Instant::now() < deadline, "job {id:?} did not complete");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let backends = backends(&mut app).await;
    assert!(
        backends
            .iter()
            .filter(|b| b.application_name == "jobq")
            .count()
            >= 3,
        "two pools and a listener: {backends:?}"
    );
    assert!(backends.iter().all(|b| b.ssl), "{backends:?}");
    pooled.shutdown().await.expect("clean shutdown");
    own_url.shutdown().await.expect("clean shutdown");
}

/// A connect hook with a rustls configuration of its own: the hook's
/// trust decides, not the URL's `sslmode=require` (which alone would
/// accept any certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_hook_can_bring_its_own_rustls_configuration() {
    support::init_tracing();
    let ca = Ca::new("jobq test CA");
    let other_ca = Ca::new("someone else's CA");
    let server = tls_server(&ca).await;
    let trusting = |ca: &Ca| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.issuer.der().clone())
            .expect("the CA certificate");
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    };
    let build = |tls: tokio_postgres_rustls::MakeRustlsConnect| {
        jobq::Worker::builder()
            .database_url(url(&server, "sslmode=require"))
            .queues(&["tls"])
            .connect_timeout(Duration::from_secs(30))
            .connect_with(move |options: ConnectOptions| {
                let tls = tls.clone();
                async move { options.connect_with_tls(tls).await }
            })
            .build()
    };
    let err = build(trusting(&other_ca))
        .await
        .expect_err("the hook trusts another CA");
    let chain = support_chain(&err);
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    assert!(
        matches!(err, jobq::Error::Connect { attempts: 1, .. }),
        "{err:?}"
    );
    build(trusting(&ca))
        .await
        .expect("the hook trusts the server's CA");
}

/// The server's backends opened by jobq (the pool's and the listener's).
async fn backends(conn: &mut AsyncPgConnection) -> Vec<Backend> {
    diesel::sql_query(
        "SELECT a.application_name, a.query, s.ssl \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name IN ('jobq', 'jobq_listener')",
    )
    .load(conn)
    .await
    .expect("pg_stat_activity")
}
