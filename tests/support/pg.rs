//! PostgreSQL for tests: a fresh schema of the test database per test, and a private server a
//! test may stop and start (the machine's own server is shared by every test and never touched).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The test database (`CORDON_TEST_DATABASE_URL`, set by scripts/test); a test that needs it
/// fails without it.
pub fn database_url() -> String {
    std::env::var("CORDON_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "CORDON_TEST_DATABASE_URL is not set: this test needs PostgreSQL \
             (scripts/test creates cordon_test on 127.0.0.1:5432 and sets it)"
        )
    })
}

/// A client of the database at `url`, its connection driven on the test's runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test database ({e}); is PostgreSQL up?"));
    tokio::spawn(connection);
    client
}

/// A fresh, empty schema in the test database: its name, and the URL whose sessions work in it
/// (their search_path is the schema, so every table a store makes and reads is there).
pub async fn named_schema() -> (String, String) {
    let base = database_url();
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    connect(&base)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let joiner = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{joiner}options=-csearch_path%3D{schema}");
    (schema, url)
}

/// The URL of a fresh schema in the test database.
pub async fn fresh_schema() -> String {
    named_schema().await.1
}

/// Drops a schema of the test database with everything in it.
pub async fn drop_schema(schema: &str) {
    let _ = connect(&database_url())
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

/// A PostgreSQL server of the test's own, on a free port of 127.0.0.1, in a temporary folder:
/// initialised with the machine's PostgreSQL binaries and run as the `postgres` user (the tests
/// run as root, which PostgreSQL refuses to run as). Stopped and removed when dropped.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                let mut all: Vec<PathBuf> = versions
                    .filter_map(|v| Some(v.ok()?.path().join("bin")))
                    .filter(|b| b.join("pg_ctl").exists())
                    .collect();
                all.sort();
                all.pop()
            })
            .expect("the PostgreSQL server binaries (/usr/lib/postgresql/*/bin/pg_ctl) are needed");
        let dir = tempfile::Builder::new()
            .prefix("cordon-pg-")
            .tempdir()
            .unwrap();
        let owner = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(owner.success(), "the folder could not be given to postgres");
        let port = super::free_port();
        let pg = PrivatePg { dir, bin, port };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        );
        pg.up();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs as the `postgres` user; panics with its output on failure.
    fn as_postgres(&self, program: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("runuser {program}: {e} (the tests must run as root)"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it takes connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once, as a crash would (`-m immediate`: no shutdown checkpoint,
    /// connections cut).
    pub fn down(&self) {
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data().display().to_string()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
