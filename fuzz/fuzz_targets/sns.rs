//! The SNS envelope: parse, string to sign, the offline signature checks, and the wrapped payload
//! through the AWS source the first byte picks (GuardDuty, Security Hub, CloudTrail).
#![no_main]

use cordon::intake::formats::SourceKind;
use libfuzzer_sys::fuzz_target;

const AWS: [SourceKind; 3] = [
    SourceKind::AwsGuardDuty,
    SourceKind::AwsSecurityHub,
    SourceKind::AwsCloudTrail,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let _ = cordon::fuzzing::sns(AWS[usize::from(pick) % AWS.len()], body);
});
