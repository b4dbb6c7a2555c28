//! Deduplication and incident grouping: whether an alert is a repeat of one already stored, a
//! change of its state at the source, and otherwise which incident it joins or whether it opens
//! one.
//!
//! The rule is pure: it decides from what a store read and returns what the store must write.
//! Every backend reads, calls [`Grouping`] and writes inside one atomic write (a sled group commit,
//! a PostgreSQL transaction holding the keys' locks), so the rule is the same on all of them and
//! tested here without a store. It comes in two steps because the second one's read is only needed
//! when the first does not place the alert:
//!
//! 1. [`Grouping::repeat`], with the latest stored alert of the same dedup key and its incident.
//!    - Same state at the source: a repeat while that incident is open and the alert was last seen
//!      within the dedup window. A source saying again that an alert is resolved or suppressed is
//!      a repeat however late, and whatever became of the incident: it is no news.
//!    - Another state: the alert follows the earlier one, in the earlier one's incident, whatever
//!      the windows (`firing` then, days later, `resolved` is one alert's life). The incident
//!      counts the same alert in its new state. One exception: an alert firing again after its
//!      incident was resolved is filed like any new alert.
//! 2. Otherwise [`Grouping::file`], with the latest incident about the alert's entity
//!    ([`Alert::entity_key`]): the alert joins it while it is open and was updated within the
//!    incident window; else it opens an incident of its own.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::alert::{Alert, AlertState, Incident, IncidentStatus};
use crate::config::GroupingConfig;

/// What happened to one alert handed to `Store::ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The stored alert: the new one, or the earlier one this is a repeat of.
    pub alert_id: String,
    pub incident_id: String,
    /// True when the alert was a repeat of an earlier one inside the dedup window.
    pub duplicate: bool,
    /// Times this alert has been received so far.
    pub repeat_count: u32,
    /// True when the alert opened a new incident.
    pub new_incident: bool,
    /// The alert's state at the source.
    pub state: AlertState,
    /// The earlier alert whose state at the source this one changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

/// The grouping rule: its two windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// An alert whose dedup key was last seen within this long is a repeat of that alert.
    pub dedup_window: TimeDelta,
    /// An alert about an entity joins the entity's latest incident while that incident is open
    /// and was updated within this long.
    pub incident_window: TimeDelta,
}

impl From<&GroupingConfig> for Grouping {
    fn from(config: &GroupingConfig) -> Grouping {
        // A window too long for a TimeDelta never closes.
        let delta = |d| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        Grouping {
            dedup_window: delta(config.dedup_window.0),
            incident_window: delta(config.incident_window.0),
        }
    }
}

/// Where an alert went, with the records the store must write for it.
#[derive(Debug, Clone)]
pub enum Placement {
    /// A repeat of `alert`, stored before: the alert (one more repeat, seen now) and its incident
    /// (one more event) are written again; nothing else changes.
    Repeat { alert: Alert, incident: Incident },
    /// A new alert, in `incident`: the alert is written as pending (its runs are not created yet),
    /// its dedup key now names it, and the incident is written. When `new_incident` and the
    /// incident is about an entity, the entity's latest incident is now this one. When it changes
    /// the state of an earlier alert, `follows` is that alert, written again (it now names this
    /// one as `followed_by`).
    New {
        alert: Alert,
        incident: Incident,
        new_incident: bool,
        follows: Option<Box<Alert>>,
    },
}

impl Placement {
    /// The alert to store.
    pub fn alert(&self) -> &Alert {
        match self {
            Placement::Repeat { alert, .. } | Placement::New { alert, .. } => alert,
        }
    }

    /// The incident to store.
    pub fn incident(&self) -> &Incident {
        match self {
            Placement::Repeat { incident, .. } | Placement::New { incident, .. } => incident,
        }
    }

    /// The earlier alert whose state this one changed, to store again.
    pub fn follows(&self) -> Option<&Alert> {
        match self {
            Placement::New {
                follows: Some(earlier),
                ..
            } => Some(earlier.as_ref()),
            _ => None,
        }
    }

    /// The entity whose latest incident this placement opened, if it opened one about an entity.
    pub fn new_entity_incident(&self) -> Option<(&str, &str)> {
        match self {
            Placement::New {
                incident,
                new_incident: true,
                ..
            } => incident
                .entity
                .as_deref()
                .map(|entity| (entity, incident.id.as_str())),
            _ => None,
        }
    }

    /// The answer to the caller of `Store::ingest`.
    pub fn accepted(&self) -> Accepted {
        let (alert, incident) = (self.alert(), self.incident());
        match self {
            Placement::Repeat { .. } => Accepted {
                alert_id: alert.id.clone(),
                incident_id: incident.id.clone(),
                duplicate: true,
                repeat_count: alert.repeat_count,
                new_incident: false,
                state: alert.state,
                follows: None,
            },
            Placement::New {
                new_incident,
                follows,
                ..
            } => Accepted {
                alert_id: alert.id.clone(),
                incident_id: incident.id.clone(),
                duplicate: false,
                repeat_count: 1,
                new_incident: *new_incident,
                state: alert.state,
                follows: follows.as_ref().map(|earlier| earlier.id.clone()),
            },
        }
    }
}

impl Grouping {
    /// Step one: what `alert`, received at `now`, is to `earlier`, the latest stored alert with its
    /// dedup key, together with the incident that alert is in (`None` when there is no such
    /// alert, or its incident is gone): a repeat of it, a change of its state at the source (see
    /// the module's rules), or neither (`None`: file it with [`Grouping::file`]).
    pub fn repeat(
        &self,
        alert: &Alert,
        earlier: Option<(Alert, Incident)>,
        now: DateTime<Utc>,
    ) -> Option<Placement> {
        let (mut earlier, mut incident) = earlier?;
        let open = incident.status == IncidentStatus::Open;
        if alert.state == earlier.state {
            let last = earlier.last_seen_at.unwrap_or(earlier.received_at);
            let counted = !alert.state.is_firing() || (open && now - last <= self.dedup_window);
            if !counted {
                return None;
            }
            earlier.repeat_count = earlier.repeat_count.saturating_add(1);
            earlier.last_seen_at = Some(now);
            incident.event_count = incident.event_count.saturating_add(1);
            incident.updated_at = now;
            return Some(Placement::Repeat {
                alert: earlier,
                incident,
            });
        }
        if !open && alert.state.is_firing() {
            return None;
        }
        // Changes of state are rare next to repeats: only they pay for a copy.
        let mut alert = alert.clone();
        alert.follows = Some(earlier.id.clone());
        alert.incident_id = incident.id.clone();
        earlier.followed_by = Some(alert.id.clone());
        incident.count_state(Some(earlier.state), alert.state, now);
        incident.event_count = incident.event_count.saturating_add(1);
        if alert.state.is_firing() {
            incident.severity = incident.severity.max(alert.severity.score);
        }
        incident.updated_at = now;
        Some(Placement::New {
            alert,
            incident,
            new_incident: false,
            follows: Some(Box::new(earlier)),
        })
    }

    /// Step two, for an alert that is not a repeat: `latest` is the latest incident about the
    /// alert's entity (`None` when it names none, or none was stored). The alert joins it while it
    /// is open and was updated within the incident window, and opens an incident otherwise.
    pub fn file(
        &self,
        mut alert: Alert,
        latest: Option<Incident>,
        now: DateTime<Utc>,
    ) -> Placement {
        let joined = latest.filter(|incident| {
            incident.status == IncidentStatus::Open
                && now - incident.updated_at <= self.incident_window
        });
        let new_incident = joined.is_none();
        let incident = match joined {
            Some(mut incident) => {
                incident.add(&alert);
                incident.updated_at = now;
                incident
            }
            None => {
                let mut incident = Incident::open_for(&alert);
                incident.created_at = now;
                incident.updated_at = now;
                if incident.at_source.quiet_since.is_some() {
                    incident.at_source.quiet_since = Some(now);
                }
                incident
            }
        };
        alert.incident_id = incident.id.clone();
        Placement::New {
            alert,
            incident,
            new_incident,
            follows: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::alert::{Actor, Severity};

    fn t0() -> DateTime<Utc> {
        "2024-05-01T12:00:00Z".parse().expect("time")
    }

    fn minutes(n: i64) -> TimeDelta {
        TimeDelta::minutes(n)
    }

    /// One hour to repeat, four to join: the defaults.
    fn rule() -> Grouping {
        Grouping {
            dedup_window: minutes(60),
            incident_window: minutes(240),
        }
    }

    fn alert(resource: Option<&str>, severity: u8, at: DateTime<Utc>) -> Alert {
        let raw = RawValue::from_string("{}".into()).expect("raw");
        let mut alert = Alert::new("falco", "Shell in container", raw);
        alert.resource.kind = Some("k8s.pod".into());
        alert.resource.id = resource.map(str::to_owned);
        alert.severity = Severity::new(severity, "");
        alert.received_at = at;
        alert.observed_at = at;
        alert.finish()
    }

    /// Step one for the same firing alert about `pod-1` received again at `now`.
    fn again(
        rule: &Grouping,
        earlier: Option<(Alert, Incident)>,
        now: DateTime<Utc>,
    ) -> Option<Placement> {
        rule.repeat(&alert(Some("pod-1"), 5, now), earlier, now)
    }

    /// The alert about `pod-1` received at `at` in `state` at the source.
    fn in_state(state: AlertState, at: DateTime<Utc>) -> Alert {
        let mut a = alert(Some("pod-1"), 5, at);
        a.state = state;
        a
    }

    /// `alert` as the store holds it after filing it at its arrival.
    fn stored(rule: &Grouping, alert: Alert) -> (Alert, Incident) {
        let at = alert.received_at;
        match rule.file(alert, None, at) {
            Placement::New {
                alert, incident, ..
            } => (alert, incident),
            other => panic!("not filed: {other:?}"),
        }
    }

    #[test]
    fn a_repeat_inside_the_dedup_window_counts_on_the_earlier_alert_and_its_incident() {
        let rule = rule();
        let earlier = stored(&rule, alert(Some("pod-1"), 5, t0()));
        let (id, incident_id) = (earlier.0.id.clone(), earlier.1.id.clone());
        let now = t0() + minutes(59);
        let placed = rule
            .repeat(&alert(Some("pod-1"), 5, now), Some(earlier), now)
            .expect("a repeat");
        assert_eq!(
            placed.accepted(),
            Accepted {
                alert_id: id,
                incident_id,
                duplicate: true,
                repeat_count: 2,
                new_incident: false,
                state: AlertState::Firing,
                follows: None,
            }
        );
        assert_eq!(placed.alert().last_seen_at, Some(now));
        assert_eq!(placed.incident().event_count, 2);
        assert_eq!(placed.incident().alert_count, 1);
        assert_eq!(placed.incident().updated_at, now);
        assert_eq!(placed.new_entity_incident(), None);
    }

    #[test]
    fn the_dedup_window_runs_from_the_last_repeat() {
        let rule = rule();
        let mut earlier = stored(&rule, alert(Some("pod-1"), 5, t0()));
        earlier.0.last_seen_at = Some(t0() + minutes(50));
        assert!(again(&rule, Some(earlier.clone()), t0() + minutes(110)).is_some());
        assert!(again(&rule, Some(earlier), t0() + minutes(111)).is_none());
    }

    #[test]
    fn no_repeat_after_the_window_without_an_earlier_alert_or_once_its_incident_is_resolved() {
        let rule = rule();
        let earlier = stored(&rule, alert(Some("pod-1"), 5, t0()));
        assert!(again(&rule, Some(earlier.clone()), t0() + minutes(60)).is_some());
        assert!(again(&rule, Some(earlier.clone()), t0() + minutes(61)).is_none());
        assert!(again(&rule, None, t0()).is_none());
        let (alert, mut incident) = earlier;
        incident.status = IncidentStatus::Resolved;
        assert!(again(&rule, Some((alert, incident)), t0() + minutes(1)).is_none());
    }

    #[test]
    fn a_first_alert_opens_an_incident_about_its_entity() {
        let now = t0() + minutes(3);
        let placed = rule().file(alert(Some("pod-1"), 4, t0()), None, now);
        let Placement::New {
            alert, incident, ..
        } = &placed
        else {
            panic!("not new: {placed:?}");
        };
        assert_eq!(alert.incident_id, incident.id);
        assert_eq!(incident.entity.as_deref(), Some("resource:k8s.pod:pod-1"));
        assert_eq!((incident.created_at, incident.updated_at), (now, now));
        assert_eq!((incident.alert_count, incident.event_count), (1, 1));
        assert_eq!(incident.severity, 4);
        assert_eq!(incident.status, IncidentStatus::Open);
        let accepted = placed.accepted();
        assert!(accepted.new_incident && !accepted.duplicate);
        assert_eq!(accepted.repeat_count, 1);
        assert_eq!(
            placed.new_entity_incident(),
            Some(("resource:k8s.pod:pod-1", incident.id.as_str()))
        );
    }

    #[test]
    fn an_alert_about_the_same_entity_joins_its_open_incident_and_raises_its_severity() {
        let rule = rule();
        let (_, incident) = stored(&rule, alert(Some("pod-1"), 4, t0()));
        let mut second = alert(Some("pod-1"), 8, t0() + minutes(5));
        second.source = "aws.guardduty".into();
        let now = t0() + minutes(5);
        let placed = rule.file(second, Some(incident.clone()), now);
        let accepted = placed.accepted();
        assert!(!accepted.new_incident && !accepted.duplicate);
        assert_eq!(accepted.incident_id, incident.id);
        let joined = placed.incident();
        assert_eq!(placed.alert().incident_id, incident.id);
        assert_eq!(joined.severity, 8);
        assert_eq!((joined.alert_count, joined.event_count), (2, 2));
        assert_eq!(joined.sources, ["falco", "aws.guardduty"]);
        assert_eq!(joined.updated_at, now);
        assert_eq!(joined.created_at, incident.created_at);
        // The entity already names this incident.
        assert_eq!(placed.new_entity_incident(), None);

        // A lower severity does not lower the incident's.
        let third = rule.file(
            alert(Some("pod-1"), 2, now),
            Some(joined.clone()),
            now + minutes(1),
        );
        assert_eq!(third.incident().severity, 8);
    }

    #[test]
    fn a_new_incident_once_the_entitys_is_past_the_incident_window_or_resolved() {
        let rule = rule();
        let (_, incident) = stored(&rule, alert(Some("pod-1"), 4, t0()));
        let inside = rule.file(
            alert(Some("pod-1"), 4, t0()),
            Some(incident.clone()),
            t0() + minutes(240),
        );
        assert_eq!(inside.incident().id, incident.id);
        let after = rule.file(
            alert(Some("pod-1"), 4, t0()),
            Some(incident.clone()),
            t0() + minutes(241),
        );
        assert_ne!(after.incident().id, incident.id);
        assert!(after.accepted().new_incident);
        assert_eq!(
            after.new_entity_incident(),
            Some(("resource:k8s.pod:pod-1", after.incident().id.as_str()))
        );

        let mut resolved = incident;
        resolved.status = IncidentStatus::Resolved;
        let placed = rule.file(
            alert(Some("pod-1"), 4, t0()),
            Some(resolved.clone()),
            t0() + minutes(1),
        );
        assert_ne!(placed.incident().id, resolved.id);
    }

    #[test]
    fn an_alert_naming_no_entity_gets_an_incident_of_its_own_and_no_entity_pointer() {
        let placed = rule().file(alert(None, 3, t0()), None, t0());
        assert!(placed.accepted().new_incident);
        assert_eq!(placed.incident().entity, None);
        assert_eq!(placed.new_entity_incident(), None);
    }

    #[test]
    fn identity_alerts_group_by_actor() {
        let mut a = alert(None, 5, t0());
        a.resource.kind = Some("aws.iam.user".into());
        a.actor = Some(Actor {
            kind: Some("aws.iam.user".into()),
            id: Some("arn:aws:iam::1:user/alice".into()),
            name: None,
            key: None,
        });
        let placed = rule().file(a, None, t0());
        assert_eq!(
            placed.new_entity_incident().map(|(entity, _)| entity),
            Some("actor:arn:aws:iam::1:user/alice")
        );
    }

    #[test]
    fn a_resolved_notification_follows_the_firing_alert_in_its_incident() {
        let rule = rule();
        let earlier = stored(&rule, alert(Some("pod-1"), 5, t0()));
        let (firing_id, incident_id) = (earlier.0.id.clone(), earlier.1.id.clone());
        // Days later, long past both windows: still the same alert's life.
        let now = t0() + TimeDelta::days(3);
        let placed = rule
            .repeat(&in_state(AlertState::Resolved, now), Some(earlier), now)
            .expect("placed with the earlier alert");
        let accepted = placed.accepted();
        assert!(!accepted.duplicate && !accepted.new_incident);
        assert_eq!(accepted.incident_id, incident_id);
        assert_eq!(accepted.state, AlertState::Resolved);
        assert_eq!(accepted.follows.as_deref(), Some(firing_id.as_str()));
        let resolved = placed.alert();
        assert_ne!(
            resolved.id, firing_id,
            "a record of its own, matched on its own"
        );
        assert_eq!(resolved.incident_id, incident_id);
        let firing = placed.follows().expect("the earlier alert, written again");
        assert_eq!(firing.followed_by.as_deref(), Some(resolved.id.as_str()));
        assert_eq!(firing.state, AlertState::Firing, "kept as it was received");
        let incident = placed.incident();
        assert_eq!((incident.alert_count, incident.event_count), (1, 2));
        assert_eq!(incident.firing(), 0);
        assert_eq!(incident.at_source.resolved, 1);
        assert_eq!(incident.at_source.quiet_since, Some(now));
        assert_eq!(
            incident.status,
            IncidentStatus::Open,
            "the policy is the engine's"
        );
        assert_eq!(placed.new_entity_incident(), None);
    }

    #[test]
    fn resolved_again_is_a_repeat_however_late_and_whatever_became_of_the_incident() {
        let rule = rule();
        let earlier = stored(&rule, alert(Some("pod-1"), 5, t0()));
        let now = t0() + minutes(5);
        let Some(Placement::New {
            alert: resolved,
            mut incident,
            ..
        }) = rule.repeat(&in_state(AlertState::Resolved, now), Some(earlier), now)
        else {
            panic!("not a change of state");
        };
        incident.status = IncidentStatus::Resolved;
        let later = now + TimeDelta::days(2);
        let placed = rule
            .repeat(
                &in_state(AlertState::Resolved, later),
                Some((resolved.clone(), incident)),
                later,
            )
            .expect("a repeat");
        let accepted = placed.accepted();
        assert!(accepted.duplicate);
        assert_eq!(accepted.alert_id, resolved.id);
        assert_eq!(accepted.repeat_count, 2);
        assert_eq!(placed.incident().at_source.resolved, 1, "still one alert");
    }

    #[test]
    fn firing_again_follows_in_an_open_incident_and_is_filed_anew_once_it_was_resolved() {
        let rule = rule();
        let earlier = stored(&rule, alert(Some("pod-1"), 5, t0()));
        let t1 = t0() + minutes(5);
        let Some(Placement::New {
            alert: resolved,
            incident,
            ..
        }) = rule.repeat(&in_state(AlertState::Resolved, t1), Some(earlier), t1)
        else {
            panic!("not a change of state");
        };
        let t2 = t1 + minutes(5);
        let refired = rule
            .repeat(
                &in_state(AlertState::Firing, t2),
                Some((resolved.clone(), incident.clone())),
                t2,
            )
            .expect("follows the resolved alert");
        assert_eq!(
            refired.accepted().follows.as_deref(),
            Some(resolved.id.as_str())
        );
        assert_eq!(refired.incident().firing(), 1);
        assert_eq!(refired.incident().at_source.resolved, 0);
        assert_eq!(refired.incident().at_source.quiet_since, None);
        assert_eq!(refired.incident().alert_count, 1);

        let mut closed = incident;
        closed.status = IncidentStatus::Resolved;
        let refired = in_state(AlertState::Firing, t2);
        let placed = rule.repeat(&refired, Some((resolved, closed)), t2);
        assert!(placed.is_none(), "filed like any new alert: {placed:?}");
        let filed = rule.file(refired, None, t2);
        assert!(filed.accepted().new_incident && filed.follows().is_none());
    }

    #[test]
    fn a_source_resolving_an_alert_a_person_resolved_the_incident_of_records_it_there() {
        let rule = rule();
        let (firing, mut incident) = stored(&rule, alert(Some("pod-1"), 5, t0()));
        incident.status = IncidentStatus::Resolved;
        let now = t0() + minutes(30);
        let placed = rule
            .repeat(
                &in_state(AlertState::Resolved, now),
                Some((firing, incident.clone())),
                now,
            )
            .expect("follows");
        assert_eq!(placed.incident().id, incident.id);
        assert_eq!(placed.incident().status, IncidentStatus::Resolved);
        assert_eq!(placed.incident().at_source.resolved, 1);
    }

    #[test]
    fn an_alert_first_heard_of_as_resolved_is_filed_and_counted_resolved() {
        let rule = rule();
        let now = t0();
        let alert = in_state(AlertState::Resolved, now);
        assert!(
            rule.repeat(&alert, None, now).is_none(),
            "nothing to follow"
        );
        let placed = rule.file(alert, None, now);
        assert!(placed.accepted().new_incident);
        assert_eq!(placed.incident().at_source.resolved, 1);
        assert_eq!(placed.incident().at_source.quiet_since, Some(now));
        assert!(placed.follows().is_none());
    }

    #[test]
    fn an_incident_is_quiet_at_the_source_only_once_none_of_its_alerts_fires() {
        let rule = rule();
        let (first, incident) = stored(&rule, alert(Some("pod-1"), 5, t0()));
        let mut second = alert(Some("pod-1"), 6, t0() + minutes(1));
        second.kind = "Write below binary dir".into();
        second = Alert {
            dedup_key: String::new(),
            ..second
        }
        .finish();
        let placed = rule.file(second.clone(), Some(incident), t0() + minutes(1));
        let (second, incident) = (placed.alert().clone(), placed.incident().clone());
        assert_eq!(incident.firing(), 2);

        let t2 = t0() + minutes(2);
        let mut suppressed = in_state(AlertState::Suppressed, t2);
        suppressed.dedup_key = first.dedup_key.clone();
        let placed = rule
            .repeat(&suppressed, Some((first, incident)), t2)
            .expect("placed");
        let incident = placed.incident().clone();
        assert_eq!((incident.firing(), incident.at_source.suppressed), (1, 1));
        assert_eq!(incident.at_source.quiet_since, None);

        let t3 = t0() + minutes(3);
        let mut resolved = second.clone();
        resolved.id = crate::alert::new_id();
        resolved.state = AlertState::Resolved;
        let placed = rule
            .repeat(&resolved, Some((second, incident)), t3)
            .expect("placed");
        let incident = placed.incident();
        assert_eq!(
            (
                incident.firing(),
                incident.at_source.resolved,
                incident.at_source.suppressed
            ),
            (0, 1, 1)
        );
        assert_eq!(incident.at_source.quiet_since, Some(t3));
        assert_eq!(incident.alert_count, 2);
    }

    #[test]
    fn windows_come_from_the_config_and_a_huge_one_never_closes() {
        let config = GroupingConfig {
            dedup_window: crate::config::HumanDuration(std::time::Duration::from_secs(60)),
            incident_window: crate::config::HumanDuration(std::time::Duration::MAX),
            ..GroupingConfig::default()
        };
        let rule = Grouping::from(&config);
        assert_eq!(rule.dedup_window, TimeDelta::seconds(60));
        assert_eq!(rule.incident_window, TimeDelta::MAX);
    }
}
