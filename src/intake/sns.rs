//! AWS SNS HTTPS delivery: envelope parsing, signature verification, subscription confirmation.
