//! Stoplight Prism, the mock server the chat and ticket fakes send every request to so that it is
//! checked against the vendor's official API description (`../shared/fixtures/apis/`).
//!
//! Prism is a test peer like moto and PostgreSQL: `CORDON_TEST_PRISM` names its `prism` binary
//! (scripts/peers installs it and sets that, with `CORDON_TEST_PEERS=required`). A test that needs
//! Prism fails, saying what to do, when the variable is unset or Prism does not start: nothing
//! skips.
//!
//! [`Prism::shared`] runs one Prism per description for the whole test binary, started on first
//! use and ended with the test process; a start that failed fails every later test that asks,
//! with the same message.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long Prism may take to load a description (Discord's takes the longest).
const START_WITHIN: Duration = Duration::from_secs(180);

/// What Prism answers once it has checked a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answers {
    /// The description's examples (`prism mock`).
    Examples,
    /// Bodies generated from the description's schemas (`prism mock -d`).
    Dynamic,
}

/// A running Prism.
pub struct Prism {
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Prism {
    /// The test binary's Prism on `spec` (a path under the shared fixtures), started on first
    /// use.
    pub fn shared(spec: &str, answers: Answers) -> &'static Prism {
        type Cell = OnceLock<Result<Prism, String>>;
        static ALL: Mutex<BTreeMap<(String, Answers), &'static Cell>> = Mutex::new(BTreeMap::new());
        // The map is only held to find the cell, so descriptions start side by side.
        let cell: &'static Cell = ALL
            .lock()
            .unwrap()
            .entry((spec.to_owned(), answers))
            .or_insert_with(|| Box::leak(Box::default()));
        cell.get_or_init(|| Prism::launch(spec, answers))
            .as_ref()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch(spec: &str, answers: Answers) -> Result<Prism, String> {
        let bin = std::env::var("CORDON_TEST_PRISM").map_err(|_| {
            "CORDON_TEST_PRISM is not set: this test checks Cordon's calls against the vendor's \
             API description with Stoplight Prism, a required test peer. Run scripts/test, which \
             installs it, or install it with `npm install --prefix .tools/prism \
             @stoplight/prism-cli@5.14.2` and set \
             CORDON_TEST_PRISM=.tools/prism/node_modules/.bin/prism"
                .to_owned()
        })?;
        let port = super::free_port();
        let mut command = Command::new(&bin);
        command.arg("mock");
        if answers == Answers::Dynamic {
            command.arg("-d");
        }
        command
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .arg(super::fixture(spec))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it asks the kernel to end Prism when the thread
        // that started it ends, which the thread below only does once Prism has gone, or with
        // the test process. So no Prism outlives the tests.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (started, child) = std::sync::mpsc::channel();
        let (told, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ =
                        started.send(Err(format!("CORDON_TEST_PRISM={bin} does not start: {e}")));
                    return;
                }
            };
            let stdout = child.stdout.take().expect("stdout is piped");
            let _ = started.send(Ok(child));
            // Prism logs every request: read to the end so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Prism is listening") {
                    let _ = told.send(());
                }
            }
        });
        let mut child = child
            .recv()
            .map_err(|_| "Prism's starter thread died".to_owned())??;
        let spec_path = super::fixture(spec);
        match listening.recv_timeout(START_WITHIN) {
            Ok(()) => Ok(Prism {
                base: format!("http://127.0.0.1:{port}"),
            }),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                Err(match e {
                    std::sync::mpsc::RecvTimeoutError::Timeout => format!(
                        "Prism did not start listening on {} within {} s",
                        spec_path.display(),
                        START_WITHIN.as_secs()
                    ),
                    std::sync::mpsc::RecvTimeoutError::Disconnected => format!(
                        "Prism exited before listening on {} ({status:?})",
                        spec_path.display()
                    ),
                })
            }
        }
    }
}
