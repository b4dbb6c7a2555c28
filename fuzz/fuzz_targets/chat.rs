//! Chat callbacks once authenticated: the first byte picks Slack interaction, Slack slash command,
//! Teams activity or Discord interaction; the rest is the request body.
#![no_main]

use cordon::fuzzing::Chat;
use libfuzzer_sys::fuzz_target;

const PLATFORMS: [Chat; 4] = [
    Chat::SlackInteraction,
    Chat::SlackCommand,
    Chat::Teams,
    Chat::Discord,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let _ = cordon::fuzzing::chat(PLATFORMS[usize::from(pick) % PLATFORMS.len()], body);
});
