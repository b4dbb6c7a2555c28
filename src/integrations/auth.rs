//! Auth providers applied by the host to integration requests.
