//! Lenient JSON helpers shared by the normalizers.
