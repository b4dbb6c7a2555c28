//! The shipped example config: it loads as it is, with nothing set in the environment, and every
//! value it shows is the default it documents.

use std::path::Path;

use cordon::config::{self, AuthConfig, Config};
use cordon::intake::formats::SourceKind;

fn example() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    config::load(&path).unwrap_or_else(|d| panic!("config.example.yaml does not load:\n{d}"))
}

#[test]
fn the_example_config_loads_and_documents_the_defaults() {
    let example = example();
    let defaults = Config::default();
    assert_eq!(example.server.listen, defaults.server.listen);
    assert!(
        example.server.listen.ip().is_loopback(),
        "binds 127.0.0.1 only"
    );
    assert_eq!(
        example.server.max_body_bytes,
        defaults.server.max_body_bytes
    );
    assert_eq!(
        example.server.shutdown_grace,
        defaults.server.shutdown_grace
    );
    assert_eq!(example.store.kind, defaults.store.kind);
    assert_eq!(example.store.path, defaults.store.path);
    assert_eq!(example.store.cache_mb, defaults.store.cache_mb);
    assert_eq!(
        example.grouping.dedup_window,
        defaults.grouping.dedup_window
    );
    assert_eq!(
        example.grouping.incident_window,
        defaults.grouping.incident_window
    );
    assert_eq!(example.log.format, defaults.log.format);
    assert_eq!(example.log.level, defaults.log.level);
    assert_eq!(example.playbooks.paths, defaults.playbooks.paths);
    assert_eq!(example.playbooks.workers, defaults.playbooks.workers);
    assert_eq!(
        example.playbooks.script_timeout,
        defaults.playbooks.script_timeout
    );
    assert_eq!(
        example.guardrails.blast_radius_approvers,
        defaults.guardrails.blast_radius_approvers
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
