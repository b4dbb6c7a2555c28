//! The shipped example config: it loads as it is, with nothing set in the environment, and every
//! value it shows is the default it documents.

use std::path::Path;

use cordon::config::{self, AuthConfig, Config};
use cordon::intake::formats::SourceKind;

/// Asserts each named field of `example` equals the one of `defaults`.
macro_rules! same_as_default {
    ($example:ident, $defaults:ident, $($first:ident $(. $rest:ident)*),+ $(,)?) => {
        $(
            assert_eq!(
                $example.$first$(.$rest)*,
                $defaults.$first$(.$rest)*,
                "{} differs from its default",
                stringify!($first$(.$rest)*)
            );
        )+
    };
}

fn example() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    config::load(&path).unwrap_or_else(|d| panic!("config.example.yaml does not load:\n{d}"))
}

#[test]
fn the_example_config_loads_and_documents_the_defaults() {
    let example = example();
    let defaults = Config::default();
    assert!(
        example.server.listen.ip().is_loopback(),
        "binds 127.0.0.1 only"
    );
    same_as_default!(
        example,
        defaults,
        server.listen,
        server.max_body_bytes,
        server.shutdown_grace,
        store.kind,
        store.path,
        store.cache_mb,
        grouping.dedup_window,
        grouping.incident_window,
        grouping.resolved_at_source,
        log.format,
        log.level,
        playbooks.paths,
        playbooks.workers,
        playbooks.script_timeout,
        guardrails.blast_radius_approvers,
    );
}

#[test]
fn the_example_config_loads_the_stock_playbooks() {
    let example = example();
    let scripts = cordon::app::scripts(&example);
    let catalog = cordon::app::catalog(&example).unwrap_or_else(|d| panic!("{d}"));
    let playbooks =
        cordon::app::load_playbooks(&example, &scripts, &catalog).unwrap_or_else(|d| panic!("{d}"));
    assert!(playbooks.iter().any(|p| p.spec.id == "generic-triage"));
}

#[test]
fn the_example_takes_every_source_with_local_only_secrets_it_warns_about() {
    let example = example();
    for source in SourceKind::ALL {
        let config = example
            .sources
            .get(source.name())
            .unwrap_or_else(|| panic!("{source} missing"));
        assert!(config.enabled);
        assert!(
            !matches!(config.auth, AuthConfig::Sns(_)),
            "runs with no AWS account"
        );
    }
    if std::env::var_os("CORDON_ADMIN_TOKEN").is_none() {
        assert!(
            example
                .secrets_using_defaults()
                .contains(&"CORDON_ADMIN_TOKEN".to_owned())
        );
    }
    let printed = format!("{example:?}");
    assert!(
        !printed.contains("local-admin-token") && !printed.contains("local-intake-token"),
        "secrets redacted"
    );
}
