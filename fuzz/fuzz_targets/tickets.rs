//! Ticket webhooks: the first byte picks a Jira or ServiceNow body (with the `/cordon` command in
//! a comment or note), or the webhook credential check with the token or the HMAC scheme, whose
//! input is `query \n header-name \n header-value \n body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => drop(cordon::fuzzing::ticket(true, rest)),
        1 => drop(cordon::fuzzing::ticket(false, rest)),
        hmac => {
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.splitn(4, '\n');
            let mut next = || parts.next().unwrap_or_default();
            let (query, name, value, body) = (next(), next(), next(), next());
            let _ = cordon::fuzzing::ticket_auth(hmac == 3, query, (name, value), body.as_bytes());
        }
    }
});
