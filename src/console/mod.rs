//! The web console, served at `/` on the server's listener (docs/console.md): incidents with their
//! timeline, entity graph, evidence and report; runs; playbooks; the audit log; and the decisions
//! people make from chat, made from the browser.
//!
//! Pages render on the server (maud) and read with JavaScript off; a small script of ours (embedded,
//! `assets/console.js`) adds live updates over server-sent events, keyboard shortcuts and timeline
//! zoom. Sign-in is OIDC (authorization code + PKCE) or a personal token pasted once
//! ([`signin`]); sessions and CSRF are [`session`]'s. Every page and action checks the person's
//! role as the API does, refusals are audited as the API's are (with `via: console`), and actions
//! go through the same engine calls as the API's, with `console` as the channel.

pub mod incident;
pub mod live;
pub mod session;
pub mod signin;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::Markup;

use crate::alert::IncidentStatus;
use crate::app::AppState;
use crate::model::people::{Actor, Role};
use crate::store::{IncidentFilter, RunQuery};
use crate::trust::Caller;

use session::Visitor;
use views::ListParams;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
/// Incidents per page of the list.
const PAGE: usize = 50;
/// How long the list of playbook ids (for "Run playbook") is kept.
const PLAYBOOK_IDS_TTL: Duration = Duration::from_secs(30);

/// The console's own state beside the app's.
pub struct Console {
    pub live: live::Live,
    pub oidc: Option<signin::OidcSignIn>,
    playbook_ids: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl Console {
    pub fn new(config: &crate::config::Config) -> Console {
        Console {
            live: live::Live::new(),
            oidc: config
                .oidc
                .as_ref()
                .map(|o| signin::OidcSignIn::new(o, config.console.client_id.as_deref())),
            playbook_ids: Mutex::new(None),
        }
    }
}

/// The console's routes (none when `console.enabled` is false).
pub fn router(state: Arc<AppState>) -> Router {
    if !state.config.console.enabled {
        return Router::new();
    }
    Router::new()
        .route("/", get(|| async { Redirect::to("/incidents") }))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .route("/login", get(login_page))
        .route("/login/token", post(login_token))
        .route("/login/oidc", get(login_oidc))
        .route("/login/callback", get(login_callback))
        .route("/logout", post(logout))
        .route("/incidents", get(incident_list))
        .route("/incidents/{id}", get(incident_page))
        .route("/incidents/{id}/report", get(incident_report))
        .route("/incidents/{id}/{change}", post(incident_status))
        .route("/runs", get(run_list))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/approvals/{step}", post(decide))
        .route("/runs/{id}/steps/{step}/undo", post(undo))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/playbooks", get(playbooks))
        .route("/playbooks/trigger", post(trigger))
        .route("/audit", get(audit))
        .route("/events", get(events))
        .with_state(state)
}

/// Headers every console answer carries: no framing, no sniffing, no referrer leaks, scripts and
/// styles from this origin only.
fn hardened(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn html(status: StatusCode, markup: Markup) -> Response {
    hardened(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response(),
    )
}

fn see_other(location: &str) -> Response {
    hardened(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location.to_owned())],
        )
            .into_response(),
    )
}

fn problem(status: StatusCode, title: &str, message: &str, visitor: Option<&Visitor>) -> Response {
    html(status, views::problem(title, message, visitor))
}

fn store_problem(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "console request failed on the store");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The store did not answer; try again shortly.",
        None,
    )
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// The query's parameters (the last of each name).
fn params(query: &Option<String>) -> HashMap<String, String> {
    query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// The signed-in visitor with the role `role`, or the answer to give: the sign-in page for a
/// browser without a session, a 403 (audited as the API's are) for one without the role.
async fn admit(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    uri: &Uri,
    role: Role,
    what: &str,
) -> Result<Visitor, Response> {
    let visitor = session::visitor(app, headers)
        .await
        .map_err(store_problem)?;
    let Some(visitor) = visitor else {
        let here = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/incidents");
        return Err(see_other(&format!(
            "/login?next={}",
            views::urlencode(&signin::local_path(Some(here)))
        )));
    };
    require(app, &visitor, role, what).await?;
    Ok(visitor)
}

/// A 403 unless the visitor's credential carries `role` for `what`; audited like the API's.
async fn require(
    app: &AppState,
    visitor: &Visitor,
    role: Role,
    what: &str,
) -> Result<(), Response> {
    if visitor.actor.roles.has(role) {
        return Ok(());
    }
    crate::api::refuse(
        app,
        &Caller::Person(visitor.actor.clone()),
        role,
        what,
        "console",
    )
    .await;
    Err(problem(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!(
            "{what} needs the role `{role}`, which {} lacks with this sign-in",
            visitor.actor.person
        ),
        Some(visitor),
    ))
}

/// [`posted`], by a visitor whose credential carries `role` for `what` ([`require`]).
async fn posted_as(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    body: &[u8],
    role: Role,
    what: &str,
) -> Result<(Visitor, HashMap<String, String>), Response> {
    let (visitor, form) = posted(app, headers, body).await?;
    require(app, &visitor, role, what).await?;
    Ok((visitor, form))
}

/// A POST from a signed-in browser of this console: its session, its origin and its CSRF token
/// checked before anything else; its form fields.
async fn posted(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Visitor, HashMap<String, String>), Response> {
    let refused = |why: &str| {
        problem(
            StatusCode::FORBIDDEN,
            "Refused",
            &format!("{why}; nothing was changed. Reload the page and try again."),
            None,
        )
    };
    if !session::same_origin(app, headers) {
        return Err(refused("this form was sent from another site"));
    }
    let Some(visitor) = session::visitor(app, headers)
        .await
        .map_err(store_problem)?
    else {
        return Err(refused("you are not signed in (or your session ended)"));
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !session::same(token, &visitor.session.csrf) {
        return Err(refused(
            "the form's CSRF token is missing or not this session's",
        ));
    }
    Ok((visitor, form))
}

// --- Sign-in ------------------------------------------------------------------------------------

async fn login_page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let q = params(&query);
    let next = signin::local_path(q.get("next").map(String::as_str));
    if let Ok(Some(_)) = session::visitor(&app, &headers).await {
        return see_other(&next);
    }
    html(
        StatusCode::OK,
        views::login(&next, app.console.oidc.is_some(), None),
    )
}

async fn login_token(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !session::same_origin(&app, &headers) {
        return problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This sign-in was sent from another site.",
            None,
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let next = signin::local_path(form.get("next").map(String::as_str));
    let token = form.get("token").map(|t| t.trim()).unwrap_or("");
    let again = |message: &str| {
        html(
            StatusCode::UNAUTHORIZED,
            views::login(&next, app.console.oidc.is_some(), Some(message)),
        )
    };
    if !token.starts_with("cordon_") {
        return again(
            "Paste a personal token (it starts with `cordon_`). The bootstrap admin token manages people and tokens only: make a personal token with it (`cordon tokens create <person>`).",
        );
    }
    let actor = match app.engine.people().authenticate(token, Utc::now()).await {
        Ok(Caller::Person(actor)) => actor,
        Ok(Caller::Bootstrap) => return again("The bootstrap admin token cannot sign in."),
        Err(crate::trust::TrustError::Store(e)) => return store_problem(e),
        Err(e) => return again(&format!("Not signed in: {e}.")),
    };
    let token_id = actor.identity.strip_prefix("token:").map(str::to_owned);
    signed_in(&app, &actor, token_id, "token", &next).await
}

/// Starts a session for `actor` and sends the browser on.
async fn signed_in(
    app: &Arc<AppState>,
    actor: &Actor,
    token_id: Option<String>,
    via: &str,
    next: &str,
) -> Response {
    let id = match session::create(app, actor, token_id, via).await {
        Ok(id) => id,
        Err(e) => return store_problem(e),
    };
    let entry = crate::model::audit::NewEntry::new(crate::model::event::EventKind::Other(
        "console.signed_in".into(),
    ))
    .actor(actor.identity.clone())
    .detail(serde_json::json!({ "person": actor.person, "via": via }));
    if let Err(e) = app.store.append_audit(vec![entry]).await {
        tracing::warn!(error = %e, "cannot audit a console sign-in");
    }
    let secure = session::secure(app);
    let max_age = app.config.console.absolute_timeout.0.as_secs() as i64;
    let mut response = see_other(next);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        session::COOKIE,
        &id,
        "/",
        max_age,
        secure,
    )) {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        signin::LOGIN_COOKIE,
        "",
        "/login",
        0,
        secure,
    )) {
        h.append(header::SET_COOKIE, v);
    }
    response
}

/// The redirect URI of the OIDC client: `<public_url>/login/callback`, or this host's.
fn redirect_uri(app: &AppState, headers: &HeaderMap) -> Option<String> {
    let origin = session::expected_origin(app, headers)?;
    Some(format!("{}/login/callback", origin.trim_end_matches('/')))
}

async fn login_oidc(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(oidc) = &app.console.oidc else {
        return problem(
            StatusCode::NOT_FOUND,
            "Not configured",
            "No OIDC issuer is configured (`oidc:`); sign in with a personal token.",
            None,
        );
    };
    let q = params(&query);
    let next = signin::local_path(q.get("next").map(String::as_str));
    let Some(redirect) = redirect_uri(&app, &headers) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The request names no host; set `console.public_url`.",
            None,
        );
    };
    match oidc.start(&app, redirect, next).await {
        Ok((state, location)) => {
            let mut response = see_other(&location);
            let cookie = session::set_cookie(
                signin::LOGIN_COOKIE,
                &state,
                "/login",
                600,
                session::secure(&app),
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => problem(StatusCode::BAD_GATEWAY, "Cannot sign in", &e.0, None),
    }
}

async fn login_callback(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(oidc) = &app.console.oidc else {
        return problem(
            StatusCode::NOT_FOUND,
            "Not configured",
            "No OIDC issuer is configured.",
            None,
        );
    };
    let q = params(&query);
    if let Some(error) = q.get("error") {
        let error: String = error.chars().take(64).collect();
        return problem(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            &format!("The identity provider answered `{error}`."),
            None,
        );
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "The callback has no code or no state.",
            None,
        );
    };
    let browser = session::cookie(&headers, signin::LOGIN_COOKIE);
    let (identities, next) = match oidc.finish(&app, state, browser, code).await {
        Ok(found) => found,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "Sign-in refused", &e.0, None),
    };
    let people = app.engine.people();
    for identity in &identities {
        match people.actor(identity, &[]).await {
            Ok(Some(actor)) => {
                return signed_in(&app, &actor, None, "oidc", &signin::local_path(Some(&next)))
                    .await;
            }
            Ok(None) => {}
            Err(e) => return store_problem(e),
        }
    }
    problem(
        StatusCode::FORBIDDEN,
        "Not a person here",
        &format!(
            "You signed in at the identity provider, but no person has the identity {}. An admin adds it: `cordon people add`.",
            identities
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        None,
    )
}

async fn logout(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (visitor, _) = match posted(&app, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(e) = session::end(&app, &visitor.key).await {
        return store_problem(e);
    }
    let mut response = see_other("/login");
    let cookie = session::set_cookie(session::COOKIE, "", "/", 0, session::secure(&app));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

// --- Incidents ----------------------------------------------------------------------------------

/// A `datetime-local` (`2026-01-02T10:00`) or RFC 3339 time, read as UTC.
fn parse_time(text: &str) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!("`{text}` is not a time (2026-01-02T10:00, in UTC)"))
}

/// The list's filter from its parameters; what is wrong with them, if anything.
pub fn list_filter(q: &HashMap<String, String>) -> (ListParams, IncidentFilter, Option<String>) {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let params = ListParams {
        status: get("status"),
        severity_min: get("severity_min"),
        severity_max: get("severity_max"),
        source: get("source"),
        entity: get("entity"),
        since: get("since"),
        until: get("until"),
        assignee: get("assignee"),
        q: get("q"),
        cursor: get("cursor"),
    };
    let mut problems = Vec::new();
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let severity = |s: &str, problems: &mut Vec<String>| match s.trim() {
        "" => None,
        n => match n.parse::<u8>() {
            Ok(v) if v <= 10 => Some(v),
            _ => {
                problems.push(format!("severity `{n}` is not 0 to 10"));
                None
            }
        },
    };
    let status = match params.status.as_str() {
        "" => None,
        "open" => Some(IncidentStatus::Open),
        "resolved" => Some(IncidentStatus::Resolved),
        other => {
            problems.push(format!("status `{other}` is not `open` or `resolved`"));
            None
        }
    };
    let mut time = |s: &str| {
        parse_time(s).unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let since = time(&params.since);
    let until = time(&params.until);
    let severity_min = severity(&params.severity_min, &mut problems);
    let severity_max = severity(&params.severity_max, &mut problems);
    // The search box: plain words find incidents by title or entity (any part, any case); a query
    // with fields is the search language of `cordon search` (docs/search.md), on incidents.
    let (text, query) = match some(&params.q) {
        None => (None, None),
        Some(q) => match crate::search::query::parse(&q, Utc::now()) {
            Ok(expr) if expr.has_fields() => (None, Some(expr)),
            Ok(_) => (Some(q), None),
            Err(e) if q.contains(':') => {
                problems.push(format!("search: column {}: {}", e.column, e.message));
                (None, None)
            }
            Err(_) => (Some(q), None),
        },
    };
    let filter = IncidentFilter {
        status,
        severity_min,
        severity_max,
        source: some(&params.source),
        entity: some(&params.entity),
        since,
        until,
        assignee: some(&params.assignee),
        text,
        query,
        before: some(&params.cursor),
        limit: PAGE + 1,
    };
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    (params, filter, problem)
}

/// The runs waiting for an approval, by incident: the first open approval of each.
async fn pending_by_incident(
    app: &AppState,
    actor: &Actor,
) -> Result<HashMap<String, views::Pending>, crate::store::StoreError> {
    let runs = app
        .store
        .runs(&RunQuery {
            status: Some(crate::model::run::RunStatus::Waiting),
            limit: 1000,
            ..RunQuery::default()
        })
        .await?;
    let mut out = HashMap::new();
    for run in runs {
        let (Some(incident), Some((step, approval))) = (&run.incident_id, run.open_approval())
        else {
            continue;
        };
        out.entry(incident.clone())
            .or_insert_with(|| views::Pending {
                run: run.id.clone(),
                step: step.to_owned(),
                prompt: approval.prompt.clone(),
                may_decide: actor.roles.has(Role::Approver)
                    && app.engine.groups().admits(&approval.group, actor),
            });
    }
    Ok(out)
}

/// Renders one page of the incident list (the benchmark calls it as the handler does).
pub async fn render_list(
    app: &AppState,
    visitor: &Visitor,
    q: &HashMap<String, String>,
) -> Result<Markup, crate::store::StoreError> {
    let (params, filter, problem) = list_filter(q);
    let mut incidents = app.store.incident_page(&filter).await?;
    let next = (incidents.len() > PAGE).then(|| {
        incidents.truncate(PAGE);
        incidents.last().map(|i| i.id.clone()).unwrap_or_default()
    });
    let pending = pending_by_incident(app, &visitor.actor).await?;
    let find = |id: &str| {
        pending.get(id).map(|p| views::Pending {
            run: p.run.clone(),
            step: p.step.clone(),
            prompt: p.prompt.clone(),
            may_decide: p.may_decide,
        })
    };
    Ok(views::incident_list(
        visitor,
        &params,
        &incidents,
        &find,
        next.as_deref(),
        problem.as_deref(),
    ))
}

async fn incident_list(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    let visitor = match admit(&app, &headers, &uri, Role::Viewer, "reading incidents").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = params(&query);
    match render_list(&app, &visitor, &q).await {
        Ok(page) => html(StatusCode::OK, page),
        Err(e) => store_problem(e),
    }
}

/// What a note code on the incident page says (only these: no text from the URL is shown).
fn note_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "approved" => "Your approval was recorded and the approval is granted; the run goes on.",
        "denied" => "Your denial was recorded; the approval is refused.",
        "counted" => "Your decision was recorded; more approvals are needed for the quorum.",
        "resolved" => "The incident is resolved.",
        "reopened" => "The incident is open again.",
        "triggered" => "The playbook was started.",
        "undo" => "The undo was asked for; it waits for its approval.",
        "cancelled" => "The run was cancelled.",
        _ => return None,
    })
}

/// Renders an incident page (the benchmark calls it as the handler does); `None` when there is
/// no such incident.
pub async fn render_incident(
    app: &AppState,
    visitor: &Visitor,
    id: &str,
    note: Option<&str>,
) -> Result<Option<Markup>, crate::store::StoreError> {
    let Some(report) = crate::tickets::report::Report::gather(&*app.store, id).await? else {
        return Ok(None);
    };
    let items = incident::timeline(&report);
    let graph = incident::graph(&report.alerts);
    // Other open incidents that share one of this incident's entities.
    let others = app
        .store
        .incident_page(&IncidentFilter {
            status: Some(IncidentStatus::Open),
            limit: 500,
            ..IncidentFilter::default()
        })
        .await?;
    let mut shared: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut shared_incidents = Vec::new();
    for other in others.iter().filter(|o| o.id != id) {
        let mut hit = false;
        for (node, _) in graph.nodes.iter().filter(|(n, _)| n.column == 1) {
            let named = other
                .entity
                .as_deref()
                .is_some_and(|e| e.contains(node.value.as_str()))
                || other.title.contains(node.value.as_str());
            if named && node.value.len() >= 4 {
                shared
                    .entry(node.value.clone())
                    .or_default()
                    .push(views::short(&other.id).to_owned());
                hit = true;
            }
        }
        if hit {
            shared_incidents.push(other.clone());
        }
    }
    let actor = visitor.actor.clone();
    let groups = app.engine.groups().clone();
    let powers = incident::Powers {
        respond: visitor.actor.roles.has(Role::Responder),
        approver_role: visitor.actor.roles.has(Role::Approver),
        decide: Box::new(move |group| groups.admits(group, &actor)),
    };
    let playbook_ids = playbook_ids(app);
    let view = incident::IncidentView {
        report: &report,
        items: &items,
        graph: &graph,
        shared: &shared,
        shared_incidents: &shared_incidents,
        powers: &powers,
        playbook_ids: &playbook_ids,
        note: note.and_then(note_text),
    };
    Ok(Some(incident::page(visitor, &view)))
}

/// The ids of the loaded playbooks (read from their files, kept for a short while).
fn playbook_ids(app: &AppState) -> Arc<Vec<String>> {
    let mut held = app
        .console
        .playbook_ids
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((at, ids)) = held.as_ref()
        && at.elapsed() < PLAYBOOK_IDS_TTL
    {
        return ids.clone();
    }
    let (loaded, _) = load_playbooks(app);
    let mut ids: Vec<String> = loaded.iter().map(|p| p.spec.id.clone()).collect();
    ids.sort();
    let ids = Arc::new(ids);
    *held = Some((Instant::now(), ids.clone()));
    ids
}

fn load_playbooks(
    app: &AppState,
) -> (
    Vec<crate::playbook::Compiled>,
    Vec<crate::config::Diagnostic>,
) {
    let scripts = crate::app::scripts(&app.config);
    let groups = crate::app::group_names(&app.config);
    crate::playbook::load::load_paths(
        &app.config.playbooks.paths,
        &scripts,
        &*app.actions.catalog(),
        Some(&groups),
    )
}

async fn incident_page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let visitor = match admit(&app, &headers, &uri, Role::Viewer, "reading incidents").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = params(&query);
    match render_incident(&app, &visitor, &id, q.get("note").map(String::as_str)).await {
        Ok(Some(page)) => html(StatusCode::OK, page),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No incident `{id}`."),
            Some(&visitor),
        ),
        Err(e) => store_problem(e),
    }
}

async fn incident_report(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let visitor = match admit(
        &app,
        &headers,
        &uri,
        Role::Viewer,
        "reading incident reports",
    )
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = params(&query);
    let format_name = q.get("format").map(String::as_str).unwrap_or("html");
    let Some(format) = crate::tickets::report::Format::parse(format_name) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "format is `markdown` or `html`",
            Some(&visitor),
        );
    };
    let report = match crate::tickets::report::Report::gather(&*app.store, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("No incident `{id}`."),
                Some(&visitor),
            );
        }
        Err(e) => return store_problem(e),
    };
    let content_type = match format {
        crate::tickets::report::Format::Markdown => "text/markdown; charset=utf-8",
        crate::tickets::report::Format::Html => "text/html; charset=utf-8",
    };
    let mut response = hardened(
        (
            [(header::CONTENT_TYPE, content_type)],
            crate::tickets::report::render(&report, format),
        )
            .into_response(),
    );
    // The report's HTML carries its own styles.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
        ),
    );
    response
}

/// Where to go after an action: the form's `back` (a path here), else the run's incident or run.
async fn back_to(
    app: &AppState,
    form: &HashMap<String, String>,
    run: Option<&str>,
    note: &str,
) -> String {
    if let Some(back) = form.get("back") {
        let back = signin::local_path(Some(back));
        if back != "/" {
            return back;
        }
    }
    if let Some(run_id) = run
        && let Ok(Some(run)) = app.store.run(run_id).await
    {
        return match run.incident_id {
            Some(i) => format!("/incidents/{i}?note={note}"),
            None => format!("/runs/{run_id}?note={note}"),
        };
    }
    "/incidents".to_owned()
}

fn engine_problem(e: crate::engine::EngineError, visitor: &Visitor) -> Response {
    use crate::engine::EngineError;
    let status = match &e {
        EngineError::NoRun(_) | EngineError::NoPlaybook(_) | EngineError::NoIncident(_) => {
            StatusCode::NOT_FOUND
        }
        EngineError::Decision(d) => match d.code() {
            "not_found" => StatusCode::NOT_FOUND,
            "forbidden" => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        },
        EngineError::Conflict(_) => StatusCode::CONFLICT,
        EngineError::Store(_) => {
            tracing::error!(error = %e, "console action failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The store did not answer; try again shortly.",
                Some(visitor),
            );
        }
    };
    problem(status, "Not done", &e.to_string(), Some(visitor))
}

async fn incident_status(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, change)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (visitor, _) = match posted(&app, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let status = match change.as_str() {
        "resolve" => IncidentStatus::Resolved,
        "reopen" => IncidentStatus::Open,
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "An incident can be resolved or reopened.",
                Some(&visitor),
            );
        }
    };
    if let Err(r) = require(
        &app,
        &visitor,
        Role::Responder,
        "resolving and reopening incidents",
    )
    .await
    {
        return r;
    }
    let actor = &visitor.actor;
    match app
        .engine
        .set_incident_status(&id, status, &actor.identity, Some(&actor.person), "console")
        .await
    {
        Ok(_) => see_other(&format!(
            "/incidents/{id}?note={}",
            if status == IncidentStatus::Resolved {
                "resolved"
            } else {
                "reopened"
            }
        )),
        Err(e) => engine_problem(e, &visitor),
    }
}

async fn decide(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (visitor, form) =
        match posted_as(&app, &headers, &body, Role::Approver, "deciding approvals").await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let approve = match form.get("decision").map(String::as_str) {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "decision must be `approve` or `deny`",
                Some(&visitor),
            );
        }
    };
    match app
        .engine
        .decide(&id, &step, &visitor.actor, approve, "console")
        .await
    {
        Ok(decided) => {
            let note = match decided.outcome {
                Some(true) => "approved",
                Some(false) => "denied",
                None => "counted",
            };
            let back = back_to(&app, &form, Some(&id), note).await;
            see_other(&back)
        }
        Err(e) => engine_problem(e, &visitor),
    }
}

async fn undo(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (visitor, form) =
        match posted_as(&app, &headers, &body, Role::Responder, "undoing steps").await {
            Ok(v) => v,
            Err(r) => return r,
        };
    match app.engine.undo(&id, &step, &visitor.actor).await {
        Ok((undo_run, _, _)) => {
            let back = back_to(&app, &form, Some(&undo_run), "undo").await;
            see_other(&back)
        }
        Err(e) => engine_problem(e, &visitor),
    }
}

async fn cancel(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (visitor, form) =
        match posted_as(&app, &headers, &body, Role::Responder, "cancelling runs").await {
            Ok(v) => v,
            Err(r) => return r,
        };
    match app.engine.cancel(&id, &visitor.actor).await {
        Ok(_) => {
            let back = back_to(&app, &form, Some(&id), "cancelled").await;
            see_other(&back)
        }
        Err(e) => engine_problem(e, &visitor),
    }
}

async fn trigger(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (visitor, form) =
        match posted_as(&app, &headers, &body, Role::Responder, "starting playbooks").await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let Some(playbook) = form.get("playbook").filter(|p| !p.is_empty()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "Choose a playbook.",
            Some(&visitor),
        );
    };
    let incident = form.get("incident").filter(|i| !i.is_empty()).cloned();
    match app
        .engine
        .trigger(
            playbook,
            serde_json::json!({}),
            &visitor.actor,
            incident.clone(),
            false,
        )
        .await
    {
        Ok((run, _)) => see_other(&match incident {
            Some(i) => format!("/incidents/{i}?note=triggered"),
            None => format!("/runs/{run}"),
        }),
        Err(e) => engine_problem(e, &visitor),
    }
}

// --- Runs, playbooks, audit ---------------------------------------------------------------------

async fn run_list(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    let visitor = match admit(&app, &headers, &uri, Role::Viewer, "reading runs").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = params(&query);
    let status_text = q.get("status").cloned().unwrap_or_default();
    let status = match status_text.as_str() {
        "" => None,
        s => match serde_json::from_value::<crate::model::run::RunStatus>(serde_json::json!(s)) {
            Ok(st) => Some(st),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    &format!(
                        "`{s}` is not a run status (queued, running, waiting, needs_decision, succeeded, failed, cancelled)"
                    ),
                    Some(&visitor),
                );
            }
        },
    };
    let playbook = q.get("playbook").cloned().unwrap_or_default();
    let query = RunQuery {
        status,
        playbook: (!playbook.is_empty()).then(|| playbook.clone()),
        incident_id: None,
        limit: 200,
    };
    match app.store.runs(&query).await {
        Ok(runs) => html(
            StatusCode::OK,
            views::run_list(&visitor, &runs, &status_text, &playbook),
        ),
        Err(e) => store_problem(e),
    }
}

async fn run_page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let visitor = match admit(&app, &headers, &uri, Role::Viewer, "reading runs").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let run = match app.store.run(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("No run `{id}`."),
                Some(&visitor),
            );
        }
        Err(e) => return store_problem(e),
    };
    let audit = match app.store.audit_entries(Some(&id), 0).await {
        Ok(a) => a,
        Err(e) => return store_problem(e),
    };
    let actor = visitor.actor.clone();
    let groups = app.engine.groups().clone();
    let powers = incident::Powers {
        respond: visitor.actor.roles.has(Role::Responder),
        approver_role: visitor.actor.roles.has(Role::Approver),
        decide: Box::new(move |group| groups.admits(group, &actor)),
    };
    let approvals = incident::approvals(&visitor, &[&run], &powers);
    html(
        StatusCode::OK,
        views::run_page(&visitor, &run, &audit, approvals, powers.respond),
    )
}

async fn playbooks(State(app): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let visitor = match admit(&app, &headers, &uri, Role::Viewer, "reading playbooks").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (loaded, diagnostics) = load_playbooks(&app);
    let catalog = app.actions.catalog();
    let results =
        crate::engine::testing::run_tests(&loaded, crate::app::scripts(&app.config), &catalog)
            .await;
    let mut rows = Vec::new();
    for p in &loaded {
        let last_runs = match app
            .store
            .runs(&RunQuery {
                playbook: Some(p.spec.id.clone()),
                limit: 5,
                ..RunQuery::default()
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return store_problem(e),
        };
        rows.push(views::PlaybookRow {
            id: p.spec.id.clone(),
            name: p.spec.name.clone(),
            file: p.file.display().to_string(),
            trigger: serde_json::to_string(&p.spec.on).unwrap_or_default(),
            problems: Vec::new(),
            tests: results
                .iter()
                .filter(|r| r.playbook == p.spec.id)
                .map(|r| (r.case.clone(), r.differences.clone()))
                .collect(),
            last_runs,
        });
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let errors: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    html(StatusCode::OK, views::playbooks(&visitor, &rows, &errors))
}

async fn audit(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    let visitor = match admit(&app, &headers, &uri, Role::Viewer, "reading the audit log").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = params(&query);
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (incident_id, person, since_text, until_text) =
        (get("incident"), get("person"), get("since"), get("until"));
    let (since, until) = match (parse_time(&since_text), parse_time(&until_text)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            return problem(StatusCode::BAD_REQUEST, "Bad request", &e, Some(&visitor));
        }
    };
    let entries = match app.store.audit_entries(None, 0).await {
        Ok(e) => e,
        Err(e) => return store_problem(e),
    };
    // An incident's entries: its own and its runs'.
    let runs: std::collections::HashSet<String> = if incident_id.is_empty() {
        Default::default()
    } else {
        match app
            .store
            .runs(&RunQuery {
                incident_id: Some(incident_id.clone()),
                limit: 100_000,
                ..RunQuery::default()
            })
            .await
        {
            Ok(r) => r.into_iter().map(|r| r.id).collect(),
            Err(e) => return store_problem(e),
        }
    };
    let matching: Vec<crate::model::audit::AuditEntry> = entries
        .into_iter()
        .rev()
        .filter(|e| {
            (incident_id.is_empty()
                || e.run_id.as_ref().is_some_and(|r| runs.contains(r))
                || e.detail["incident"] == incident_id.as_str())
                && (person.is_empty()
                    || e.actor.as_deref() == Some(person.as_str())
                    || e.detail["person"] == person.as_str())
                && since.is_none_or(|t| e.at >= t)
                && until.is_none_or(|t| e.at <= t)
        })
        .collect();
    let total = matching.len();
    let shown: Vec<_> = matching.into_iter().take(500).collect();
    let verified = match app.store.audit_verify().await {
        Ok(r) => r.summary(),
        Err(e) => return store_problem(e),
    };
    let checkpoint = app
        .store
        .meta_get("audit.checkpoint", "last_seq")
        .await
        .ok()
        .flatten()
        .and_then(|v| v.as_u64());
    let view = views::AuditView {
        entries: &shown,
        verified: &verified,
        checkpoint,
        incident: &incident_id,
        person: &person,
        since: &since_text,
        until: &until_text,
        total,
    };
    html(StatusCode::OK, views::audit(&visitor, &view))
}

// --- Live ---------------------------------------------------------------------------------------

async fn events(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = admit(&app, &headers, &uri, Role::Viewer, "reading incidents").await {
        return r;
    }
    let q = params(&query);
    let incident = q.get("incident").cloned();
    let run = q.get("run").cloned();
    let mut response = app
        .console
        .live
        .stream(move |change| match (&incident, &run) {
            (Some(i), _) => &change.incident == i,
            (None, Some(r)) => change.run.as_deref() == Some(r.as_str()),
            (None, None) => true,
        });
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
