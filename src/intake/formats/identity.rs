//! Principals as every source names them, so that alerts about one identity from two sources (a
//! GuardDuty finding and a CloudTrail record about one IAM user, say) share one key and land in one
//! incident, and the same user name in two accounts does not.
//!
//! The key goes in [`Actor::key`](crate::alert::Actor::key); the actor's `id` stays the source's
//! own (an ARN, a UPN, an e-mail) for playbooks and actions to use.
//!
//! | principal | key |
//! |---|---|
//! | IAM user | `aws:<account>:user/<name>` (the name without its IAM path) |
//! | IAM role, and every session of it (`assumed-role/<role>/<session>`) | `aws:<account>:role/<name>` |
//! | root user | `aws:<account>:root` |
//! | Entra ID user | `azure:<tenant>:<object id>`; by UPN (`azure:<tenant>:<upn>`, lower case) only when the alert has no object id |
//! | GCP service account | `gcp:<project>:<email>` (the project from the e-mail's domain) |
//! | Google user | `gcp:user:<email>` (users belong to no project) |
//!
//! A source that does not say the account (or tenant) gives no key: an unqualified name would
//! join the same name in another account, which is the mistake keys exist to avoid.

/// An AWS principal from its ARN: an IAM user or role (any path), an STS assumed-role session (its
/// role), or the root user. `None` for other ARNs.
pub(super) fn aws_from_arn(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some(service), Some(_region), Some(account), Some(rest)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if account.is_empty() {
        return None;
    }
    match (service, rest.split_once('/')) {
        ("iam", None) if rest == "root" => Some(format!("aws:{account}:root")),
        ("iam", Some(("user", path))) => last(path).map(|n| format!("aws:{account}:user/{n}")),
        ("iam", Some(("role", path))) => last(path).map(|n| format!("aws:{account}:role/{n}")),
        ("sts", Some(("assumed-role", rest))) => rest
            .split('/')
            .next()
            .filter(|r| !r.is_empty())
            .map(|role| format!("aws:{account}:role/{role}")),
        _ => None,
    }
}

/// An AWS principal from its kind (`aws.iam.user`, `aws.iam.role`, `aws.root`), account and name.
pub(super) fn aws(kind: &str, account: Option<&str>, name: Option<&str>) -> Option<String> {
    let account = account.map(str::trim).filter(|a| !a.is_empty())?;
    match kind {
        "aws.root" => Some(format!("aws:{account}:root")),
        "aws.iam.user" => name
            .and_then(last)
            .map(|n| format!("aws:{account}:user/{n}")),
        "aws.iam.role" => name
            .and_then(last)
            .map(|n| format!("aws:{account}:role/{n}")),
        _ => None,
    }
}

/// An Entra ID user in `tenant`: by object id, else by UPN (lower case: Entra ID compares UPNs
/// without case).
pub(super) fn azure(
    tenant: Option<&str>,
    object_id: Option<&str>,
    upn: Option<&str>,
) -> Option<String> {
    let tenant = tenant.map(str::trim).filter(|t| !t.is_empty())?;
    let tenant = tenant.to_ascii_lowercase();
    match (object_id, upn) {
        (Some(oid), _) if !oid.trim().is_empty() => Some(format!(
            "azure:{tenant}:{}",
            oid.trim().to_ascii_lowercase()
        )),
        (_, Some(upn)) if upn.contains('@') => {
            Some(format!("azure:{tenant}:{}", upn.trim().to_lowercase()))
        }
        _ => None,
    }
}

/// A Google principal by e-mail: a service account keyed by its project, a user by e-mail alone.
pub(super) fn gcp(email: &str) -> Option<String> {
    let email = email.trim().to_ascii_lowercase();
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() {
        return None;
    }
    let project = if let Some(project) = domain.strip_suffix(".iam.gserviceaccount.com") {
        // Google's service agents (`service-<number>@gcp-sa-<service>.iam…`) belong to the
        // project numbered in their name.
        if project.starts_with("gcp-sa-") {
            local.strip_prefix("service-")?.to_owned()
        } else {
            project.to_owned()
        }
    } else if domain == "appspot.gserviceaccount.com" {
        local.to_owned()
    } else if domain == "developer.gserviceaccount.com" {
        // `<project number>-compute@developer.gserviceaccount.com`
        local.split('-').next()?.to_owned()
    } else if domain.ends_with(".gserviceaccount.com") {
        return None;
    } else {
        return Some(format!("gcp:user:{email}"));
    };
    Some(format!("gcp:{project}:{email}"))
}

/// The last segment of an IAM path (`/division/alice` → `alice`).
fn last(path: &str) -> Option<&str> {
    path.rsplit('/')
        .next()
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_keys_are_account_qualified_and_sessions_map_to_their_role() {
        assert_eq!(
            aws_from_arn("arn:aws:iam::111122223333:user/division/alice").as_deref(),
            Some("aws:111122223333:user/alice")
        );
        assert_eq!(
            aws_from_arn("arn:aws:sts::111122223333:assumed-role/Admin/alice-session").as_deref(),
            Some("aws:111122223333:role/Admin")
        );
        assert_eq!(
            aws_from_arn("arn:aws:iam::111122223333:role/service-role/Admin").as_deref(),
            Some("aws:111122223333:role/Admin")
        );
        assert_eq!(
            aws_from_arn("arn:aws-us-gov:iam::111122223333:root").as_deref(),
            Some("aws:111122223333:root")
        );
        assert_eq!(aws_from_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(aws_from_arn("alice"), None);
        assert_eq!(
            aws("aws.iam.user", Some("111122223333"), Some("alice")),
            aws_from_arn("arn:aws:iam::111122223333:user/alice")
        );
        assert_eq!(
            aws("aws.root", Some("111122223333"), None).as_deref(),
            Some("aws:111122223333:root")
        );
        assert_eq!(
            aws("aws.iam.user", None, Some("alice")),
            None,
            "no account, no key"
        );
        assert_eq!(aws("aws.principal", Some("1"), Some("x")), None);
    }

    #[test]
    fn azure_users_are_keyed_by_object_id_else_upn() {
        let tenant = Some("72F988BF-86F1-41AF-91AB-2D7CD011DB47");
        assert_eq!(
            azure(
                tenant,
                Some("B0B2C3D4-0000-1111-2222-333344445555"),
                Some("Alice@Contoso.com")
            )
            .as_deref(),
            Some("azure:72f988bf-86f1-41af-91ab-2d7cd011db47:b0b2c3d4-0000-1111-2222-333344445555")
        );
        assert_eq!(
            azure(tenant, None, Some("Alice@Contoso.com")).as_deref(),
            Some("azure:72f988bf-86f1-41af-91ab-2d7cd011db47:alice@contoso.com")
        );
        assert_eq!(azure(None, Some("b0b2"), None), None);
        assert_eq!(azure(tenant, None, Some("alice")), None);
    }

    #[test]
    fn gcp_service_accounts_are_keyed_by_their_project() {
        assert_eq!(
            gcp("scc-push@soc-project.iam.gserviceaccount.com").as_deref(),
            Some("gcp:soc-project:scc-push@soc-project.iam.gserviceaccount.com")
        );
        assert_eq!(
            gcp("my-app@appspot.gserviceaccount.com").as_deref(),
            Some("gcp:my-app:my-app@appspot.gserviceaccount.com")
        );
        assert_eq!(
            gcp("123456789012-compute@developer.gserviceaccount.com").as_deref(),
            Some("gcp:123456789012:123456789012-compute@developer.gserviceaccount.com")
        );
        assert_eq!(
            gcp("service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com").as_deref(),
            Some("gcp:123456789012:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com")
        );
        assert_eq!(
            gcp("Alice@Example.com").as_deref(),
            Some("gcp:user:alice@example.com")
        );
        assert_eq!(gcp("not-an-email"), None);
    }
}
